#!/usr/bin/python3
"""Writes include/blip2/io/unicode_tables.hpp: the Unicode facts the BERT tokenizer and LAVIS's caption
pre-processing need, taken from this Python's unicodedata and str methods, which are exactly what Hugging
Face's (slow) BertTokenizer and LAVIS's pre_caption consult; and the three character classes of GPT-2's
pre-tokenization pattern (blip2/io/byte_bpe_tokenizer.hpp).

Run with Debian's Python (its unicodedata is the one the reference tokenizer used when we checked it):
    /usr/bin/python3 tools/gen_unicode_tables.py            # rewrites the header
    /usr/bin/python3 tools/gen_unicode_tables.py --check    # exits 1 when the committed header differs
    python3 tools/gen_unicode_tables.py --check-regex       # with a Python that has the `regex` module:
                                                            # compares the GPT-2 classes with it, every code point

Tables (all sorted, binary-searched by the C++ side):
  flags    range breakpoints, (first << 8) | bits: the bits hold for every code point from `first` up to
           the next entry's first. Bits:
             CONTROL     Hugging Face's _clean_text drops it: U+0000, U+FFFD, or category C* except \\t \\n \\r
             HF_SPACE    Hugging Face's _is_whitespace: ' ', \\t, \\n, \\r or category Zs
             PY_SPACE    str.isspace(): what str.split() and re's \\s split on
             PUNCT       Hugging Face's _is_punctuation: ASCII 33-47, 58-64, 91-96, 123-126, or category P*
             MN          category Mn (dropped after NFD when accents are stripped)
             CASED       str.lower()'s Final_Sigma context: a cased letter (only meaningful when not
                         CASE_IGNORABLE: both loops of CPython's handle_capital_sigma skip those first)
             CASE_IGNORABLE  skipped by that context test
  ccc      range breakpoints, (first << 8) | canonical combining class (for NFD's canonical ordering)
  lower    runs {first, count, stride, delta}: chr(c).lower() == chr(c + delta) for c = first + k*stride
  lower_multi  the code points whose lower() is several code points (U+0130 -> i + U+0307)
  nfd      {cp, offset, length} into nfd_pool: unicodedata.normalize('NFD', chr(cp)) for every cp with
           chr(cp).lower() == chr(cp) (the tokenizer lower-cases first, so only those reach NFD), Hangul
           syllables excepted (decomposed arithmetically in C++)
  bpe      range breakpoints, (first << 8) | class, for GPT-2's pattern
           's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+ as the `regex` module
           (not `re`) reads it: 1 = \\s (Unicode White_Space: 25 code points; NOT U+001C..U+001F, which
           str.isspace() and `re` count), 2 = \\p{L} (category L*), 3 = \\p{N} (category N*), 0 = anything else.
           `regex` carries its own, newer Unicode data: --check-regex shows that it differs from these tables
           only on code points unassigned in this unicodedata's version.
  bpe_checksum  FNV-1a over the class of every code point (tests/test_byte_bpe_tokenizer.cpp recomputes it).
  checksum FNV-1a over every code point of (flags, ccc, lower(), NFD(lower())) as Python computes them;
           tests/test_bert_tokenizer.cpp recomputes it through the C++ lookups.
"""
import os
import sys
import unicodedata

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "include", "blip2", "io", "unicode_tables.hpp")
MAXCP = 0x110000
SURROGATES = range(0xD800, 0xE000)

CONTROL, HF_SPACE, PY_SPACE, PUNCT, MN, CASED, CASE_IGNORABLE = (1 << k for k in range(7))
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3
BPE_OTHER, BPE_SPACE, BPE_LETTER, BPE_NUMBER = 0, 1, 2, 3

# Unicode's White_Space property (PropList.txt; unchanged since Unicode 6.3), which `regex` uses for \s.
WHITE_SPACE = [*range(0x9, 0xE), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F,
               0x3000]


def hf_is_control(ch):  # transformers' _is_control, plus the two code points _clean_text drops by value
    if ch in "\t\n\r":
        return False
    return ord(ch) in (0, 0xFFFD) or unicodedata.category(ch).startswith("C")


def hf_is_whitespace(ch):  # transformers' _is_whitespace
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def hf_is_punctuation(ch):  # transformers' _is_punctuation
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def case_bits(ch):
    """Final_Sigma's two properties, probed through str.lower() itself (unicodedata has neither).

    CPython lower-cases U+03A3 to U+03C2 when \\p{cased} \\p{case-ignorable}* precede it and
    \\p{case-ignorable}* \\p{cased} does not follow; both scans skip case-ignorable code points first, so
    whether an ignorable code point is also cased never matters."""
    final = "\u03c2"
    before = (ch + "\u03a3").lower()[-1] == final  # == not ignorable and cased
    between = ("A" + ch + "\u03a3").lower()[-1] == final  # == ignorable or cased
    after = ("A\u03a3" + ch).lower()[1] == final  # == ignorable or not cased
    if before:
        assert between and not after
        return CASED
    if between:
        assert after
        return CASE_IGNORABLE
    assert after
    return 0


def flags_of(cp):
    ch = chr(cp)
    f = 0
    if hf_is_control(ch):
        f |= CONTROL
    if hf_is_whitespace(ch):
        f |= HF_SPACE
    if ch.isspace():
        f |= PY_SPACE
    if hf_is_punctuation(ch):
        f |= PUNCT
    if unicodedata.category(ch) == "Mn":
        f |= MN
    f |= case_bits(ch)
    return f


def bpe_class(cp):
    """The class of cp in GPT-2's pattern: \\s, \\p{L}, \\p{N} or other (unicodedata has no White_Space, so it
    is derived from str.isspace(), which adds U+001C..U+001F, and checked against the PropList literal)."""
    ch = chr(cp)
    if ch.isspace() and not 0x1C <= cp <= 0x1F:
        return BPE_SPACE
    cat = unicodedata.category(ch)
    if cat.startswith("L"):
        return BPE_LETTER
    if cat.startswith("N"):
        return BPE_NUMBER
    return BPE_OTHER


def bpe_classes():
    classes = [BPE_OTHER if cp in SURROGATES else bpe_class(cp) for cp in range(MAXCP)]
    assert [cp for cp in range(MAXCP) if classes[cp] == BPE_SPACE] == WHITE_SPACE
    h = 0xCBF29CE484222325
    for cp in range(MAXCP):
        if cp not in SURROGATES:
            h = fnv(h, classes[cp])
    return classes, h


def check_regex():
    """Compares the classes with the `regex` module's \\s, \\p{L}, \\p{N} on every code point."""
    import regex  # pylint: disable=import-outside-toplevel
    classes, _ = bpe_classes()
    probes = {BPE_SPACE: regex.compile(r"\s"), BPE_LETTER: regex.compile(r"\p{L}"), BPE_NUMBER: regex.compile(r"\p{N}")}
    differ, unassigned = [], 0
    for cp in range(MAXCP):
        if cp in SURROGATES:
            continue
        got = [k for k, p in probes.items() if p.match(chr(cp))]
        theirs = got[0] if got else BPE_OTHER
        assert len(got) <= 1, hex(cp)
        if theirs != classes[cp]:
            if unicodedata.category(chr(cp)) == "Cn":
                unassigned += 1
            else:
                differ.append(cp)
    print(f"regex {regex.__version__} vs unicodedata {unicodedata.unidata_version}: {unassigned} code points differ, all"
          f" unassigned in {unicodedata.unidata_version}; {len(differ)} assigned ones differ {[hex(c) for c in differ[:20]]}")
    sys.exit(1 if differ else 0)


def breakpoints(values):
    out = []
    prev = None
    for cp, v in enumerate(values):
        if v != prev:
            out.append((cp, v))
            prev = v
    return out


def lower_runs(single):
    """single: sorted list of (cp, lower_cp). Greedy runs of equal delta and equal stride (1 or 2)."""
    runs = []
    i = 0
    while i < len(single):
        cp, lo = single[i]
        delta = lo - cp
        best = (1, 1)
        for stride in (1, 2):
            n = 1
            while i + n < len(single) and single[i + n][0] == cp + n * stride and single[i + n][1] - single[i + n][0] == delta:
                n += 1
            if n > best[0]:
                best = (n, stride)
        runs.append((cp, best[0], best[1], delta))
        i += best[0]
    return runs


def fnv(h, v):
    for k in range(4):
        h ^= (v >> (8 * k)) & 0xFF
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def generate():
    flags = [0] * MAXCP
    ccc = [0] * MAXCP
    for cp in range(MAXCP):
        if cp in SURROGATES:
            flags[cp] = CONTROL  # category Cs; never produced by the UTF-8 decoder anyway
            continue
        flags[cp] = flags_of(cp)
        ccc[cp] = unicodedata.combining(chr(cp))

    single, multi, nfd = [], [], []
    for cp in range(MAXCP):
        if cp in SURROGATES:
            continue
        ch = chr(cp)
        lo = ch.lower()
        assert lo.lower() == lo, "lower() must be idempotent per code point (HF lower-cases twice)"
        if len(lo) > 1:
            multi.append((cp, [ord(c) for c in lo]))
        elif lo != ch:
            single.append((cp, ord(lo)))
        if lo == ch and not (HANGUL_FIRST <= cp <= HANGUL_LAST):
            d = unicodedata.normalize("NFD", ch)
            if d != ch:
                nfd.append((cp, [ord(c) for c in d]))
    # every code point a lower() produces is its own lower(), so the NFD table covers all of them
    for _, seq in multi:
        assert all(chr(c).lower() == chr(c) for c in seq)

    pool, nfd_entries = [], []
    for cp, seq in nfd:
        assert len(seq) <= 7
        nfd_entries.append((cp, len(pool), len(seq)))
        pool.extend(seq)
    assert len(pool) < 65536

    # checksum over every code point (surrogates excepted) of what the C++ lookups must reproduce
    h = 0xCBF29CE484222325
    for cp in range(MAXCP):
        if cp in SURROGATES:
            continue
        ch = chr(cp)
        lo = ch.lower()
        h = fnv(h, flags[cp])
        h = fnv(h, ccc[cp])
        h = fnv(h, len(lo))
        for c in lo:
            h = fnv(h, ord(c))
        d = unicodedata.normalize("NFD", lo)
        h = fnv(h, len(d))
        for c in d:
            h = fnv(h, ord(c))

    return breakpoints(flags), breakpoints(ccc), lower_runs(single), multi, nfd_entries, pool, h


def wrap(items, per_line):
    lines = []
    for k in range(0, len(items), per_line):
        lines.append("    " + ", ".join(items[k:k + per_line]) + ",")
    return "\n".join(lines)


def render():
    flag_bp, ccc_bp, runs, multi, nfd_entries, pool, checksum = generate()
    classes, bpe_checksum = bpe_classes()
    bpe_bp = breakpoints(classes)
    py = sys.version.split()[0]
    out = []
    out.append(f"""// blip2/io/unicode_tables.hpp: GENERATED by tools/gen_unicode_tables.py from Python {py}'s unicodedata
// (Unicode {unicodedata.unidata_version}); do not edit. Regenerate: /usr/bin/python3 tools/gen_unicode_tables.py
//
// The Unicode facts of Hugging Face's BertTokenizer (clean text, whitespace, punctuation, lower-casing,
// NFD, Mn) and of LAVIS's pre_caption (str.lower() with Final_Sigma, re's \\s), read through the lookups in
// blip2/io/bert_tokenizer.hpp; and the classes of GPT-2's pre-tokenization pattern (\\s as the `regex` module
// reads it, \\p{{L}}, \\p{{N}}), read by blip2/io/byte_bpe_tokenizer.hpp. The layout of each table is described in
// the generator.
#pragma once
#include <cstdint>

namespace blip2::io::unicode {{

inline constexpr char const* unicode_version = "{unicodedata.unidata_version}";

// flag bits
inline constexpr std::uint8_t flag_control = {CONTROL};         // dropped by the cleaner (C*, U+0000, U+FFFD; not \\t \\n \\r)
inline constexpr std::uint8_t flag_hf_space = {HF_SPACE};        // ' ', \\t, \\n, \\r, Zs
inline constexpr std::uint8_t flag_py_space = {PY_SPACE};        // str.isspace()
inline constexpr std::uint8_t flag_punct = {PUNCT};           // ASCII punctuation ranges or P*
inline constexpr std::uint8_t flag_mn = {MN};             // category Mn
inline constexpr std::uint8_t flag_cased = {CASED};          // cased (Final_Sigma), meaningful when not ignorable
inline constexpr std::uint8_t flag_case_ignorable = {CASE_IGNORABLE};  // case-ignorable (Final_Sigma)

// (first << 8) | flags, sorted by first; entry k holds up to entry k+1's first
inline constexpr std::uint32_t flag_ranges[] = {{
{wrap([f"0x{(cp << 8) | v:x}" for cp, v in flag_bp], 10)}
}};

// (first << 8) | canonical combining class
inline constexpr std::uint32_t ccc_ranges[] = {{
{wrap([f"0x{(cp << 8) | v:x}" for cp, v in ccc_bp], 10)}
}};

// lower(c) = c + delta for c = first, first + stride, ... (count of them)
struct lower_run {{
  char32_t first;
  std::uint16_t count;
  std::uint8_t stride;
  std::int32_t delta;
}};
inline constexpr lower_run lower_runs[] = {{
{wrap([f"{{0x{a:x},{b},{c},{d}}}" for a, b, c, d in runs], 6)}
}};

// code points whose lower() is several code points
struct lower_multi_entry {{
  char32_t cp;
  std::uint8_t length;
  char32_t out[3];
}};
inline constexpr lower_multi_entry lower_multi[] = {{
{wrap([f"{{0x{cp:x},{len(seq)},{{{','.join(f'0x{c:x}' for c in seq)}}}}}" for cp, seq in multi], 4)}
}};

// full canonical decomposition of cp: nfd_pool[offset .. offset + length)
struct nfd_entry {{
  char32_t cp;
  std::uint16_t offset;
  std::uint8_t length;
}};
inline constexpr nfd_entry nfd_entries[] = {{
{wrap([f"{{0x{cp:x},{o},{n}}}" for cp, o, n in nfd_entries], 8)}
}};
inline constexpr char32_t nfd_pool[] = {{
{wrap([f"0x{c:x}" for c in pool], 12)}
}};

// GPT-2's pattern: (first << 8) | class (bpe_space: regex's \\s = White_Space; bpe_letter: \\p{{L}};
// bpe_number: \\p{{N}}; bpe_other: the rest), sorted by first
inline constexpr std::uint8_t bpe_other = {BPE_OTHER}, bpe_space = {BPE_SPACE}, bpe_letter = {BPE_LETTER}, bpe_number = {BPE_NUMBER};
inline constexpr std::uint32_t bpe_class_ranges[] = {{
{wrap([f"0x{(cp << 8) | v:x}" for cp, v in bpe_bp], 10)}
}};
// FNV-1a (as below) of the class of every code point but the surrogates
inline constexpr std::uint64_t bpe_class_checksum = 0x{bpe_checksum:016x}ULL;

// FNV-1a (64-bit, over little-endian u32 words) of, for every code point but the surrogates:
// flags, ccc, len(lower), lower..., len(NFD(lower)), NFD(lower)...
inline constexpr std::uint64_t table_checksum = 0x{checksum:016x}ULL;

}}  // namespace blip2::io::unicode
""")
    return "".join(out)


def main():
    if "--check-regex" in sys.argv:
        check_regex()
    text = render()
    if "--check" in sys.argv:
        with open(OUT, encoding="utf-8") as f:
            same = f.read() == text
        print("unicode_tables.hpp is", "up to date" if same else "OUT OF DATE")
        sys.exit(0 if same else 1)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()

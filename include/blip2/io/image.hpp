// blip2/io/image.hpp: decode PNG and JPEG files and apply BLIP-2's evaluation transform (needs stb_image).
//
// The pipeline LAVIS (and Hugging Face's Blip2Processor) runs on an image file, reproduced here:
//   Image.open(f).convert("RGB")                        -> load_image / decode_image
//   Resize((S, S), BICUBIC) on the PIL image (Pillow)   -> resize_bicubic        (within one 8-bit level)
//   ToTensor() (/255) and Normalize(CLIP mean, std)     -> blip2_eval_transform  (3, S, S) CHW float
//
// Decoding. Only PNG and JPEG are accepted, told apart by their magic bytes (PNG: 89 50 4E 47 0D 0A 1A 0A;
// JPEG: FF D8 FF); anything else, an empty file included, is refused before stb sees it, so none of stb's
// other decoders (GIF, BMP, PSD, TGA, HDR, PIC, PNM) can be reached through this header. Then, in order:
//   1. the size the header claims (PNG IHDR, JPEG SOFn, read directly) is checked against image_limits:
//      width, height and width x height (the pixel budget), before anything is allocated;
//   2. the file's structure is walked without allocating (PNG chunks up to IEND; JPEG segments and
//      entropy-coded scans up to the EOI marker). A file cut short is refused with the offset where it
//      ends ("truncated JPEG: the file ends at byte 1186 without the end-of-image marker (FF D9)") where
//      stb would say only "expected marker" or "outofdata"; Pillow refuses such files too ("image file is
//      truncated"), except a PNG that lacks only IEND, which Pillow decodes and we refuse (so does stb,
//      unless half of IEND is there). Two kinds of corrupt JPEG on which Debian's stb 2.27 misbehaves
//      (found by fuzzing, see tests/fuzz/fuzz_image.cpp) are refused here: a Huffman table with more than
//      256 codes (stb writes past its arrays) and a scan that uses a Huffman or quantisation table no
//      segment defined (stb reads its uninitialised state);
//   2b. stbi_info_from_memory reads the header (validating it); its size is checked against the limits
//      again;
//   3. stbi_load_from_memory decodes to 3 channels: grey is replicated, alpha dropped, a palette expanded,
//      16-bit samples reduced to their high byte, as Pillow's convert("RGB") does for those modes.
// Every failure throws blip2::format_error naming the file (or the name given to decode_image) and what
// was wrong, with stbi_failure_reason() when stb refused the file. Nothing here calls exit() or aborts.
//
// Where stb and Pillow differ (documented, not hidden):
//   - JPEG: stb's IDCT, chroma upsampling and YCbCr conversion are not libjpeg-turbo's: decoded pixels
//     differ by a few levels (tests/test_images.cpp measures and bounds it). PNG decodes are identical.
//   - 16-bit greyscale PNG: Pillow opens it as mode "I" and convert("RGB") CLIPS each sample to 255 (so
//     most of the image turns white); stb would keep the high byte. We follow Pillow, since that is what
//     LAVIS's pipeline feeds the model (decode with stbi_load_16, clip, replicate).
//   - A PNG without its IEND chunk is refused (Pillow decodes it).
//   - CMYK / Adobe JPEGs: stb and Pillow convert CMYK to RGB with different formulas; not matched.
//   - EXIF orientation is ignored by both (LAVIS does not apply ImageOps.exif_transpose).
//   - stb's bit reader shifts a 32-bit value by 32 on some corrupt entropy-coded JPEG data (undefined in
//     C; on x86-64 it yields wrong bits, no memory access): such a file decodes to garbage pixels instead
//     of an error. It cannot be ruled out without decoding; found by fuzzing stb under UBSan.
//   - stb's global switches (stbi_set_flip_vertically_on_load and friends) are left alone: a program that
//     turns them on for its own use changes what this header decodes.
//
// Resizing follows Pillow 9.4's Image.resize(size, Image.BICUBIC) (libImaging/Resample.c, reducing_gap
// None) for an RGB image: the Keys cubic with a = -0.5; when downscaling, the kernel's support (2) and its
// argument are stretched by the scale factor in/out, so it averages over the whole footprint; each output
// sample at centre (i + 0.5) * in/out uses the input samples whose centres lie within the support;
// weights are normalised to sum 1 in double, then rounded to 22-bit fixed point (32 - 8 bits of output
// - 2 bits of headroom for the lobes); a pass adds 1/2 (for rounding), shifts right by 22 and clips to
// [0, 255]. The horizontal pass runs first, over only the rows the vertical pass will read, and leaves
// 8-bit values; a pass whose size does not change is skipped; an unchanged size returns a copy.
//
//   auto img = blip2::io::load_image("cat.jpg");                      // rgb_image, HWC
//   auto x = blip2::io::blip2_eval_transform(img, 224);               // host_tensor<float, 3>, (3, 224, 224)
#pragma once
#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <stb/stb_image.h>  // the prebuilt libstb (link PkgConfig::STB); STB_IMAGE_IMPLEMENTATION is never defined here

#include "blip2/core/errors.hpp"
#include "blip2/core/host_tensor.hpp"

namespace blip2::io {

// What decode_image accepts before it decodes: each checked on the header's dimensions, so a file that
// claims 100000 x 100000 is refused without allocating its pixels. The defaults allow any real photo
// (64 MP; decoded RGB at most 192 MB) and refuse decompression bombs.
struct image_limits {
  int max_width = 16384, max_height = 16384;
  std::int64_t max_pixels = 64'000'000;
};

// An 8-bit RGB image: pixels[(y * width + x) * 3 + c], c = 0 red, 1 green, 2 blue (HWC, row-major).
struct rgb_image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> pixels;  // HWC RGB, row-major
};

// BLIP-2's (CLIP's) normalisation constants, per channel R, G, B.
inline constexpr std::array<float, 3> clip_mean{0.48145466f, 0.4578275f, 0.40821073f};
inline constexpr std::array<float, 3> clip_std{0.26862954f, 0.26130258f, 0.27577711f};

namespace detail {

template <class... Parts>
[[noreturn]] void image_fail(std::string_view name, Parts&&... parts) {
  blip2::detail::raise<format_error>("image '", name, "': ", std::forward<Parts>(parts)...);
}

inline constexpr std::uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};

enum class image_kind { png, jpeg };

inline bool starts_with(std::span<const std::uint8_t> b, std::string_view prefix) {
  return b.size() >= prefix.size() && std::memcmp(b.data(), prefix.data(), prefix.size()) == 0;
}

// What the first bytes look like, for the message refusing a file that is not PNG or JPEG.
inline std::string sniff_other_format(std::span<const std::uint8_t> b) {
  if (starts_with(b, "GIF87a") || starts_with(b, "GIF89a")) return "it looks like a GIF";
  if (starts_with(b, "BM")) return "it looks like a BMP";
  if (b.size() >= 12 && starts_with(b, "RIFF") && std::memcmp(b.data() + 8, "WEBP", 4) == 0)
    return "it looks like a WebP";
  if (starts_with(b, std::string_view("II*\0", 4)) || starts_with(b, std::string_view("MM\0*", 4)))
    return "it looks like a TIFF";
  if (starts_with(b, "8BPS")) return "it looks like a Photoshop file";
  if (b.size() >= 12 && std::memcmp(b.data() + 4, "ftyp", 4) == 0) return "it looks like a HEIF/AVIF or MP4";
  std::string hex = "its first bytes are";
  char buf[4];
  for (std::size_t i = 0; i < std::min<std::size_t>(b.size(), 8); ++i) {
    std::snprintf(buf, sizeof buf, " %02X", b[i]);
    hex += buf;
  }
  return hex;
}

inline image_kind check_magic(std::span<const std::uint8_t> b, std::string_view name) {
  if (b.empty()) image_fail(name, "the file is empty (0 bytes); only PNG and JPEG images are accepted");
  if (b.size() >= 8 && std::memcmp(b.data(), png_magic, 8) == 0) return image_kind::png;
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return image_kind::jpeg;
  image_fail(name, "not a PNG or JPEG image (", sniff_other_format(b),
             "); only PNG and JPEG are accepted, by their magic bytes");
}

inline std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Walks a PNG's chunks (length, type, data, CRC) from the signature to IEND without reading the data.
// Refuses a file that ends inside a chunk or before IEND. A chunk length over 2^31 - 1 (invalid) stops
// the walk: stb refuses that file itself. CRCs are not checked (stb ignores them).
inline void check_png_structure(std::span<const std::uint8_t> b, std::string_view name) {
  std::size_t pos = 8;
  while (true) {
    if (pos == b.size())
      image_fail(name, "truncated PNG: the file ends at byte ", pos, " without the IEND chunk");
    if (b.size() - pos < 8)
      image_fail(name, "truncated PNG: a chunk header at byte ", pos, " needs 8 bytes, only ", b.size() - pos,
                 " remain");
    const std::uint32_t len = be32(b.data() + pos);
    if (len > 0x7FFFFFFFu) return;  // not a valid chunk length: stb reports it
    const std::string type(reinterpret_cast<const char*>(b.data() + pos + 4), 4);
    const std::uint64_t need = std::uint64_t{12} + len;  // length, type, data, CRC
    if (b.size() - pos < need)
      image_fail(name, "truncated PNG: chunk '", type, "' at byte ", pos, " needs ", need, " bytes, only ",
                 b.size() - pos, " remain");
    if (type == "IEND") return;
    pos += static_cast<std::size_t>(need);
  }
}

// What a JPEG has defined so far, as stb will see it: Huffman tables (DC and AC, ids 0..3), quantisation
// tables (0..3), and the frame's components (id, quantisation table) from its SOF0/1/2 segment.
struct jpeg_tables {
  bool dc[4] = {}, ac[4] = {}, quant[4] = {};
  bool frame = false, progressive = false;
  int components = 0;
  int component_id[4] = {}, component_quant[4] = {};
};

// The tables of the DHT segment whose payload (after its length) starts at byte `at`, `len` bytes long:
// each table is a class/id byte, 16 code counts and that many symbols, and may define at most 256 codes.
// Debian's stb_image 2.27 does not check that: stbi__build_huffman and its DHT reader then write past
// the table's 257-byte size list and 256-byte symbol list (found by tests/fuzz/fuzz_image.cpp with stb
// compiled under UBSan; later stb versions refuse it with "bad size list"). The walk mirrors stb's, which
// goes on reading tables while the segment's remaining length is positive, even past the segment's end
// into the bytes that follow (0 past the end of the file).
inline void read_jpeg_huffman_tables(std::span<const std::uint8_t> b, std::size_t at, std::size_t len,
                                     jpeg_tables& t, std::string_view name) {
  auto byte = [&](std::size_t i) -> std::size_t { return i < b.size() ? b[i] : 0; };
  std::size_t pos = at;
  long remaining = static_cast<long>(len);
  while (remaining > 0) {
    const std::size_t cls = byte(pos) >> 4, id = byte(pos) & 15;
    std::size_t codes = 0;
    for (std::size_t i = 1; i <= 16; ++i) codes += byte(pos + i);
    if (codes > 256)
      image_fail(name, "corrupt JPEG: the Huffman table at byte ", pos, " defines ", codes,
                 " codes; at most 256 are possible");
    if (cls <= 1 && id <= 3) (cls == 0 ? t.dc : t.ac)[id] = true;  // others: stb refuses the segment
    pos += 17 + codes;
    remaining -= static_cast<long>(17 + codes);
  }
}

// The quantisation tables of a DQT segment (same walk as stb's: 65 or 129 bytes per table).
inline void read_jpeg_quant_tables(std::span<const std::uint8_t> b, std::size_t at, std::size_t len,
                                   jpeg_tables& t) {
  std::size_t pos = at;
  long remaining = static_cast<long>(len);
  while (remaining > 0 && pos < b.size()) {
    const std::size_t precision = b[pos] >> 4, id = b[pos] & 15;
    if (precision > 1 || id > 3) return;  // stb refuses the segment
    t.quant[id] = true;
    const std::size_t size = precision ? 129 : 65;
    pos += size;
    remaining -= static_cast<long>(size);
  }
}

// The frame header (SOF0 baseline, SOF1 extended, SOF2 progressive: the kinds stb decodes).
inline void read_jpeg_frame(std::span<const std::uint8_t> seg, bool progressive, jpeg_tables& t) {
  // precision (1), height (2), width (2), Nf (1), Nf x (id, sampling, quantisation table)
  if (seg.size() < 6) return;
  const std::size_t nf = seg[5];
  if (nf < 1 || nf > 4 || seg.size() < 6 + 3 * nf) return;  // stb refuses it
  t.frame = true;
  t.progressive = progressive;
  t.components = static_cast<int>(nf);
  for (std::size_t i = 0; i < nf; ++i) {
    t.component_id[i] = seg[6 + 3 * i];
    t.component_quant[i] = seg[6 + 3 * i + 2];
  }
}

// A scan header (SOS): every table the scan will decode with must have been defined before it. stb
// 2.27 allocates its decoder state without clearing it and does not check this, so a scan naming an
// undefined table decodes from uninitialised memory (non-deterministic pixels, and with a garbage
// Huffman table, reads out of bounds; found by tests/fuzz/fuzz_image.cpp). libjpeg refuses such files
// too, except motion-JPEG frames without DHT, which it decodes with the standard Huffman tables and stb
// cannot decode correctly.
inline void check_jpeg_scan(std::span<const std::uint8_t> seg, std::size_t at, const jpeg_tables& t,
                            std::string_view name) {
  if (!t.frame || seg.empty()) return;  // no frame yet, or an empty header: stb refuses the file
  const std::size_t ns = seg[0];
  if (ns < 1 || ns > 4 || seg.size() != 1 + 2 * ns + 3) return;  // stb refuses it ("bad SOS ...")
  const std::size_t ss = seg[1 + 2 * ns], ah = seg[1 + 2 * ns + 2] >> 4;
  const bool uses_dc = !t.progressive || (ss == 0 && ah == 0);
  const bool uses_ac = !t.progressive || ss > 0;
  for (std::size_t i = 0; i < ns; ++i) {
    const int id = seg[1 + 2 * i];
    const std::size_t td = seg[2 + 2 * i] >> 4, ta = seg[2 + 2 * i] & 15;
    if (td > 3 || ta > 3) return;  // stb refuses it ("bad DC huff" / "bad AC huff")
    int c = 0;
    while (c < t.components && t.component_id[c] != id) ++c;
    if (c == t.components) return;  // stb refuses it ("bad component ID")
    if (uses_dc && !t.dc[td])
      image_fail(name, "corrupt JPEG: the scan at byte ", at, " decodes with DC Huffman table ", td,
                 ", which no DHT segment before it defines");
    if (uses_ac && !t.ac[ta])
      image_fail(name, "corrupt JPEG: the scan at byte ", at, " decodes with AC Huffman table ", ta,
                 ", which no DHT segment before it defines");
    const int q = t.component_quant[c];
    if (q < 0 || q > 3) return;  // stb refuses it
    if (!t.quant[q])
      image_fail(name, "corrupt JPEG: the scan at byte ", at, " dequantises component ", id, " with table ", q,
                 ", which no DQT segment before it defines");
  }
}

// Walks a JPEG's markers from SOI to EOI: segments by their length, entropy-coded data (after SOS) up to
// the next marker that is not a restart (FF D0..D7) or a stuffed FF 00. Bytes between segments that are
// not a marker are skipped, as libjpeg does (with a warning). Refuses a file that ends before EOI
// (whatever follows EOI is ignored: cameras append data there), a Huffman table stb would overrun, and a
// scan that uses a table no segment before it defined.
inline void check_jpeg_structure(std::span<const std::uint8_t> b, std::string_view name) {
  const std::size_t n = b.size();
  jpeg_tables tables;
  std::size_t pos = 2;  // after FF D8
  while (true) {
    while (pos < n && b[pos] != 0xFF) ++pos;  // extraneous bytes before a marker
    while (pos < n && b[pos] == 0xFF) ++pos;  // fill bytes, then the marker code
    if (pos >= n)
      image_fail(name, "truncated JPEG: the file ends at byte ", n, " without the end-of-image marker (FF D9)");
    const std::uint8_t m = b[pos++];
    if (m == 0xD9) return;                                                   // EOI
    if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length
    if (n - pos < 2)
      image_fail(name, "truncated JPEG: marker FF ", static_cast<int>(m), " at byte ", pos - 2,
                 " has no length (the file ends)");
    const std::size_t len = (std::size_t{b[pos]} << 8) | b[pos + 1];
    if (len < 2) return;  // invalid segment length: stb reports it
    if (n - pos < len)
      image_fail(name, "truncated JPEG: segment FF ", static_cast<int>(m), " at byte ", pos - 2, " needs ", len,
                 " bytes, only ", n - pos, " remain");
    const std::span<const std::uint8_t> payload = b.subspan(pos + 2, len - 2);
    if (m == 0xC4) read_jpeg_huffman_tables(b, pos + 2, len - 2, tables, name);
    if (m == 0xDB) read_jpeg_quant_tables(b, pos + 2, len - 2, tables);
    if (m == 0xC0 || m == 0xC1 || m == 0xC2) read_jpeg_frame(payload, m == 0xC2, tables);
    if (m == 0xDA) check_jpeg_scan(payload, pos - 2, tables, name);
    pos += len;
    if (m == 0xDA) {  // SOS: entropy-coded data follows, up to the next real marker
      while (pos < n) {
        if (b[pos] != 0xFF) {
          ++pos;
          continue;
        }
        if (pos + 1 >= n) break;
        const std::uint8_t next = b[pos + 1];
        if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
          pos += 2;  // stuffed zero or restart marker: still inside the scan
        } else if (next == 0xFF) {
          ++pos;  // fill byte before a marker
        } else {
          break;  // a marker: back to the segment walk
        }
      }
    }
  }
}

// The width and height the header claims, read directly (PNG: IHDR, which must come first; JPEG: the
// first SOFn segment, which precedes the first scan), so the budget is checked even where stbi_info
// would refuse the header itself (stb refuses w x h x channels over 2^30 with "too large", a message that
// does not say why). nullopt when the header cannot be found: stbi_info then reports what is wrong.
inline std::optional<std::pair<std::uint32_t, std::uint32_t>> claimed_size(std::span<const std::uint8_t> b,
                                                                           image_kind kind) {
  if (kind == image_kind::png) {
    if (b.size() < 24 || std::memcmp(b.data() + 12, "IHDR", 4) != 0) return std::nullopt;
    return std::pair{be32(b.data() + 16), be32(b.data() + 20)};
  }
  std::size_t pos = 2;
  while (true) {
    while (pos < b.size() && b[pos] != 0xFF) ++pos;
    while (pos < b.size() && b[pos] == 0xFF) ++pos;
    if (pos + 3 > b.size()) return std::nullopt;
    const std::uint8_t m = b[pos++];
    if (m == 0xD9 || m == 0xDA) return std::nullopt;                               // EOI or a scan: no SOF
    if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length
    const std::size_t len = (std::size_t{b[pos]} << 8) | b[pos + 1];
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;  // not DHT, JPG, DAC
    if (sof) {  // length (2), precision (1), height (2), width (2)
      if (len < 7 || b.size() - pos < 7) return std::nullopt;
      return std::pair{std::uint32_t{b[pos + 5]} << 8 | b[pos + 6], std::uint32_t{b[pos + 3]} << 8 | b[pos + 4]};
    }
    if (len < 2) return std::nullopt;
    pos += len;
  }
}

// Refuses w x h over the limits (a format_error naming the file and the limits).
inline void check_limits(std::int64_t w, std::int64_t h, const image_limits& limits, std::string_view name,
                         const char* kind_name) {
  if (w > limits.max_width || h > limits.max_height || w * h > limits.max_pixels)
    image_fail(name, "the ", kind_name, " header claims ", w, " x ", h, " pixels, over the limits (at most ",
               limits.max_width, " x ", limits.max_height, " and a pixel budget of ", limits.max_pixels,
               " pixels; see blip2::io::image_limits); refused before decoding");
}

// PNG colour type 0 (greyscale) with bit depth 16, from the IHDR chunk that must come first.
inline bool is_png_grey16(std::span<const std::uint8_t> b) {
  return b.size() >= 26 && std::memcmp(b.data() + 12, "IHDR", 4) == 0 && b[24] == 16 && b[25] == 0;
}

struct stbi_deleter {
  void operator()(void* p) const { stbi_image_free(p); }
};

inline std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown reason";
}

}  // namespace detail

// Decodes a PNG or JPEG held in memory to 8-bit RGB; name is used in error messages (a path, a URL, a
// key in an archive). Throws blip2::format_error (see the top of this file for what is refused).
inline rgb_image decode_image(std::span<const std::uint8_t> bytes, std::string_view name,
                              const image_limits& limits = {}) {
  BLIP2_CHECK(limits.max_width > 0 && limits.max_height > 0 && limits.max_pixels > 0, value_error,
              "decode_image: image_limits must be positive (max_width ", limits.max_width, ", max_height ",
              limits.max_height, ", max_pixels ", limits.max_pixels, ")");
  const detail::image_kind kind = detail::check_magic(bytes, name);
  const char* kind_name = kind == detail::image_kind::png ? "PNG" : "JPEG";
  if (bytes.size() > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    detail::image_fail(name, "the file is ", bytes.size(), " bytes; stb_image reads at most 2^31 - 1");
  const int len = static_cast<int>(bytes.size());

  // 1. The header's dimensions against the budget, before any allocation the size of the image: as the
  //    header states them, then (after step 2) as stbi_info reads them, which also validates the header.
  if (const auto claimed = detail::claimed_size(bytes, kind))
    detail::check_limits(claimed->first, claimed->second, limits, name, kind_name);

  // 2. A file cut short is refused, with where it ends; so is a JPEG Huffman table stb would overrun
  //    (before stbi_info, which may parse such a table).
  if (kind == detail::image_kind::png)
    detail::check_png_structure(bytes, name);
  else
    detail::check_jpeg_structure(bytes, name);

  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(bytes.data(), len, &w, &h, &channels))
    detail::image_fail(name, "cannot read the ", kind_name, " header: ", detail::stb_reason());
  if (w <= 0 || h <= 0) detail::image_fail(name, "the ", kind_name, " header gives a size of ", w, " x ", h);
  detail::check_limits(w, h, limits, name, kind_name);

  // 3. Decode to RGB.
  rgb_image img;
  int dw = 0, dh = 0, file_channels = 0;
  if (kind == detail::image_kind::png && detail::is_png_grey16(bytes)) {
    // Pillow: mode "I", and convert("RGB") clips every sample to [0, 255].
    std::unique_ptr<stbi_us, detail::stbi_deleter> grey(
        stbi_load_16_from_memory(bytes.data(), len, &dw, &dh, &file_channels, 1));
    if (!grey) detail::image_fail(name, "cannot decode the 16-bit greyscale PNG: ", detail::stb_reason());
    if (dw != w || dh != h)
      detail::image_fail(name, "decoded size ", dw, " x ", dh, " differs from the header's ", w, " x ", h);
    img.pixels.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);
    for (std::size_t i = 0; i < n; ++i) {
      const auto v = static_cast<std::uint8_t>(std::min<stbi_us>(grey.get()[i], 255));
      img.pixels[3 * i] = img.pixels[3 * i + 1] = img.pixels[3 * i + 2] = v;
    }
  } else {
    std::unique_ptr<stbi_uc, detail::stbi_deleter> rgb(
        stbi_load_from_memory(bytes.data(), len, &dw, &dh, &file_channels, 3));
    if (!rgb) detail::image_fail(name, "cannot decode the ", kind_name, ": ", detail::stb_reason());
    if (dw != w || dh != h)
      detail::image_fail(name, "decoded size ", dw, " x ", dh, " differs from the header's ", w, " x ", h);
    const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3;
    img.pixels.assign(rgb.get(), rgb.get() + n);
  }
  img.width = w;
  img.height = h;
  return img;
}

// Reads a PNG or JPEG file and decodes it to 8-bit RGB (decode_image, with the path as the name).
// A missing or unreadable file is a blip2::format_error naming it.
inline rgb_image load_image(const std::filesystem::path& file, const image_limits& limits = {}) {
  const std::string name = file.string();
  std::error_code ec;
  const auto status = std::filesystem::status(file, ec);
  if (ec || !std::filesystem::exists(status))
    detail::image_fail(name, "cannot open: ", ec ? ec.message() : std::generic_category().message(ENOENT));
  if (!std::filesystem::is_regular_file(status)) detail::image_fail(name, "not a regular file");
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(name.c_str(), "rb"), &std::fclose);
  if (!f) detail::image_fail(name, "cannot open: ", std::strerror(errno));
  std::vector<std::uint8_t> bytes;
  std::uint8_t buf[1 << 16];
  // Read in blocks up to one byte past stb's limit, so a huge file is refused without reading it all.
  constexpr std::size_t max_bytes = static_cast<std::size_t>(std::numeric_limits<int>::max());
  while (true) {
    const std::size_t got = std::fread(buf, 1, sizeof buf, f.get());
    bytes.insert(bytes.end(), buf, buf + got);
    if (bytes.size() > max_bytes) detail::image_fail(name, "the file is over 2^31 - 1 bytes; stb_image reads less");
    if (got < sizeof buf) {
      if (std::ferror(f.get())) detail::image_fail(name, "read error: ", std::strerror(errno));
      break;
    }
  }
  return decode_image(bytes, name, limits);
}

namespace detail {

// Pillow's resampling coefficients for one axis: for output sample i, the input samples
// [first[i], first[i] + count[i]) with 22-bit fixed-point weights weight[i * taps + j].
struct resample_axis {
  static constexpr int precision_bits = 22;  // 32 - 8 (output) - 2 (headroom: lobes push sums past 1)
  int taps = 0;
  std::vector<int> first, count;
  std::vector<std::int32_t> weight;
};

// The Keys cubic convolution kernel with a = -0.5 (Catmull-Rom), support [-2, 2].
inline double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

inline resample_axis bicubic_axis(int in_size, int out_size) {
  resample_axis ax;
  const double scale = static_cast<double>(in_size) / out_size;  // input pixels per output pixel
  const double stretch = std::max(scale, 1.0);                   // widen the kernel only when reducing
  const double support = 2.0 * stretch;
  ax.taps = static_cast<int>(std::ceil(support)) * 2 + 1;  // enough for any centre's window
  ax.first.resize(static_cast<std::size_t>(out_size));
  ax.count.resize(static_cast<std::size_t>(out_size));
  ax.weight.assign(static_cast<std::size_t>(out_size) * static_cast<std::size_t>(ax.taps), 0);
  std::vector<double> w(static_cast<std::size_t>(ax.taps));
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    // Window: input samples whose index rounds into [center - support, center + support), clamped.
    // (int) truncates toward zero, as Pillow's cast does; a negative start is clamped to 0 anyway.
    const int lo = std::max(static_cast<int>(center - support + 0.5), 0);
    const int hi = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = hi - lo;
    double sum = 0.0;
    for (int j = 0; j < n; ++j) {
      // Distance from the output centre to input sample lo + j's centre, in kernel units.
      w[static_cast<std::size_t>(j)] = bicubic_kernel((lo + j - center + 0.5) / stretch);
      sum += w[static_cast<std::size_t>(j)];
    }
    std::int32_t* k = &ax.weight[static_cast<std::size_t>(i) * static_cast<std::size_t>(ax.taps)];
    for (int j = 0; j < n; ++j) {
      const double v = (sum != 0.0 ? w[static_cast<std::size_t>(j)] / sum : w[static_cast<std::size_t>(j)]) *
                       (1 << resample_axis::precision_bits);
      k[j] = static_cast<std::int32_t>(v < 0 ? v - 0.5 : v + 0.5);  // round half away from zero
    }
    ax.first[static_cast<std::size_t>(i)] = lo;
    ax.count[static_cast<std::size_t>(i)] = n;
  }
  return ax;
}

// A fixed-point sum (which started at 1/2) to 8 bits: drop the fraction (floor), clip to [0, 255].
inline std::uint8_t fixed_to_u8(std::int64_t acc) {
  const std::int64_t v = acc >> resample_axis::precision_bits;  // arithmetic shift: floor
  return static_cast<std::uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

}  // namespace detail

// Resizes img to out_width x out_height as Pillow 9.4's img.resize((out_width, out_height),
// Image.BICUBIC) does for an RGB image (see the top of this file). Throws value_error for a size < 1 or an
// image whose pixels do not match its dimensions.
inline rgb_image resize_bicubic(const rgb_image& img, int out_width, int out_height) {
  BLIP2_CHECK(img.width > 0 && img.height > 0, value_error, "resize_bicubic: the input image is ", img.width, " x ",
              img.height, "; it must have at least one pixel");
  BLIP2_CHECK(img.pixels.size() == static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height) * 3,
              value_error, "resize_bicubic: the input image is ", img.width, " x ", img.height, " but holds ",
              img.pixels.size(), " bytes (", static_cast<std::size_t>(img.width) * img.height * 3,
              " expected for RGB)");
  BLIP2_CHECK(out_width > 0 && out_height > 0, value_error, "resize_bicubic: the output size ", out_width, " x ",
              out_height, " must be at least 1 x 1");
  if (out_width == img.width && out_height == img.height) return img;  // Pillow returns a copy

  const std::size_t in_w = static_cast<std::size_t>(img.width), out_w = static_cast<std::size_t>(out_width),
                    out_h = static_cast<std::size_t>(out_height);
  detail::resample_axis horiz = detail::bicubic_axis(img.width, out_width);
  detail::resample_axis vert = detail::bicubic_axis(img.height, out_height);
  const bool need_horizontal = out_width != img.width;
  const bool need_vertical = out_height != img.height;

  // Horizontal pass, over the input rows [row0, row1) that the vertical pass reads.
  const std::uint8_t* src = img.pixels.data();
  std::size_t src_w = in_w;
  std::vector<std::uint8_t> tmp;
  if (need_horizontal) {
    const int row0 = vert.first.front();
    const int row1 = vert.first.back() + vert.count.back();
    tmp.resize(static_cast<std::size_t>(row1 - row0) * out_w * 3);  // (rows, out_w, 3)
    for (int y = row0; y < row1; ++y) {
      const std::uint8_t* in_row = img.pixels.data() + static_cast<std::size_t>(y) * in_w * 3;
      std::uint8_t* out_row = tmp.data() + static_cast<std::size_t>(y - row0) * out_w * 3;
      for (std::size_t x = 0; x < out_w; ++x) {
        const std::int32_t* k = &horiz.weight[x * static_cast<std::size_t>(horiz.taps)];
        const std::uint8_t* p = in_row + static_cast<std::size_t>(horiz.first[x]) * 3;
        std::int64_t r = 1 << (detail::resample_axis::precision_bits - 1), g = r, b = r;
        for (int j = 0; j < horiz.count[x]; ++j, p += 3) {
          r += std::int64_t{p[0]} * k[j];
          g += std::int64_t{p[1]} * k[j];
          b += std::int64_t{p[2]} * k[j];
        }
        out_row[3 * x] = detail::fixed_to_u8(r);
        out_row[3 * x + 1] = detail::fixed_to_u8(g);
        out_row[3 * x + 2] = detail::fixed_to_u8(b);
      }
    }
    for (auto& f : vert.first) f -= row0;  // the vertical pass reads tmp, whose row 0 is input row row0
    src = tmp.data();
    src_w = out_w;
  }

  rgb_image out;
  out.width = out_width;
  out.height = out_height;
  if (!need_vertical) {  // only the horizontal pass changed anything (and it covered every row)
    out.pixels = std::move(tmp);
    return out;
  }
  out.pixels.resize(out_h * src_w * 3);  // (out_h, out_w, 3)
  const std::size_t row_bytes = src_w * 3;
  for (std::size_t y = 0; y < out_h; ++y) {
    const std::int32_t* k = &vert.weight[y * static_cast<std::size_t>(vert.taps)];
    const std::uint8_t* col0 = src + static_cast<std::size_t>(vert.first[y]) * row_bytes;
    std::uint8_t* out_row = out.pixels.data() + y * row_bytes;
    for (std::size_t i = 0; i < row_bytes; ++i) {  // every byte of the row: x * 3 + channel
      std::int64_t acc = 1 << (detail::resample_axis::precision_bits - 1);
      const std::uint8_t* p = col0 + i;
      for (int j = 0; j < vert.count[y]; ++j, p += row_bytes) acc += std::int64_t{*p} * k[j];
      out_row[i] = detail::fixed_to_u8(acc);
    }
  }
  return out;
}

// BLIP-2's evaluation transform (LAVIS blip_image_eval / Blip2Processor): resize straight to size x size
// with resize_bicubic (no crop, aspect ratio not kept), then x / 255 and (x - mean) / std per channel with
// the CLIP constants, in float as torchvision's ToTensor and Normalize compute it. Returns (3, size, size),
// channels first.
inline host_tensor<float, 3> blip2_eval_transform(const rgb_image& img, int size) {
  BLIP2_CHECK(size > 0, value_error, "blip2_eval_transform: size ", size, " must be at least 1");
  const rgb_image r = resize_bicubic(img, size, size);
  const index_t s = size;
  host_tensor<float, 3> out({3, s, s});  // (3, S, S)
  for (index_t y = 0; y < s; ++y)
    for (index_t x = 0; x < s; ++x)
      for (index_t c = 0; c < 3; ++c) {
        const float v = static_cast<float>(r.pixels[static_cast<std::size_t>((y * s + x) * 3 + c)]) / 255.0f;
        out(c, y, x) = (v - clip_mean[static_cast<std::size_t>(c)]) / clip_std[static_cast<std::size_t>(c)];
      }
  return out;
}

}  // namespace blip2::io

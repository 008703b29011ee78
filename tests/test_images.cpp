// Tests for blip2/io/image.hpp: decoding, Pillow-compatible bicubic resizing and BLIP-2's eval transform
// against Pillow 9.4 (fixtures from tests/make_image_fixtures.py, listed in fixtures/images/manifest.txt),
// and every kind of bad input refused with a blip2::format_error that names the file.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "blip2/io/image.hpp"
#include "harness/temp_dir.hpp"

namespace {

namespace bio = blip2::io;
const std::filesystem::path fixture_dir = std::filesystem::path(BLIP2_FIXTURE_DIR) / "images";

std::vector<std::uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open fixture ", p.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::filesystem::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// 64-bit FNV-1a, as tests/make_image_fixtures.py computes it, in hex.
std::string fnv1a64(const std::vector<std::uint8_t>& bytes) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (std::uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001B3ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

struct manifest_line {
  std::vector<std::string> f;
};
std::vector<manifest_line> read_manifest(const std::string& kind) {
  std::ifstream in(fixture_dir / "manifest.txt");
  REQUIRE_MESSAGE(in.good(), "cannot open ", (fixture_dir / "manifest.txt").string(),
                  " (run /usr/bin/python3 tests/make_image_fixtures.py)");
  std::vector<manifest_line> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    manifest_line m;
    for (std::string w; ls >> w;) m.f.push_back(w);
    if (!m.f.empty() && m.f[0] == kind) out.push_back(m);
  }
  REQUIRE_MESSAGE(!out.empty(), "manifest.txt has no '", kind, "' lines");
  return out;
}

// A reference image written by Pillow (lossless PNG), read back and proven exact by its hash.
bio::rgb_image load_reference(const std::string& file, const std::string& fnv) {
  bio::rgb_image ref = bio::load_image(fixture_dir / file);
  INFO("reference ", file);
  REQUIRE(fnv1a64(ref.pixels) == fnv);  // decoded exactly the bytes Pillow had
  return ref;
}

struct difference {
  int max = 0;           // largest |a - b| over all samples
  std::size_t samples = 0;  // samples (pixel x channel) that differ
  std::size_t pixels = 0;   // pixels with any channel that differs
  std::size_t total_pixels = 0;
};
difference compare(const bio::rgb_image& a, const bio::rgb_image& b) {
  REQUIRE(a.width == b.width);
  REQUIRE(a.height == b.height);
  REQUIRE(a.pixels.size() == b.pixels.size());
  difference d;
  d.total_pixels = a.pixels.size() / 3;
  for (std::size_t p = 0; p < d.total_pixels; ++p) {
    bool any = false;
    for (int c = 0; c < 3; ++c) {
      const int e = std::abs(int{a.pixels[3 * p + c]} - int{b.pixels[3 * p + c]});
      d.max = std::max(d.max, e);
      d.samples += e != 0;
      any = any || e != 0;
    }
    d.pixels += any;
  }
  return d;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

TEST_CASE("images_pillow_golden") {
  SUBCASE("decode: PNG exactly as Pillow's convert(\"RGB\"), JPEG within a few levels of libjpeg-turbo") {
    // stb's JPEG decoder and libjpeg-turbo's (Pillow) differ in the IDCT (stb's integer IDCT against
    // jpeg_idct_islow), in the chroma upsampling arithmetic and in the YCbCr -> RGB fixed-point
    // constants; each moves a sample by a level at most, and they can add up. Measured on these fixtures
    // (stb 2.27 against Pillow 9.4 with Debian's libjpeg-turbo): 4:2:0 q90 max 3 (444 of 4096 pixels
    // differ), 4:4:4 q95 max 2 (36 of 851), progressive 4:2:0 q80 max 2 (184 of 1500), greyscale q90
    // max 1 (17 of 1395; IDCT only). Four = the worst measured plus one level for other encoders'
    // files; a real decoding error (wrong upsampler, colour matrix, a lost block) moves pixels by tens.
    constexpr int jpeg_tolerance = 4;
    for (const auto& m : read_manifest("decode")) {
      const std::string& input = m.f[1];
      INFO("decode ", input);
      const bio::rgb_image got = bio::load_image(fixture_dir / input);
      const bio::rgb_image ref = load_reference(m.f[2], m.f[5]);
      CHECK(got.width == std::stoi(m.f[3]));
      CHECK(got.height == std::stoi(m.f[4]));
      const difference d = compare(got, ref);
      std::printf("images_pillow_golden: decode %-26s %3d x %3d  max |stb - Pillow| = %d, %zu of %zu pixels differ\n",
                  input.c_str(), got.width, got.height, d.max, d.pixels, d.total_pixels);
      if (ends_with(input, ".png"))
        CHECK(d.max == 0);  // PNG is lossless: any difference is a bug
      else
        CHECK(d.max <= jpeg_tolerance);
    }
  }

  SUBCASE("resize_bicubic: within one 8-bit level of Pillow's resize(BICUBIC)") {
    // Same coefficients, same fixed-point arithmetic, same pass order: the result should be identical.
    // One level is allowed because the weights are normalised in double before rounding to 22 bits, and a
    // last-bit difference in that double (another compiler's contraction into an FMA, another libm) can
    // flip the rounding of one weight, moving a sum across a .5 boundary by one level, never more.
    constexpr int resize_tolerance = 1;
    int worst = 0;
    std::size_t differing = 0;
    for (const auto& m : read_manifest("resize")) {
      const std::string& input = m.f[1];
      const int w = std::stoi(m.f[2]), h = std::stoi(m.f[3]);
      INFO("resize ", input, " to ", w, " x ", h);
      // The input is Pillow's own decode (exact for every PNG; for the JPEG case the decode reference),
      // so this compares resampling alone.
      std::string decoded_ref;
      std::string decoded_fnv;
      for (const auto& d : read_manifest("decode"))
        if (d.f[1] == input) decoded_ref = d.f[2], decoded_fnv = d.f[5];
      REQUIRE(!decoded_ref.empty());
      const bio::rgb_image src = load_reference(decoded_ref, decoded_fnv);
      const bio::rgb_image got = bio::resize_bicubic(src, w, h);
      const bio::rgb_image ref = load_reference(m.f[4], m.f[5]);
      const difference d = compare(got, ref);
      std::printf("images_pillow_golden: resize %-20s %3d x %3d -> %3d x %3d  max |ours - Pillow| = %d, %zu of %zu "
                  "samples differ\n",
                  input.c_str(), src.width, src.height, w, h, d.max, d.samples, 3 * d.total_pixels);
      CHECK(d.max <= resize_tolerance);
      worst = std::max(worst, d.max);
      differing += d.samples;
    }
    std::printf("images_pillow_golden: resize over all cases: max difference %d, %zu samples differ\n", worst,
                differing);
  }

  SUBCASE("blip2_eval_transform: within one 8-bit level (1/255/std) of Pillow + numpy") {
    for (const auto& m : read_manifest("transform")) {
      const std::string& input = m.f[1];
      const int s = std::stoi(m.f[2]);
      INFO("transform ", input, " at ", s);
      const auto raw = read_bytes(fixture_dir / m.f[3]);
      REQUIRE(raw.size() == static_cast<std::size_t>(3 * s * s) * sizeof(float));
      std::vector<float> ref(static_cast<std::size_t>(3 * s * s));
      std::memcpy(ref.data(), raw.data(), raw.size());  // little-endian float32, as this host

      const blip2::host_tensor<float, 3> got = bio::blip2_eval_transform(bio::load_image(fixture_dir / input), s);
      REQUIRE(got.extent(0) == 3);
      REQUIRE(got.extent(1) == s);
      REQUIRE(got.extent(2) == s);
      double worst_levels = 0, worst_abs = 0;
      for (int c = 0; c < 3; ++c) {
        // One 8-bit level of the resize becomes 1/255/std after normalisation; the float arithmetic
        // itself (same operations as torchvision's, in float32) adds only rounding (~1e-7).
        const double tol = 1.0 / 255.0 / bio::clip_std[static_cast<std::size_t>(c)] + 1e-6;
        for (int y = 0; y < s; ++y)
          for (int x = 0; x < s; ++x) {
            const double e = std::fabs(double{got(c, y, x)} - ref[static_cast<std::size_t>((c * s + y) * s + x)]);
            worst_abs = std::max(worst_abs, e);
            worst_levels = std::max(worst_levels, e * 255.0 * bio::clip_std[static_cast<std::size_t>(c)]);
            CHECK(e <= tol);
          }
      }
      std::printf("images_pillow_golden: transform %s at %d: max |ours - Pillow+numpy| = %.3g (%.3g 8-bit levels)\n",
                  input.c_str(), s, worst_abs, worst_levels);
    }
  }

  SUBCASE("the same size returns the image unchanged; a bad size or image is a value_error") {
    const bio::rgb_image img = bio::load_image(fixture_dir / "in_rgb_37x23.png");
    CHECK(bio::resize_bicubic(img, 37, 23).pixels == img.pixels);
    CHECK_THROWS_AS(bio::resize_bicubic(img, 0, 5), blip2::value_error);
    CHECK_THROWS_AS(bio::resize_bicubic(img, 5, -1), blip2::value_error);
    bio::rgb_image broken = img;
    broken.pixels.pop_back();
    CHECK_THROWS_AS(bio::resize_bicubic(broken, 5, 5), blip2::value_error);
    CHECK_THROWS_AS(bio::resize_bicubic(bio::rgb_image{}, 5, 5), blip2::value_error);
    CHECK_THROWS_AS(bio::blip2_eval_transform(img, 0), blip2::value_error);
  }
}

namespace {

std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

void put_be32(std::vector<std::uint8_t>& v, std::uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<std::uint8_t>(x >> s));
}

void put_chunk(std::vector<std::uint8_t>& v, const char* type, const std::vector<std::uint8_t>& data) {
  put_be32(v, static_cast<std::uint32_t>(data.size()));
  const std::size_t start = v.size();
  v.insert(v.end(), type, type + 4);
  v.insert(v.end(), data.begin(), data.end());
  put_be32(v, crc32(v.data() + start, v.size() - start));
}

// A well-formed PNG (valid CRCs, a real zlib stream, IEND) whose header claims width x height, 8-bit RGB:
// only the pixel data is far too short, which no decoder gets to see if the budget check comes first.
std::vector<std::uint8_t> png_claiming(std::uint32_t width, std::uint32_t height) {
  std::vector<std::uint8_t> v = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  std::vector<std::uint8_t> ihdr;
  put_be32(ihdr, width);
  put_be32(ihdr, height);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // bit depth 8, colour type 2 (RGB), deflate, filter 0, no interlace
  put_chunk(v, "IHDR", ihdr);
  // zlib: header 78 01, one stored final block of 1 byte (a filter byte), Adler-32 of {0} = 0x00010001.
  put_chunk(v, "IDAT", {0x78, 0x01, 0x01, 0x01, 0x00, 0xFE, 0xFF, 0x00, 0x00, 0x01, 0x00, 0x01});
  put_chunk(v, "IEND", {});
  return v;
}

// The message of the format_error that loading path throws (fails the test when none is thrown).
std::string load_error(const std::filesystem::path& path, const bio::image_limits& limits = {}) {
  try {
    (void)bio::load_image(path, limits);
  } catch (const blip2::format_error& e) {
    return e.what();
  }
  FAIL("no format_error for ", path.string());
  return {};
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("images_bad_input") {
  blip2::testing::temp_dir dir;
  const auto jpeg = read_bytes(fixture_dir / "in_rgb_64x64.jpg");
  const auto png = read_bytes(fixture_dir / "in_rgb_300x200.png");

  SUBCASE("a file that is not an image") {
    const auto p = dir / "notes.png";
    write_bytes(p, {'h', 'e', 'l', 'l', 'o', ',', ' ', 'w', 'o', 'r', 'l', 'd', '\n'});
    const std::string e = load_error(p);
    CHECK(contains(e, p.string()));
    CHECK(contains(e, "only PNG and JPEG are accepted"));
    CHECK(contains(e, "68 65 6C 6C 6F"));  // "hello": what it found instead
  }
  SUBCASE("an empty file") {
    const auto p = dir / "empty.jpg";
    write_bytes(p, {});
    const std::string e = load_error(p);
    CHECK(contains(e, p.string()));
    CHECK(contains(e, "empty"));
  }
  SUBCASE("a missing file, a directory") {
    const std::string e = load_error(dir / "no_such.png");
    CHECK(contains(e, (dir / "no_such.png").string()));
    CHECK(contains(e, "cannot open"));
    const std::string d = load_error(dir.path);
    CHECK(contains(d, dir.path.string()));
    CHECK(contains(d, "not a regular file"));
  }
  SUBCASE("a GIF and a BMP are refused by their magic bytes, before stb sees them") {
    const auto gif = dir / "anim.gif";
    // A complete 1 x 1 GIF89a (stb could decode it: the point is that we do not let it).
    write_bytes(gif, {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF,
                      0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B});
    const std::string g = load_error(gif);
    CHECK(contains(g, gif.string()));
    CHECK(contains(g, "looks like a GIF"));
    CHECK(contains(g, "only PNG and JPEG are accepted"));
    const auto bmp = dir / "pic.bmp";
    std::vector<std::uint8_t> b = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 1, 0,
                                   0, 0, 1, 0, 24, 0, 0, 0, 0, 0, 4, 0, 0, 0};
    b.resize(58, 0);
    write_bytes(bmp, b);
    const std::string m = load_error(bmp);
    CHECK(contains(m, bmp.string()));
    CHECK(contains(m, "looks like a BMP"));
  }
  SUBCASE("a truncated JPEG") {
    for (std::size_t keep : {jpeg.size() / 2, jpeg.size() - 2, std::size_t{200}, std::size_t{3}}) {
      const auto p = dir / ("cut_" + std::to_string(keep) + ".jpg");
      write_bytes(p, std::vector<std::uint8_t>(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(keep)));
      const std::string e = load_error(p);
      INFO(keep, " bytes kept: ", e);
      CHECK(contains(e, p.string()));
      CHECK((contains(e, "truncated JPEG") || contains(e, "cannot read the JPEG header")));
    }
    // What follows EOI is ignored, as every decoder does: not an error.
    auto padded = jpeg;
    padded.insert(padded.end(), {'t', 'r', 'a', 'i', 'l', 'e', 'r'});
    CHECK(bio::decode_image(padded, "padded.jpg").pixels == bio::load_image(fixture_dir / "in_rgb_64x64.jpg").pixels);
  }
  SUBCASE("a truncated PNG") {
    for (std::size_t keep : {png.size() / 2, png.size() - 12, std::size_t{30}, std::size_t{9}}) {
      const auto p = dir / ("cut_" + std::to_string(keep) + ".png");
      write_bytes(p, std::vector<std::uint8_t>(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(keep)));
      const std::string e = load_error(p);
      INFO(keep, " bytes kept: ", e);
      CHECK(contains(e, p.string()));
      CHECK((contains(e, "truncated PNG") || contains(e, "cannot read the PNG header")));
    }
  }
  SUBCASE("a JPEG Huffman table with more than 256 codes (stb 2.27 would write past its arrays)") {
    // Found by fuzz_image with stb compiled under UBSan: stbi__build_huffman indexes size[257].
    auto bad = jpeg;
    std::size_t dht = 0;
    for (std::size_t i = 2; i + 21 < bad.size(); ++i)
      if (bad[i] == 0xFF && bad[i + 1] == 0xC4) {
        dht = i;
        break;
      }
    REQUIRE(dht > 0);
    for (std::size_t i = 0; i < 16; ++i) bad[dht + 5 + i] = 17;  // 16 x 17 = 272 codes in the first table
    const auto p = dir / "dht.jpg";
    write_bytes(p, bad);
    const std::string e = load_error(p);
    CHECK(contains(e, p.string()));
    CHECK(contains(e, "defines 272 codes; at most 256"));
  }
  SUBCASE("a JPEG scan that uses a table nothing defined (stb 2.27 would read uninitialised memory)") {
    auto find = [&](std::uint8_t marker) {
      for (std::size_t i = 2; i + 10 < jpeg.size(); ++i)
        if (jpeg[i] == 0xFF && jpeg[i + 1] == marker) return i;
      FAIL("marker not found");
      return std::size_t{0};
    };
    auto bad = jpeg;
    const std::size_t sos = find(0xDA);
    bad[sos + 6] = 0x33;  // first component: DC table 3, AC table 3 (the file defines 0 and 1)
    const auto p = dir / "undefined_huffman.jpg";
    write_bytes(p, bad);
    const std::string e = load_error(p);
    CHECK(contains(e, p.string()));
    CHECK(contains(e, "DC Huffman table 3, which no DHT segment before it defines"));
    auto badq = jpeg;
    const std::size_t sof = find(0xC0);
    badq[sof + 12] = 3;  // first component: quantisation table 3 (the file defines 0 and 1)
    const auto q = dir / "undefined_quant.jpg";
    write_bytes(q, badq);
    CHECK(contains(load_error(q), "with table 3, which no DQT segment before it defines"));
  }
  SUBCASE("the fuzzer's findings in stb stay refused before stb sees them") {
    const auto corpus = std::filesystem::path(BLIP2_FIXTURE_DIR) / ".." / "fuzz" / "corpus_image";
    CHECK(contains(load_error(corpus / "regress_dht_1002_codes.jpg"), "defines 1002 codes"));
    CHECK(contains(load_error(corpus / "regress_dht_2010_codes.jpg"), "defines 2010 codes"));
    CHECK(contains(load_error(corpus / "regress_undefined_table.jpg"), "which no DQT segment before it defines"));
    // Corrupt entropy-coded data on which stb shifts by 32 (documented in image.hpp): it decodes, to
    // whatever pixels; what matters is that it neither crashes nor throws anything but format_error.
    try {
      const auto img = bio::load_image(corpus / "regress_shift32.jpg");
      CHECK(img.pixels.size() == static_cast<std::size_t>(img.width) * img.height * 3);
    } catch (const blip2::format_error&) {
    }
  }
  SUBCASE("a PNG whose header claims 100000 x 100000 is refused by the budget, before decoding") {
    const auto p = dir / "huge.png";
    write_bytes(p, png_claiming(100000, 100000));
    const std::string e = load_error(p);
    CHECK(contains(e, p.string()));
    CHECK(contains(e, "100000 x 100000"));
    CHECK(contains(e, "pixel budget"));
    CHECK(contains(e, "refused before decoding"));
    // With the budget out of the way, stb's own header check refuses it (w x h x 3 over 2^30).
    const std::string e2 = load_error(p, {100000, 100000, std::int64_t{100000} * 100000});
    CHECK(!contains(e2, "pixel budget"));
    CHECK(contains(e2, "cannot read the PNG header"));
    // 16000 x 4100 (65.6 MP) passes stb's header check but not the default budget of 64 MP; with the
    // budget raised, stb gets to decode and fails on the missing pixels: proof that the refusal came from
    // the budget check, not from stb.
    const auto q = dir / "large.png";
    write_bytes(q, png_claiming(16000, 4100));
    const std::string e3 = load_error(q);
    CHECK(contains(e3, "16000 x 4100"));
    CHECK(contains(e3, "pixel budget of 64000000"));
    const std::string e4 = load_error(q, {16384, 16384, 100'000'000});
    CHECK(!contains(e4, "pixel budget"));
    CHECK(contains(e4, "cannot decode the PNG"));
  }
  SUBCASE("a JPEG whose SOF claims 60000 x 60000 is refused by the budget too") {
    // Patch the frame header of a real JPEG: FF C0, length, precision, height, width.
    auto big = jpeg;
    std::size_t sof = 0;
    for (std::size_t i = 2; i + 8 < big.size(); ++i)
      if (big[i] == 0xFF && big[i + 1] == 0xC0) {
        sof = i;
        break;
      }
    REQUIRE(sof > 0);
    big[sof + 5] = big[sof + 7] = 0xEA;  // 0xEA60 = 60000
    big[sof + 6] = big[sof + 8] = 0x60;
    const auto p = dir / "huge.jpg";
    write_bytes(p, big);
    const std::string e = load_error(p);
    CHECK(contains(e, p.string()));
    CHECK(contains(e, "JPEG header claims 60000 x 60000"));
  }
  SUBCASE("caller-set limits: width, height and pixel count each") {
    const auto p = fixture_dir / "in_rgb_64x64.png";
    CHECK(contains(load_error(p, {63, 1000, 1'000'000}), "64 x 64"));
    CHECK(contains(load_error(p, {1000, 63, 1'000'000}), "64 x 64"));
    CHECK(contains(load_error(p, {1000, 1000, 64 * 64 - 1}), "pixel budget of 4095"));
    CHECK(bio::load_image(p, {64, 64, 64 * 64}).width == 64);  // limits are inclusive
    CHECK_THROWS_AS(bio::load_image(p, {0, 64, 64}), blip2::value_error);
  }
  SUBCASE("decode_image names what it was given") {
    const std::vector<std::uint8_t> junk = {'G', 'I', 'F', '8', '7', 'a'};
    try {
      (void)bio::decode_image(junk, "s3://bucket/key.gif");
      FAIL("no error");
    } catch (const blip2::format_error& e) {
      CHECK(contains(e.what(), "image 's3://bucket/key.gif'"));
    }
  }
}

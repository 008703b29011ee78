// examples/support/plot_png.hpp: line plots of training curves drawn into an RGB buffer and saved as PNG.
//
// render_plot() draws panels stacked vertically (e.g. the losses above the learning rate), sharing the x
// axis: a frame, light grid lines at "nice" ticks (1, 2, 5 x 10^k; decades on a log axis), tick labels
// in a built-in 5x7 pixel font (with descenders) (ASCII letters, digits and common punctuation), a title per panel and a
// legend (a colour swatch and the series' name) in each panel's top-right corner. Lines are anti-aliased
// (coverage from the distance to each segment). With ema > 0 each series is drawn faintly as recorded and
// boldly smoothed by a bias-corrected exponential moving average (TensorBoard's "smoothing"). Non-finite
// points break a line; on a log axis so do values <= 0.
// A series with smooth = false (the learning rate) is always drawn as recorded.
// training_plot() turns a CSV log (csv_log.hpp: step, loss_*, lr, ...) into the standard two panels.
//
// PNG writing uses stb_image_write (Debian libstb-dev). This header does NOT define
// STB_IMAGE_WRITE_IMPLEMENTATION: link the prebuilt library (-lstb; CMake: pkg_check_modules(STB
// IMPORTED_TARGET stb) and PkgConfig::STB), or define the macro in exactly one .cpp of your program.
//
// Demo support, not part of the installed library (namespace blip2::demo): examples/ is on the include
// path of the programs that use it, #include "support/plot_png.hpp".
#pragma once
#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <stb/stb_image_write.h>

#include "blip2/core/errors.hpp"
#include "blip2/train/csv_log.hpp"

namespace blip2::demo {

struct rgb8 {
  std::uint8_t r = 0, g = 0, b = 0;
  friend constexpr bool operator==(const rgb8&, const rgb8&) = default;
};

// An 8-bit RGB image, row-major, 3 bytes a pixel.
struct rgb_image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> pixels;  // (height, width, 3)

  rgb_image() = default;
  rgb_image(int w, int h, rgb8 fill = {255, 255, 255}) : width(w), height(h) {
    BLIP2_CHECK(w >= 1 && h >= 1, value_error, "rgb_image: size ", w, " x ", h);
    pixels.resize(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    for (std::size_t i = 0; i < pixels.size(); i += 3) {
      pixels[i] = fill.r;
      pixels[i + 1] = fill.g;
      pixels[i + 2] = fill.b;
    }
  }
  bool contains(int x, int y) const { return x >= 0 && y >= 0 && x < width && y < height; }
  rgb8 at(int x, int y) const {
    const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
    return {pixels[i], pixels[i + 1], pixels[i + 2]};
  }
  // Mixes colour c into pixel (x, y) with weight alpha in [0, 1]; outside the image: nothing.
  void blend(int x, int y, rgb8 c, float alpha = 1.0f) {
    if (!contains(x, y) || !(alpha > 0.0f)) return;
    alpha = std::min(alpha, 1.0f);
    const std::size_t i = (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
    const std::uint8_t src[3] = {c.r, c.g, c.b};
    for (int k = 0; k < 3; ++k)
      pixels[i + static_cast<std::size_t>(k)] = static_cast<std::uint8_t>(
          std::lround(pixels[i + static_cast<std::size_t>(k)] * (1.0f - alpha) + src[k] * alpha));
  }
  void fill_rect(int x0, int y0, int x1, int y1, rgb8 c) {  // [x0, x1) x [y0, y1)
    for (int y = std::max(0, y0); y < std::min(height, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(width, x1); ++x) blend(x, y, c);
  }
};

// ---------------------------------------------------------------------------------------------------
// The 5x7 font
// ---------------------------------------------------------------------------------------------------
namespace detail {
struct glyph5x7 {
  char c;
  std::uint8_t rows[9];  // top to bottom, rows 7-8 for descenders (g j p q y); bit 4 = the leftmost column
};
inline constexpr glyph5x7 font5x7[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}},
    {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}},
    {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
    {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}},
    {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}},
    {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}},
    {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04}},
    {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'a', {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}},
    {'b', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E}},
    {'c', {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}},
    {'d', {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F}},
    {'e', {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}},
    {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0x00, 0x00, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}},
    {'j', {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}},
    {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}},
    {'n', {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}},
    {'p', {0x00, 0x00, 0x1E, 0x11, 0x11, 0x11, 0x1E, 0x10, 0x10}},
    {'q', {0x00, 0x00, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x01}},
    {'r', {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}},
    {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}},
    {'v', {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'w', {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}},
    {'x', {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11}},
    {'y', {0x00, 0x00, 0x11, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'z', {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}},
    {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
    {'*', {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'!', {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}},
    {'\'', {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}},
    {'@', {0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0E}},
    {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
};
inline const std::uint8_t* find_glyph(char c) {
  for (const auto& g : font5x7)
    if (g.c == c) return g.rows;
  return nullptr;
}
}  // namespace detail

// The width in pixels of text at scale s (6 s per character, the last without its spacing column).
inline int text_width(std::string_view text, int scale = 1) {
  return text.empty() ? 0 : (static_cast<int>(text.size()) * 6 - 1) * scale;
}
inline int text_height(int scale = 1) { return 7 * scale; }

// Draws text with its top-left corner at (x, y) (descenders reach 2 scaled rows below text_height). Unknown characters are drawn as a hollow box; a space
// is blank. Pixels outside the image are skipped.
inline void draw_text(rgb_image& img, int x, int y, std::string_view text, rgb8 colour, int scale = 1) {
  static constexpr std::uint8_t box[9] = {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F, 0, 0};
  for (char ch : text) {
    const std::uint8_t* rows = ch == ' ' ? nullptr : detail::find_glyph(ch);
    if (ch != ' ' && rows == nullptr) rows = box;
    if (rows)
      for (int r = 0; r < 9; ++r)
        for (int c = 0; c < 5; ++c)
          if (rows[r] & (0x10 >> c)) img.fill_rect(x + c * scale, y + r * scale, x + (c + 1) * scale, y + (r + 1) * scale, colour);
    x += 6 * scale;
  }
}

// ---------------------------------------------------------------------------------------------------
// Plots
// ---------------------------------------------------------------------------------------------------
struct plot_series {
  std::string name;
  std::vector<double> x, y;  // the same length
  int panel = 0;             // which panel (0 = the top one)
  bool has_colour = false;   // false: the next colour of the palette
  rgb8 colour{};
  bool smooth = true;        // with plot_options::ema > 0: draw smoothed (false: exact values, e.g. lr)
};

struct plot_panel {
  std::string title;        // drawn at the panel's top-left
  bool log_y = false;
  bool include_zero = false;  // extend the y range to 0
  double weight = 1.0;        // relative height
};

struct plot_options {
  int width = 900, height = 640;
  std::string title;                // above everything; empty = none
  std::string x_label = "step";     // under the bottom panel
  std::vector<plot_panel> panels;   // empty = as many plain panels as the series use
  double ema = 0.0;                 // smoothing in [0, 1): 0 = raw lines only
  float line_width = 2.0f;
  int font_scale = 2;               // the 5x7 font scaled (2: 10x14 pixels a glyph)
};

// A ten-colour palette (the "tab10" colours).
inline constexpr std::array<rgb8, 10> plot_palette{{{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                                                    {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                                                    {188, 189, 34}, {23, 190, 207}}};

namespace detail {
// A "nice" tick step for about `target` ticks over [lo, hi].
inline double nice_step(double lo, double hi, int target) {
  const double raw = (hi - lo) / std::max(1, target);
  if (!(raw > 0) || !std::isfinite(raw)) return 1.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1.0 : f < 3.0 ? 2.0 : f < 7.0 ? 5.0 : 10.0) * mag;
}
// A tick label: integers plainly, small steps in fixed point, tiny ones in compact scientific ("5e-5").
inline std::string tick_label(double v, double step) {
  char b[48];
  if (std::fabs(v) < step * 1e-6) return "0";
  if (step >= 1.0 && std::fabs(v) < 1e7) {
    std::snprintf(b, sizeof b, "%.0f", v);
  } else if (step >= 1e-3 && std::fabs(v) < 1e7) {
    const int d = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
    std::snprintf(b, sizeof b, "%.*f", d, v);
  } else {
    const int d = std::max(0, static_cast<int>(std::floor(std::log10(std::fabs(v)) + 1e-9) -
                                               std::floor(std::log10(step) + 1e-9)));
    std::snprintf(b, sizeof b, "%.*e", std::min(d, 6), v);
    std::string s = b;  // 1.50e-04 -> 1.5e-4, 2.0e+00 -> 2e+0
    auto e = s.find('e');
    if (e != std::string::npos && s.find('.') != std::string::npos) {
      std::size_t z = e;
      while (z > 0 && s[z - 1] == '0') --z;
      if (z > 0 && s[z - 1] == '.') --z;
      s.erase(z, e - z);
      e = z;
    }
    if (e != std::string::npos) {
      std::size_t k = e + 2;
      while (k + 1 < s.size() && s[k] == '0') s.erase(k, 1);
      if (s[e + 1] == '+') s.erase(e + 1, 1);
    }
    return s;
  }
  return b;
}
struct axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;  // in data units
  double step = 1;            // linear tick step (for labels)
  double to_unit(double v) const {  // [lo, hi] -> [0, 1] (log axes in log10)
    const double t = log ? std::log10(v) : v;
    return (t - lo) / (hi - lo);
  }
};
// An axis over the finite values in [mn, mx] (log10 values when log).
inline axis make_axis(double mn, double mx, bool log, bool include_zero, int target) {
  axis a;
  a.log = log;
  if (!(mn <= mx)) mn = log ? 0.0 : 0.0, mx = log ? 1.0 : 1.0;
  if (log) {
    // mn, mx are log10 values here.
    double lo = std::floor(mn), hi = std::ceil(mx);
    if (hi - lo < 1) hi = lo + 1;
    a.lo = lo;
    a.hi = hi;
    const int decades = static_cast<int>(hi - lo);
    const int every = std::max(1, decades / target);
    for (int k = static_cast<int>(lo); k <= static_cast<int>(hi); k += every) a.ticks.push_back(std::pow(10.0, k));
    if (decades <= 2)
      for (int k = static_cast<int>(lo); k < static_cast<int>(hi); ++k)
        for (double m : {2.0, 5.0}) a.ticks.push_back(m * std::pow(10.0, k));
    std::sort(a.ticks.begin(), a.ticks.end());
    a.step = 0;
    return a;
  }
  if (include_zero) {
    mn = std::min(mn, 0.0);
    mx = std::max(mx, 0.0);
  }
  if (mx - mn < 1e-12 * std::max(1.0, std::fabs(mx))) {
    const double d = mx == 0 ? 1.0 : 0.1 * std::fabs(mx);
    mn -= d;
    mx += d;
  }
  const double pad = 0.04 * (mx - mn);
  a.lo = (include_zero && mn == 0.0) ? 0.0 : mn - pad;
  a.hi = mx + pad;
  a.step = nice_step(a.lo, a.hi, target);
  for (double t = std::ceil(a.lo / a.step) * a.step; t <= a.hi + 1e-9 * a.step; t += a.step)
    a.ticks.push_back(std::fabs(t) < 1e-12 * a.step ? 0.0 : t);
  return a;
}
// Bias-corrected exponential moving average; non-finite values are skipped (and stay non-finite).
inline std::vector<double> ema_smooth(std::span<const double> y, double beta) {
  std::vector<double> out(y.size());
  double m = 0, w = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      out[i] = y[i];
      continue;
    }
    m = beta * m + (1 - beta) * y[i];
    w = beta * w + (1 - beta);
    out[i] = m / w;
  }
  return out;
}
// Anti-aliased polyline into a coverage buffer (max of the segments' coverages), clipped to the buffer.
inline void polyline_coverage(std::vector<float>& cov, int W, int H, std::span<const double> px,
                              std::span<const double> py, float width) {
  const float hw = 0.5f * width;
  auto segment = [&](double x0, double y0, double x1, double y1) {
    const int bx0 = std::max(0, static_cast<int>(std::floor(std::min(x0, x1) - hw - 1)));
    const int bx1 = std::min(W - 1, static_cast<int>(std::ceil(std::max(x0, x1) + hw + 1)));
    const int by0 = std::max(0, static_cast<int>(std::floor(std::min(y0, y1) - hw - 1)));
    const int by1 = std::min(H - 1, static_cast<int>(std::ceil(std::max(y0, y1) + hw + 1)));
    const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int y = by0; y <= by1; ++y)
      for (int x = bx0; x <= bx1; ++x) {
        const double cx = x + 0.5, cy = y + 0.5;
        double t = len2 > 0 ? ((cx - x0) * dx + (cy - y0) * dy) / len2 : 0.0;
        t = std::clamp(t, 0.0, 1.0);
        const double ex = cx - (x0 + t * dx), ey = cy - (y0 + t * dy);
        const float d = static_cast<float>(std::sqrt(ex * ex + ey * ey));
        const float c = std::clamp(hw + 0.5f - d, 0.0f, 1.0f);
        float& v = cov[static_cast<std::size_t>(y) * static_cast<std::size_t>(W) + static_cast<std::size_t>(x)];
        v = std::max(v, c);
      }
  };
  bool have = false;
  double lx = 0, ly = 0;
  for (std::size_t i = 0; i < px.size(); ++i) {
    if (!std::isfinite(px[i]) || !std::isfinite(py[i])) {
      have = false;
      continue;
    }
    // Keep coordinates sane for off-scale values (the buffer clips).
    const double x = std::clamp(px[i], -1e4, 1e4), y = std::clamp(py[i], -1e4, 1e4);
    if (have) segment(lx, ly, x, y);
    else segment(x, y, x, y);  // a lone point is a dot
    lx = x;
    ly = y;
    have = true;
  }
}
inline rgb8 lighten(rgb8 c, float f) {  // towards white by f
  auto m = [&](std::uint8_t v) { return static_cast<std::uint8_t>(std::lround(v + (255 - v) * f)); };
  return {m(c.r), m(c.g), m(c.b)};
}
}  // namespace detail

// Renders the series into an image (see the header comment).
inline rgb_image render_plot(std::span<const plot_series> series, const plot_options& opt) {
  BLIP2_CHECK(opt.width >= 200 && opt.height >= 150, value_error, "render_plot: ", opt.width, " x ", opt.height,
              " is too small (at least 200 x 150)");
  BLIP2_CHECK(opt.ema >= 0 && opt.ema < 1, value_error, "render_plot: ema = ", opt.ema, " must be in [0, 1)");
  for (const auto& s : series)
    BLIP2_CHECK(s.x.size() == s.y.size(), shape_error, "render_plot: series '", s.name, "' has ", s.x.size(),
                " x values and ", s.y.size(), " y values");
  std::vector<plot_panel> panels = opt.panels;
  int max_panel = 0;
  for (const auto& s : series) {
    BLIP2_CHECK(s.panel >= 0, value_error, "render_plot: series '", s.name, "' has panel ", s.panel);
    max_panel = std::max(max_panel, s.panel);
  }
  if (static_cast<int>(panels.size()) <= max_panel) panels.resize(static_cast<std::size_t>(max_panel + 1));

  const int fs = std::max(1, opt.font_scale);
  const rgb8 ink{40, 40, 40}, grid{225, 225, 225}, frame{90, 90, 90};
  rgb_image img(opt.width, opt.height);

  // Shared x axis over every finite x.
  double xmn = std::numeric_limits<double>::infinity(), xmx = -xmn;
  for (const auto& s : series)
    for (double v : s.x)
      if (std::isfinite(v)) xmn = std::min(xmn, v), xmx = std::max(xmx, v);
  const detail::axis xa = detail::make_axis(xmn, xmx, false, false, 8);

  // Per-panel y axes, and the left margin that fits the widest tick label.
  std::vector<detail::axis> ya;
  int label_w = 0;
  for (std::size_t p = 0; p < panels.size(); ++p) {
    double mn = std::numeric_limits<double>::infinity(), mx = -mn;
    for (const auto& s : series) {
      if (s.panel != static_cast<int>(p)) continue;
      for (double v : s.y) {
        if (!std::isfinite(v) || (panels[p].log_y && v <= 0)) continue;
        const double t = panels[p].log_y ? std::log10(v) : v;
        mn = std::min(mn, t);
        mx = std::max(mx, t);
      }
    }
    ya.push_back(detail::make_axis(mn, mx, panels[p].log_y, panels[p].include_zero, 5));
    for (double t : ya.back().ticks)
      label_w = std::max(label_w, text_width(panels[p].log_y ? detail::tick_label(t, t) : detail::tick_label(t, ya.back().step), fs));
  }

  const int pad = 6 * fs;
  const int top0 = opt.title.empty() ? pad : pad + text_height(fs) + pad;
  const int left = pad + label_w + 3 * fs;
  const int right = opt.width - 4 * fs - pad;
  const int xlabel_h = text_height(fs) + 3 * fs;  // tick labels under every panel
  const int bottom_extra = opt.x_label.empty() ? 0 : text_height(fs) + 2 * fs;
  const int avail = opt.height - top0 - bottom_extra - pad;
  double wsum = 0;
  for (const auto& p : panels) wsum += std::max(0.05, p.weight);

  if (!opt.title.empty()) draw_text(img, (opt.width - text_width(opt.title, fs)) / 2, pad, opt.title, ink, fs);

  std::size_t colour_i = 0;
  std::vector<rgb8> colours;
  for (const auto& s : series) colours.push_back(s.has_colour ? s.colour : plot_palette[colour_i++ % plot_palette.size()]);

  int y_cursor = top0;
  for (std::size_t p = 0; p < panels.size(); ++p) {
    const int ph = static_cast<int>(avail * std::max(0.05, panels[p].weight) / wsum);
    const int title_h = panels[p].title.empty() ? 0 : text_height(fs) + 2 * fs;
    const int top = y_cursor + title_h, bot = y_cursor + ph - xlabel_h - 2 * fs;
    y_cursor += ph;
    if (bot - top < 10 || right - left < 10) continue;
    const int W = right - left, H = bot - top;
    const detail::axis& a = ya[p];
    auto X = [&](double v) { return left + xa.to_unit(v) * W; };
    auto Y = [&](double v) { return bot - a.to_unit(v) * H; };
    if (!panels[p].title.empty()) draw_text(img, left, y_cursor - ph, panels[p].title, ink, fs);
    // Grid and tick labels.
    for (double t : a.ticks) {
      const int y = static_cast<int>(std::lround(Y(t)));
      if (y < top || y > bot) continue;
      for (int x = left; x <= right; ++x) img.blend(x, y, grid);
      const std::string l = a.log ? detail::tick_label(t, t) : detail::tick_label(t, a.step);
      draw_text(img, left - 3 * fs - text_width(l, fs), y - text_height(fs) / 2, l, ink, fs);
    }
    for (double t : xa.ticks) {
      const int x = static_cast<int>(std::lround(X(t)));
      if (x < left || x > right) continue;
      for (int y = top; y <= bot; ++y) img.blend(x, y, grid);
      const std::string l = detail::tick_label(t, xa.step);
      draw_text(img, x - text_width(l, fs) / 2, bot + 3 * fs, l, ink, fs);
    }
    // Series.
    std::vector<float> cov(static_cast<std::size_t>(W + 1) * static_cast<std::size_t>(H + 1));
    std::vector<std::pair<std::string, rgb8>> legend;
    for (std::size_t si = 0; si < series.size(); ++si) {
      const auto& s = series[si];
      if (s.panel != static_cast<int>(p)) continue;
      legend.emplace_back(s.name, colours[si]);
      auto draw = [&](std::span<const double> ys, rgb8 c, float width) {
        std::vector<double> px(s.x.size()), py(s.x.size());
        for (std::size_t i = 0; i < s.x.size(); ++i) {
          const bool ok = std::isfinite(ys[i]) && (!a.log || ys[i] > 0);
          px[i] = X(s.x[i]) - left;
          py[i] = ok ? Y(ys[i]) - top : std::nan("");
        }
        std::fill(cov.begin(), cov.end(), 0.0f);
        detail::polyline_coverage(cov, W + 1, H + 1, px, py, width);
        for (int y = 0; y <= H; ++y)
          for (int x = 0; x <= W; ++x)
            img.blend(left + x, top + y, c, cov[static_cast<std::size_t>(y) * static_cast<std::size_t>(W + 1) + static_cast<std::size_t>(x)]);
      };
      if (opt.ema > 0 && s.smooth) {
        draw(s.y, detail::lighten(colours[si], 0.6f), std::max(1.0f, opt.line_width * 0.5f));
        const auto sm = detail::ema_smooth(s.y, opt.ema);
        draw(sm, colours[si], opt.line_width);
      } else {
        draw(s.y, colours[si], opt.line_width);
      }
    }
    // Frame.
    for (int x = left; x <= right; ++x) img.blend(x, top, frame), img.blend(x, bot, frame);
    for (int y = top; y <= bot; ++y) img.blend(left, y, frame), img.blend(right, y, frame);
    // Legend: top-right, one row per series.
    if (!legend.empty()) {
      int lw = 0;
      for (const auto& [n, c] : legend) lw = std::max(lw, text_width(n, fs));
      const int row_h = text_height(fs) + 3 * fs, sw = 5 * fs;
      const int bw = lw + sw + 8 * fs, bh = static_cast<int>(legend.size()) * row_h + 3 * fs;
      const int bx = right - bw - 3 * fs, by = top + 3 * fs;
      img.fill_rect(bx, by, bx + bw, by + bh, {255, 255, 255});
      for (int x = bx; x < bx + bw; ++x) img.blend(x, by, grid), img.blend(x, by + bh - 1, grid);
      for (int y = by; y < by + bh; ++y) img.blend(bx, y, grid), img.blend(bx + bw - 1, y, grid);
      for (std::size_t k = 0; k < legend.size(); ++k) {
        const int ry = by + 3 * fs + static_cast<int>(k) * row_h;
        img.fill_rect(bx + 3 * fs, ry, bx + 3 * fs + sw, ry + text_height(fs), legend[k].second);
        draw_text(img, bx + 6 * fs + sw, ry, legend[k].first, ink, fs);
      }
    }
  }
  if (!opt.x_label.empty())
    draw_text(img, left + (right - left - text_width(opt.x_label, fs)) / 2, opt.height - pad - text_height(fs),
              opt.x_label, ink, fs);
  return img;
}

// Writes img as a PNG (stb_image_write). Throws blip2::error on failure.
inline void write_png(const std::string& path, const rgb_image& img) {
  BLIP2_CHECK(img.width >= 1 && img.height >= 1 &&
                  img.pixels.size() == static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height) * 3,
              value_error, "write_png: malformed image ", img.width, " x ", img.height);
  errno = 0;
  const int ok = stbi_write_png(path.c_str(), img.width, img.height, 3, img.pixels.data(), img.width * 3);
  BLIP2_CHECK(ok != 0, error, "write_png: cannot write ", path, errno ? std::string(": ") + std::strerror(errno) : "");
}

// The standard training plot of a CSV log: every column whose name starts with "loss" in the top panel
// ("loss", 2/3 of the height), "lr" in the bottom one ("learning rate"), against "step" (or the row
// number when there is no step column). Other columns are ignored.
inline rgb_image training_plot(const csv_table& t, plot_options opt = {}) {
  std::vector<double> x;
  if (t.column("step") >= 0) {
    x = t.values("step");
  } else {
    for (std::size_t i = 0; i < t.rows.size(); ++i) x.push_back(static_cast<double>(i + 1));
  }
  std::vector<plot_series> s;
  for (const auto& c : t.columns)
    if (c.rfind("loss", 0) == 0) s.push_back({c, x, t.values(c), 0});
  const bool has_lr = t.column("lr") >= 0;
  if (has_lr) s.push_back({"lr", x, t.values("lr"), 1, true, {70, 70, 70}, false});
  if (opt.panels.empty()) {
    opt.panels.push_back({"loss", false, true, 2.0});
    if (has_lr) opt.panels.push_back({"learning rate", false, true, 1.0});
  }
  return render_plot(s, opt);
}
inline void write_training_plot(const std::string& png_path, const csv_table& t, plot_options opt = {}) {
  write_png(png_path, training_plot(t, std::move(opt)));
}

}  // namespace blip2::demo

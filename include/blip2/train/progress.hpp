// blip2/train/progress.hpp: training progress on stderr, a bar on a terminal, plain lines otherwise.
//
// On a terminal (isatty(fileno(out))) one line is redrawn in place ("\r" ... ESC[K), at most every
// redraw_seconds (the last step always):
//   stage1 [##########-----------]  120/400  itc 1.234  itm 0.456  itg 2.345  lr 1.00e-04  12.3s  ETA 28.7s
// Elsewhere (a pipe, a file, CI) a plain line every `every` steps (default: about 20 lines in all), the
// first and the last step always:
//   stage1 step 120/400 (30%)  itc 1.234  itm 0.456  itg 2.345  lr 1.00e-04  12.3s  ETA 28.7s
// message() prints a line without breaking the bar. `step` counts the steps done (1..total); elapsed time
// is measured from construction (or restart()), ETA = elapsed / step * (total - step).
// The class is not thread-safe: call it from the training thread.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include <sys/ioctl.h>
#include <unistd.h>

#include "blip2/core/errors.hpp"
#include "blip2/core/tensor_view.hpp"

namespace blip2 {

struct progress_value {
  std::string_view name;
  double value;
};

enum class progress_mode { automatic, bar, lines };

struct progress_options {
  std::FILE* out = stderr;
  progress_mode mode = progress_mode::automatic;  // automatic: bar on a terminal, lines elsewhere
  index_t every = 0;            // lines: a line every `every` steps; 0 = max(1, total / 20)
  double redraw_seconds = 0.1;  // bar: the shortest interval between redraws
  int width = 0;                // bar: line width; 0 = the terminal's (else $COLUMNS, else 100)
  std::string label;            // printed first on every line
};

// "0.4s", "12.3s", "2m05s", "1h02m".
inline std::string format_duration(double seconds) {
  char b[32];
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "?";
  if (seconds < 60) {
    std::snprintf(b, sizeof b, "%.1fs", seconds);
  } else if (seconds < 3600) {
    const long s = std::lround(seconds);
    std::snprintf(b, sizeof b, "%ldm%02lds", s / 60, s % 60);
  } else {
    const long m = std::lround(seconds / 60);
    std::snprintf(b, sizeof b, "%ldh%02ldm", m / 60, m % 60);
  }
  return b;
}

class progress_bar {
 public:
  explicit progress_bar(index_t total, progress_options opt = {}) : total_(total), opt_(std::move(opt)) {
    BLIP2_CHECK(total >= 1, value_error, "progress_bar: total = ", total, " < 1");
    if (opt_.out == nullptr) opt_.out = stderr;
    tty_ = opt_.mode == progress_mode::bar ||
           (opt_.mode == progress_mode::automatic && ::isatty(::fileno(opt_.out)) == 1);
    if (opt_.every <= 0) opt_.every = std::max<index_t>(1, total_ / 20);
    restart();
  }
  ~progress_bar() {
    if (drawn_) std::fputc('\n', opt_.out);
  }
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;

  bool is_terminal() const { return tty_; }
  void restart() { start_ = last_draw_ = clock::now(); }
  double elapsed() const { return std::chrono::duration<double>(clock::now() - start_).count(); }

  void update(index_t step, std::initializer_list<progress_value> values,
              double lr = std::numeric_limits<double>::quiet_NaN()) {
    update(step, std::span<const progress_value>(values.begin(), values.size()), lr);
  }
  void update(index_t step, std::span<const progress_value> values,
              double lr = std::numeric_limits<double>::quiet_NaN()) {
    const auto now = clock::now();
    const double t = std::chrono::duration<double>(now - start_).count();
    const bool last = step >= total_;
    if (tty_) {
      if (!last && std::chrono::duration<double>(now - last_draw_).count() < opt_.redraw_seconds && drawn_) return;
      last_draw_ = now;
      const std::string text = status_text(step, values, lr, t);
      const int width = line_width();
      const int room = width - static_cast<int>(opt_.label.size() + text.size()) - 4;
      std::string line = "\r";
      if (!opt_.label.empty()) line += opt_.label + " ";
      if (room >= 10) line += bar(step, std::min(room, 40));
      line += text;
      if (static_cast<int>(line.size()) > width) line.resize(static_cast<std::size_t>(std::max(width, 1)));
      line += "\033[K";
      std::fputs(line.c_str(), opt_.out);
      drawn_ = true;
      if (last) {
        std::fputc('\n', opt_.out);
        drawn_ = false;
      }
    } else {
      if (!(step == 1 || last || step % opt_.every == 0)) return;
      std::string line = opt_.label.empty() ? "" : opt_.label + " ";
      char pct[48];
      std::snprintf(pct, sizeof pct, "step %lld/%lld (%.0f%%)", static_cast<long long>(step),
                    static_cast<long long>(total_), 100.0 * static_cast<double>(step) / static_cast<double>(total_));
      line += pct;
      line += values_text(values, lr, step, t);
      line += '\n';
      std::fputs(line.c_str(), opt_.out);
    }
    std::fflush(opt_.out);
  }

  // Prints a line of text; on a terminal the bar is cleared first and redrawn on the next update.
  void message(std::string_view text) {
    if (tty_ && drawn_) std::fputs("\r\033[K", opt_.out);
    std::fwrite(text.data(), 1, text.size(), opt_.out);
    std::fputc('\n', opt_.out);
    std::fflush(opt_.out);
    drawn_ = false;
  }

  // Ends the bar's line (if one is drawn and the last step was not reached).
  void finish() {
    if (drawn_) std::fputc('\n', opt_.out);
    drawn_ = false;
    std::fflush(opt_.out);
  }

  // The text after the bar: "  120/400  itc 1.234 ...  lr 1.00e-04  12.3s  ETA 28.7s".
  std::string status_text(index_t step, std::span<const progress_value> values, double lr, double seconds) const {
    char b[48];
    std::snprintf(b, sizeof b, " %*lld/%lld", static_cast<int>(std::to_string(total_).size()),
                  static_cast<long long>(step), static_cast<long long>(total_));
    return b + values_text(values, lr, step, seconds);
  }

 private:
  using clock = std::chrono::steady_clock;

  std::string values_text(std::span<const progress_value> values, double lr, index_t step, double seconds) const {
    std::string s;
    char b[64];
    for (const auto& v : values) {
      std::snprintf(b, sizeof b, "  %.*s %.4g", static_cast<int>(v.name.size()), v.name.data(), v.value);
      s += b;
    }
    if (!std::isnan(lr)) {
      std::snprintf(b, sizeof b, "  lr %.2e", lr);
      s += b;
    }
    s += "  " + format_duration(seconds);
    if (step > 0 && step < total_)
      s += "  ETA " + format_duration(seconds / static_cast<double>(step) * static_cast<double>(total_ - step));
    return s;
  }
  std::string bar(index_t step, int cells) const {
    const double f = std::clamp(static_cast<double>(step) / static_cast<double>(total_), 0.0, 1.0);
    const int full = static_cast<int>(f * cells);
    return "[" + std::string(static_cast<std::size_t>(full), '#') + std::string(static_cast<std::size_t>(cells - full), '-') + "]";
  }
  int line_width() const {
    if (opt_.width > 0) return opt_.width;
    struct winsize ws {};
    if (::ioctl(::fileno(opt_.out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    if (const char* c = std::getenv("COLUMNS")) {
      const int w = std::atoi(c);
      if (w > 0) return w;
    }
    return 100;
  }

  index_t total_;
  progress_options opt_;
  bool tty_ = false, drawn_ = false;
  clock::time_point start_, last_draw_;
};

}  // namespace blip2

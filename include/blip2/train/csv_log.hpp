// blip2/train/csv_log.hpp: a CSV log of training (one row per step), and a reader for it.
//
// The file is written in place and FLUSHED AFTER EVERY ROW: a run that is interrupted leaves a valid
// CSV of the steps done, and `tail -f` or a plotting script can follow it live. (A crash in the middle
// of a row can leave that one row incomplete; read_csv() drops a short last row.)
// Numbers are written locale-independently with std::to_chars: integers (|v| < 2^53) without a decimal
// point, other values in their shortest round-trip form (0.1, 1e-05, 2.302585092994046), NaN and infinities
// as nan, inf, -inf.
//
// The stage-1 log has the columns of stage1_columns:
//   step,loss_itc,loss_itm,loss_itg,loss_total,lr,seconds
#pragma once
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"

namespace blip2 {

inline const std::vector<std::string>& stage1_columns() {
  static const std::vector<std::string> c{"step", "loss_itc", "loss_itm", "loss_itg", "loss_total", "lr", "seconds"};
  return c;
}

struct stage1_row {
  long long step = 0;
  double loss_itc = 0, loss_itm = 0, loss_itg = 0, loss_total = 0, lr = 0, seconds = 0;
};

// A number as CSV text (see the header comment).
inline std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char b[64];
  std::to_chars_result r;
  if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0)
    r = std::to_chars(b, b + sizeof b, static_cast<long long>(v));
  else
    r = std::to_chars(b, b + sizeof b, v);
  return std::string(b, r.ptr);
}

class csv_log {
 public:
  csv_log() = default;
  // Creates (truncates) path and writes the header row. Throws blip2::error if it cannot be opened.
  csv_log(std::string path, std::vector<std::string> columns) : path_(std::move(path)), columns_(std::move(columns)) {
    BLIP2_CHECK(!columns_.empty(), value_error, "csv_log: no columns for ", path_);
    f_ = std::fopen(path_.c_str(), "w");
    BLIP2_CHECK(f_ != nullptr, error, "csv_log: cannot open ", path_, " for writing: ", std::strerror(errno));
    std::string h;
    for (std::size_t i = 0; i < columns_.size(); ++i) h += (i ? "," : "") + columns_[i];
    write_line(h);
  }
  // A stage-1 log (stage1_columns).
  static csv_log stage1(std::string path) { return csv_log(std::move(path), stage1_columns()); }

  csv_log(csv_log&& o) noexcept { *this = std::move(o); }
  csv_log& operator=(csv_log&& o) noexcept {
    if (this != &o) {
      close();
      path_ = std::move(o.path_);
      columns_ = std::move(o.columns_);
      f_ = std::exchange(o.f_, nullptr);
      rows_ = o.rows_;
    }
    return *this;
  }
  csv_log(const csv_log&) = delete;
  csv_log& operator=(const csv_log&) = delete;
  ~csv_log() { close(); }

  // One row: exactly one value per column. Written and flushed at once.
  void row(std::span<const double> values) {
    BLIP2_CHECK(f_ != nullptr, error, "csv_log: row() on a closed log (", path_, ")");
    BLIP2_CHECK(values.size() == columns_.size(), shape_error, "csv_log: ", values.size(), " values for ",
                columns_.size(), " columns in ", path_);
    std::string line;
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (i) line += ',';
      line += csv_number(values[i]);
    }
    write_line(line);
    ++rows_;
  }
  void row(std::initializer_list<double> values) { row(std::span<const double>(values.begin(), values.size())); }
  void row(const stage1_row& r) {
    row({static_cast<double>(r.step), r.loss_itc, r.loss_itm, r.loss_itg, r.loss_total, r.lr, r.seconds});
  }

  void close() {
    if (f_) std::fclose(f_);
    f_ = nullptr;
  }
  bool is_open() const { return f_ != nullptr; }
  const std::string& path() const { return path_; }
  const std::vector<std::string>& columns() const { return columns_; }
  long long rows() const { return rows_; }

 private:
  void write_line(const std::string& line) {
    const bool ok = std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fputc('\n', f_) != EOF &&
                    std::fflush(f_) == 0;
    BLIP2_CHECK(ok, error, "csv_log: writing ", path_, " failed: ", std::strerror(errno));
  }

  std::string path_;
  std::vector<std::string> columns_;
  std::FILE* f_ = nullptr;
  long long rows_ = 0;
};

// A numeric CSV table: a header row, then numbers (nan / inf accepted; an empty field reads as NaN).
struct csv_table {
  std::vector<std::string> columns;
  std::vector<std::vector<double>> rows;  // (rows, columns)

  // The index of a column, or -1.
  long column(std::string_view name) const {
    for (std::size_t i = 0; i < columns.size(); ++i)
      if (columns[i] == name) return static_cast<long>(i);
    return -1;
  }
  // A column's values (value_error if there is no such column).
  std::vector<double> values(std::string_view name) const {
    const long c = column(name);
    BLIP2_CHECK(c >= 0, value_error, "csv_table: no column '", name, "'");
    std::vector<double> v;
    v.reserve(rows.size());
    for (const auto& r : rows) v.push_back(r[static_cast<std::size_t>(c)]);
    return v;
  }
};

// Reads a file written by csv_log (or any numeric CSV with a header). A last row with fewer fields than
// the header (an interrupted write) is dropped; any other malformed row throws format_error.
inline csv_table read_csv(const std::string& path) {
  std::ifstream in(path);
  BLIP2_CHECK(in.good(), error, "read_csv: cannot open ", path);
  csv_table t;
  std::string line;
  auto split = [](const std::string& s) {
    std::vector<std::string> f;
    std::size_t a = 0;
    while (true) {
      const std::size_t b = s.find(',', a);
      f.push_back(s.substr(a, b == std::string::npos ? std::string::npos : b - a));
      if (b == std::string::npos) break;
      a = b + 1;
    }
    return f;
  };
  auto strip = [](std::string& s) {
    if (!s.empty() && s.back() == '\r') s.pop_back();
  };
  BLIP2_CHECK(static_cast<bool>(std::getline(in, line)), format_error, "read_csv: ", path, ": empty file, a header was expected");
  strip(line);
  t.columns = split(line);
  std::vector<std::string> lines;
  while (std::getline(in, line)) {
    strip(line);
    if (!line.empty()) lines.push_back(line);
  }
  for (std::size_t li = 0; li < lines.size(); ++li) {
    const auto f = split(lines[li]);
    if (f.size() < t.columns.size() && li + 1 == lines.size()) break;  // interrupted last row
    BLIP2_CHECK(f.size() == t.columns.size(), format_error, "read_csv: ", path, " line ", li + 2, ": ", f.size(),
                " fields, ", t.columns.size(), " expected");
    std::vector<double> r;
    for (const auto& s : f) {
      if (s.empty() || s == "nan" || s == "NaN") {
        r.push_back(std::nan(""));
        continue;
      }
      if (s == "inf" || s == "-inf") {
        r.push_back(s[0] == '-' ? -HUGE_VAL : HUGE_VAL);
        continue;
      }
      double v = 0;
      const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
      BLIP2_CHECK(res.ec == std::errc() && res.ptr == s.data() + s.size(), format_error, "read_csv: ", path, " line ",
                  li + 2, ": '", s, "' is not a number");
      r.push_back(v);
    }
    t.rows.push_back(std::move(r));
  }
  return t;
}

}  // namespace blip2

// blip2/io/mini_json.hpp: a small, strict JSON reader (RFC 8259) that remembers the line of every value,
// for the tokenizer files (vocab.json, tokenizer_config.json, added_tokens.json). Needs only C++20, so the
// tokenizers and the tokenize program build without nlohmann_json (which blip2::io uses for checkpoints).
//
//   const auto doc = blip2::io::json::parse(text, "vocab 'gpt2/vocab.json'");
//   for (const auto& [key, v] : doc.members) ...      // file order, duplicate keys kept (the caller decides)
//   doc.find("add_bos_token")                        // the LAST member of that name (as Python's json keeps)
//
// Refused (format_error "<where>: line L, column C: what was expected"): invalid UTF-8 (the byte offset is
// named), a UTF-8 byte-order mark (Python's json.loads refuses it too), comments, trailing commas, NaN and
// Infinity, single quotes, control characters inside strings, lone UTF-16 surrogates in \u escapes (they
// cannot become UTF-8), nesting deeper than 256, anything after the value. Numbers are kept as written.
#pragma once
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "blip2/core/errors.hpp"
#include "blip2/io/utf8.hpp"

namespace blip2::io::json {

struct value {
  enum class kind { null, boolean, number, string, array, object };
  kind type = kind::null;
  bool boolean = false;
  std::string text;                                    // string: decoded UTF-8; number: the literal
  std::vector<value> items;                            // array
  struct member;                                       // {first: key, second: value}
  std::vector<member> members;                         // object, in file order
  std::size_t line = 0;                                // 1-based line of the value's first character

  // The last member named `key`, or nullptr (also when this is not an object).
  const value* find(std::string_view key) const;
  // The number as a 64-bit integer when it is written as one (no fraction, no exponent) and fits.
  std::optional<std::int64_t> integer() const {
    std::int64_t v = 0;
    if (type != kind::number) return std::nullopt;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
    if (r.ec != std::errc{} || r.ptr != text.data() + text.size()) return std::nullopt;
    return v;
  }
  static constexpr const char* kind_name(kind k) {
    constexpr const char* names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return names[static_cast<int>(k)];
  }
};

// (Defined after value: a std::pair<std::string, value> member of value itself is an incomplete type to clang.)
struct value::member {
  std::string first;
  value second;
};

inline const value* value::find(std::string_view key) const {
  for (auto it = members.rbegin(); it != members.rend(); ++it)
    if (it->first == key) return &it->second;
  return nullptr;
}

namespace detail {

class parser {
 public:
  parser(std::string_view s, std::string_view where) : s_(s), where_(where) {}

  value document() {
    if (const auto bad = utf8_invalid_offset(s_); bad != std::string_view::npos) {
      pos_ = bad;
      fail("invalid UTF-8 at byte offset ", bad, " (JSON text is UTF-8)");
    }
    if (s_.starts_with("\xEF\xBB\xBF")) fail("the file starts with a UTF-8 byte-order mark, which JSON forbids");
    value v = parse_value(0);
    skip_space();
    if (pos_ != s_.size()) fail("unexpected '", s_[pos_], "' after the JSON value");
    return v;
  }

 private:
  std::string_view s_, where_;
  std::size_t pos_ = 0, line_ = 1, line_start_ = 0;

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    blip2::detail::raise<format_error>(where_, ": line ", line_, ", column ", pos_ - line_start_ + 1, ": ",
                                       std::forward<Parts>(parts)...);
  }
  void skip_space() {
    for (; pos_ < s_.size(); ++pos_) {
      const char c = s_[pos_];
      if (c == '\n') {
        ++line_;
        line_start_ = pos_ + 1;
      } else if (c != ' ' && c != '\t' && c != '\r') {
        return;
      }
    }
  }
  bool eat(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const char* what) {
    if (!eat(c)) fail("expected ", what, pos_ < s_.size() ? "" : " before the end of the text");
  }

  value parse_value(int depth) {
    if (depth > 256) fail("nesting deeper than 256");
    skip_space();
    value v;
    v.line = line_;
    if (pos_ >= s_.size()) fail("expected a value before the end of the text");
    const char c = s_[pos_];
    if (c == '{') {
      v.type = value::kind::object;
      ++pos_;
      if (eat('}')) return v;
      do {
        skip_space();
        if (pos_ >= s_.size() || s_[pos_] != '"') fail("expected a string key in double quotes");
        std::string key = parse_string();
        expect(':', "':' after an object key");
        v.members.push_back({std::move(key), parse_value(depth + 1)});
      } while (eat(','));
      expect('}', "',' or '}' in an object");
    } else if (c == '[') {
      v.type = value::kind::array;
      ++pos_;
      if (eat(']')) return v;
      do v.items.push_back(parse_value(depth + 1));
      while (eat(','));
      expect(']', "',' or ']' in an array");
    } else if (c == '"') {
      v.type = value::kind::string;
      v.text = parse_string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.type = value::kind::number;
      v.text = parse_number();
    } else if (s_.substr(pos_, 4) == "true" || s_.substr(pos_, 5) == "false") {
      v.type = value::kind::boolean;
      v.boolean = c == 't';
      pos_ += v.boolean ? 4 : 5;
    } else if (s_.substr(pos_, 4) == "null") {
      pos_ += 4;
    } else {
      fail("expected a value (object, array, string, number, true, false or null)");
    }
    return v;
  }

  std::string parse_number() {
    const std::size_t begin = pos_;
    auto digits = [&] {
      const std::size_t from = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      if (pos_ == from) fail("expected a digit in a number");
    };
    if (s_[pos_] == '-') ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '0') {
      ++pos_;
    } else {
      digits();
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      digits();
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      digits();
    }
    return std::string(s_.substr(begin, pos_ - begin));
  }

  unsigned hex4() {
    unsigned u = 0;
    for (int k = 0; k < 4; ++k, ++pos_) {
      const char h = pos_ < s_.size() ? s_[pos_] : '\0';
      const int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
      if (d < 0) fail("expected four hex digits after \\u");
      u = u * 16 + static_cast<unsigned>(d);
    }
    return u;
  }

  std::string parse_string() {  // at the opening quote
    ++pos_;
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("control character 0x", std::hex, int(c), " inside a string");
      if (c != '\\') {
        out.push_back(c);
        ++pos_;
        continue;
      }
      ++pos_;
      const char e = pos_ < s_.size() ? s_[pos_++] : '\0';
      switch (e) {
        case '"': case '\\': case '/': out.push_back(e); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          char32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate \\u", std::hex, unsigned(cp));
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(pos_, 2) != "\\u") fail("high surrogate \\u", std::hex, unsigned(cp), " without its low half");
            pos_ += 2;
            const char32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate \\u", std::hex, unsigned(cp), " without its low half");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8_append(out, cp);
          break;
        }
        default: --pos_; fail("invalid escape in a string");
      }
    }
  }
};

}  // namespace detail

// Parses `text`; `where` names the source in error messages (e.g. "vocab 'gpt2/vocab.json'").
inline value parse(std::string_view text, std::string_view where) { return detail::parser(text, where).document(); }

}  // namespace blip2::io::json

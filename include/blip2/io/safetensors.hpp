// blip2/io/safetensors.hpp: read and write Hugging Face safetensors files (needs nlohmann_json; POSIX).
//
// The format: 8 bytes, a little-endian u64 N; N bytes of UTF-8 JSON (possibly padded with spaces), an
// object mapping each tensor name to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// plus an optional "__metadata__" object of string to string; then the data buffer, to which the
// offsets are relative. Tensors are dense, row-major and little-endian.
//
// Reading validates the file as the reference implementation (the Rust `safetensors` crate) does, and a
// little more:
//   - the header length is at most 100,000,000 bytes and lies inside the file;
//   - the header is valid UTF-8 and valid JSON, and its top level is an object;
//   - no key appears twice in any JSON object (a JSON parser keeps the last one silently; we refuse);
//   - each dtype is a known one, each shape a list of non-negative integers, each data_offsets a pair
//     of non-negative integers with begin <= end;
//   - numel x element size is computed without overflow and equals end - begin;
//   - sorted by offset, the tensors are contiguous from 0 and cover the data buffer exactly;
//   - "__metadata__", when present and not null, maps strings to strings.
// Every failure throws blip2::format_error naming the file, the tensor (or header offset) and what was
// expected. The file is memory-mapped (read-only, private); nothing is copied until a load_*/read_into.
// Loads convert: F16/BF16/F32/F64 to float or double; BOOL and the integer types (not U64) to int64.
//
// Writing (save_safetensors) builds the header with offsets in insertion order within each element size,
// larger element sizes first (so every tensor is aligned to its element size), pads the header with
// spaces to a multiple of 8, writes to `path.tmp.<pid>`, fsyncs, and renames over `path`: a reader never
// sees a half-written file.
//
//   auto f = blip2::safetensors_file::open("model.safetensors");
//   for (const auto& t : f.tensors()) std::cout << t.name << " " << blip2::dtype_name(t.dtype) << "\n";
//   blip2::host_tensor<float, 2> w = f.load_f32<2>("qformer.layernorm.weight");   // F16/BF16 converted
//   blip2::save_safetensors("out.safetensors", {blip2::safetensors_entry::of("w", w)}, {{"format", "pt"}});
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip2/core/errors.hpp"
#include "blip2/core/host_tensor.hpp"
#include "blip2/core/tensor_view.hpp"
#include "blip2/core/view.hpp"
#include "blip2/io/utf8.hpp"

static_assert(std::endian::native == std::endian::little,
              "blip2/io/safetensors.hpp: safetensors data is little-endian; big-endian hosts are not supported");

namespace blip2 {

// ---- dtypes ----

// Every dtype of the safetensors format (in the reference's alignment order). Loading converts the
// float types and the integer types; the 8-bit float types can only be read as raw bytes.
enum class safetensors_dtype : std::uint8_t {
  boolean, u8, i8, f8_e5m2, f8_e4m3, i16, u16, f16, bf16, i32, u32, f32, f64, i64, u64
};

inline constexpr std::uint64_t safetensors_max_header_size = 100'000'000;

constexpr std::string_view dtype_name(safetensors_dtype t) {
  switch (t) {
    case safetensors_dtype::boolean: return "BOOL";
    case safetensors_dtype::u8: return "U8";
    case safetensors_dtype::i8: return "I8";
    case safetensors_dtype::f8_e5m2: return "F8_E5M2";
    case safetensors_dtype::f8_e4m3: return "F8_E4M3";
    case safetensors_dtype::i16: return "I16";
    case safetensors_dtype::u16: return "U16";
    case safetensors_dtype::f16: return "F16";
    case safetensors_dtype::bf16: return "BF16";
    case safetensors_dtype::i32: return "I32";
    case safetensors_dtype::u32: return "U32";
    case safetensors_dtype::f32: return "F32";
    case safetensors_dtype::f64: return "F64";
    case safetensors_dtype::i64: return "I64";
    case safetensors_dtype::u64: return "U64";
  }
  return "?";
}

// Bytes per element.
constexpr std::size_t dtype_size(safetensors_dtype t) {
  switch (t) {
    case safetensors_dtype::boolean:
    case safetensors_dtype::u8:
    case safetensors_dtype::i8:
    case safetensors_dtype::f8_e5m2:
    case safetensors_dtype::f8_e4m3: return 1;
    case safetensors_dtype::i16:
    case safetensors_dtype::u16:
    case safetensors_dtype::f16:
    case safetensors_dtype::bf16: return 2;
    case safetensors_dtype::i32:
    case safetensors_dtype::u32:
    case safetensors_dtype::f32: return 4;
    case safetensors_dtype::f64:
    case safetensors_dtype::i64:
    case safetensors_dtype::u64: return 8;
  }
  return 0;
}

// "F32" -> f32; nullopt for a name the format does not define (the names are case-sensitive).
inline std::optional<safetensors_dtype> parse_dtype(std::string_view s) {
  for (int i = 0; i <= static_cast<int>(safetensors_dtype::u64); ++i) {
    const auto t = static_cast<safetensors_dtype>(i);
    if (dtype_name(t) == s) return t;
  }
  return std::nullopt;
}

// ---- 16-bit floats ----

// IEEE binary16 bits -> float, exactly (every half is a float): subnormals normalised, inf kept,
// NaN payloads kept (quiet bit included), signed zeros kept.
inline float f16_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits = 0;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf or NaN
  } else if (exp != 0) {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);  // normal: rebias the exponent
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // subnormal: value = mant * 2^-24. Shift mant left until its bit 10 (the implicit bit of a normal
    // number) is set: value = (mant << s) * 2^(-24 - s) = 1.fraction * 2^(-14 - s).
    std::uint32_t s = 0;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      ++s;
    }
    exp = 127 - 14 - s;
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// bfloat16 bits -> float, exactly: the high half of a float.
inline float bf16_bits_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

// ---- what the header says about one tensor ----

struct safetensors_tensor_info {
  std::string name;
  safetensors_dtype dtype = safetensors_dtype::f32;
  std::vector<index_t> shape;       // [] for a 0-d tensor (one element)
  std::uint64_t data_begin = 0;     // byte range [data_begin, data_end) relative to the data buffer
  std::uint64_t data_end = 0;
  std::uint64_t file_offset = 0;    // where the data begins in the file: 8 + N + data_begin

  std::size_t rank() const { return shape.size(); }
  index_t numel() const {
    index_t n = 1;
    for (index_t e : shape) n *= e;  // validated at open: cannot overflow
    return n;
  }
  std::uint64_t nbytes() const { return data_end - data_begin; }
};

namespace detail {
// "(2, 3)" / "()" for a shape held in a vector.
inline std::string vector_shape_string(const std::vector<index_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}
}  // namespace detail

// A tensor whose rank is known only at run time (load_dynamic).
template <class T>
struct dynamic_tensor {
  std::vector<index_t> shape;
  std::vector<T> data;  // row-major
  index_t size() const { return static_cast<index_t>(data.size()); }
};

namespace detail {

inline std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);  // little-endian host (static_assert above)
  return v;
}

template <class Src>
Src load_unaligned(const std::byte* p) {
  Src v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// A read-only private mapping of a whole file; unmapped by the destructor.
class mapped_file {
 public:
  mapped_file() = default;
  explicit mapped_file(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) raise<format_error>("safetensors '", path.string(), "': cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      raise<format_error>("safetensors '", path.string(), "': cannot stat: ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      raise<format_error>("safetensors '", path.string(), "': not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {  // mmap of length 0 fails; an empty file is rejected by the parser instead
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        raise<format_error>("safetensors '", path.string(), "': cannot mmap ", size_, " bytes: ",
                            std::strerror(err));
      }
      addr_ = p;
    }
    ::close(fd);  // the mapping stays valid
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~mapped_file() { unmap(); }

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(addr_), size_}; }

 private:
  void unmap() noexcept {
    if (addr_) ::munmap(addr_, size_);
    addr_ = nullptr;
    size_ = 0;
  }
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

// Which dtypes a load into T accepts, and how they read in an error message.
template <class T>
constexpr bool loads_as(safetensors_dtype d) {
  using enum safetensors_dtype;
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
    return d == f32 || d == f16 || d == bf16 || d == f64;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return d == boolean || d == u8 || d == i8 || d == i16 || d == u16 || d == i32 || d == u32 || d == i64;
  else
    return false;
}
template <class T>
constexpr const char* load_description() {
  if constexpr (std::is_same_v<T, float>) return "float32 (from F32, F16, BF16 or F64)";
  else if constexpr (std::is_same_v<T, double>) return "float64 (from F32, F16, BF16 or F64)";
  else return "int64 (from BOOL, U8, I8, I16, U16, I32, U32 or I64)";
}

// n elements of dtype d at src (any alignment) -> dst, converted; d must satisfy loads_as<T>.
template <class T>
void decode(safetensors_dtype d, const std::byte* src, T* dst, std::size_t n) {
  using enum safetensors_dtype;
  auto each = [&]<class Src>(auto convert) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = convert(load_unaligned<Src>(src + i * sizeof(Src)));
  };
  auto cast = [](auto v) { return static_cast<T>(v); };
  if constexpr (std::is_floating_point_v<T>) {
    switch (d) {
      case f32:
        if constexpr (std::is_same_v<T, float>) {
          if (n) std::memcpy(dst, src, n * sizeof(float));
        } else {
          each.template operator()<float>(cast);
        }
        return;
      case f64:
        if constexpr (std::is_same_v<T, double>) {
          if (n) std::memcpy(dst, src, n * sizeof(double));
        } else {
          each.template operator()<double>(cast);
        }
        return;
      case f16: each.template operator()<std::uint16_t>([](std::uint16_t b) { return static_cast<T>(f16_bits_to_float(b)); }); return;
      case bf16: each.template operator()<std::uint16_t>([](std::uint16_t b) { return static_cast<T>(bf16_bits_to_float(b)); }); return;
      default: break;
    }
  } else {
    switch (d) {
      case boolean: each.template operator()<std::uint8_t>([](std::uint8_t b) { return static_cast<T>(b != 0); }); return;
      case u8: each.template operator()<std::uint8_t>(cast); return;
      case i8: each.template operator()<std::int8_t>(cast); return;
      case i16: each.template operator()<std::int16_t>(cast); return;
      case u16: each.template operator()<std::uint16_t>(cast); return;
      case i32: each.template operator()<std::int32_t>(cast); return;
      case u32: each.template operator()<std::uint32_t>(cast); return;
      case i64:
        if (n) std::memcpy(dst, src, n * sizeof(std::int64_t));
        return;
      default: break;
    }
  }
  raise<value_error>("safetensors decode: dtype ", dtype_name(d), " does not convert to ", load_description<T>());
}

// Calls f(offset) for every element of a view, in row-major order (offset in elements from data()).
template <std::size_t R, class F>
void for_each_offset(const extents_t<R>& extents, const extents_t<R>& strides, F&& f) {
  index_t total = 1;
  for (index_t e : extents) total *= e;
  if (total == 0) return;
  extents_t<R> idx{};
  index_t off = 0;
  for (index_t k = 0; k < total; ++k) {
    f(off);
    for (std::size_t d = R; d-- > 0;) {  // odometer increment, last dimension fastest
      ++idx[d];
      off += strides[d];
      if (idx[d] < extents[d]) break;
      off -= strides[d] * extents[d];
      idx[d] = 0;
    }
  }
}

}  // namespace detail

// ---- reading ----

class safetensors_file {
 public:
  // Maps and validates a file. Throws format_error (file, offset or tensor, what was expected).
  static safetensors_file open(const std::filesystem::path& path) {
    safetensors_file f;
    f.label_ = path.string();
    f.mapping_ = detail::mapped_file(path);
    f.bytes_ = f.mapping_.bytes();
    f.parse();
    return f;
  }

  // Validates a whole file held in memory, without copying it: `bytes` must outlive the result.
  // `label` names it in error messages.
  static safetensors_file from_memory(std::span<const std::byte> bytes, std::string label = "<memory>") {
    safetensors_file f;
    f.label_ = std::move(label);
    f.bytes_ = bytes;
    f.parse();
    return f;
  }

  // A temporary buffer would dangle as soon as the call returns: keep the bytes in a named variable.
  static safetensors_file from_memory(std::vector<std::byte>&&, std::string = {}) = delete;

  safetensors_file(safetensors_file&&) noexcept = default;
  safetensors_file& operator=(safetensors_file&&) noexcept = default;
  safetensors_file(const safetensors_file&) = delete;
  safetensors_file& operator=(const safetensors_file&) = delete;

  const std::string& label() const { return label_; }
  std::uint64_t header_size() const { return header_size_; }  // N, the JSON bytes (with padding)
  std::uint64_t data_offset() const { return 8 + header_size_; }
  std::size_t size() const { return tensors_.size(); }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }

  // Every tensor, ordered by data offset (then name).
  const std::vector<safetensors_tensor_info>& tensors() const { return tensors_; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& t : tensors_) out.push_back(t.name);
    return out;
  }
  const std::map<std::string, std::string, std::less<>>& metadata() const { return metadata_; }

  // Throws format_error when the file has no tensor of that name.
  const safetensors_tensor_info& info(std::string_view name) const {
    auto it = index_.find(name);
    if (it == index_.end()) fail("no tensor named '", name, "' (the file has ", tensors_.size(), " tensors)");
    return tensors_[it->second];
  }

  // The tensor's bytes, zero-copy, whatever its dtype.
  std::span<const std::byte> bytes(std::string_view name) const {
    const auto& t = info(name);
    return bytes_.subspan(static_cast<std::size_t>(t.file_offset), static_cast<std::size_t>(t.nbytes()));
  }

  // Zero-copy view of an F32 tensor of rank R (valid while this object lives). Throws format_error for
  // another dtype, shape_error for another rank, value_error when the data is not 4-byte aligned in
  // memory (a header length that is not a multiple of 4; load_f32 copies instead).
  template <std::size_t R>
  tensor_view<const float, R> view_f32(std::string_view name) const {
    const auto& t = info(name);
    if (t.dtype != safetensors_dtype::f32)
      fail("tensor '", t.name, "' has dtype ", dtype_name(t.dtype), "; view_f32 needs F32 (load_f32 converts)");
    check_rank<R>(t, "view_f32");
    const std::byte* p = bytes_.data() + t.file_offset;
    BLIP2_CHECK(reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0, value_error, "safetensors '", label_,
                "': tensor '", t.name, "' at file offset ", t.file_offset,
                " is not 4-byte aligned in memory, so it cannot be viewed in place; use load_f32");
    return {reinterpret_cast<const float*>(p), to_extents<R>(t.shape)};
  }

  // Copies a tensor into `out` (any tensor blip2::view accepts, host memory, element float, double or
  // std::int64_t, any strides), converting the dtype. Throws shape_error when the shapes differ,
  // format_error when the dtype does not convert.
  template <class X>
  void read_into(std::string_view name, X&& out) const {
    auto v = view(std::forward<X>(out));
    using V = decltype(v);
    using T = typename V::element_type;
    static_assert(!std::is_const_v<T>, "safetensors_file::read_into: the destination must be writable");
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>,
                  "safetensors_file::read_into: the destination's elements must be float, double or std::int64_t");
    static_assert(V::memory_space_type::host_accessible, "safetensors_file::read_into: the destination must be host memory");
    constexpr std::size_t R = V::rank;
    const auto& t = info(name);
    bool same = t.rank() == R;
    for (std::size_t d = 0; same && d < R; ++d) same = t.shape[d] == v.extent(d);
    BLIP2_CHECK(same, shape_error, "safetensors '", label_, "': tensor '", t.name, "' has shape ",
                detail::vector_shape_string(t.shape), " but the destination has shape ", blip2::shape_string(v));
    check_loads<T>(t);
    const std::byte* src = bytes_.data() + t.file_offset;
    const auto n = static_cast<std::size_t>(t.numel());
    if (v.is_contiguous()) {
      detail::decode<T>(t.dtype, src, v.data(), n);
    } else {
      std::vector<T> tmp(n);
      detail::decode<T>(t.dtype, src, tmp.data(), n);
      std::size_t k = 0;
      detail::for_each_offset<R>(v.extents(), v.strides(), [&](index_t off) { v.data()[off] = tmp[k++]; });
    }
  }

  // A new host tensor of rank R (shape_error for another rank), converted to float32 / float64 / int64.
  template <std::size_t R>
  host_tensor<float, R> load_f32(std::string_view name) const { return load<float, R>(name, "load_f32"); }
  template <std::size_t R>
  host_tensor<double, R> load_f64(std::string_view name) const { return load<double, R>(name, "load_f64"); }
  template <std::size_t R>
  host_tensor<std::int64_t, R> load_i64(std::string_view name) const { return load<std::int64_t, R>(name, "load_i64"); }

  // Any rank, known at run time. T is float, double or std::int64_t.
  template <class T>
  dynamic_tensor<T> load_dynamic(std::string_view name) const {
    const auto& t = info(name);
    check_loads<T>(t);
    dynamic_tensor<T> out{t.shape, std::vector<T>(static_cast<std::size_t>(t.numel()))};
    detail::decode<T>(t.dtype, bytes_.data() + t.file_offset, out.data.data(), out.data.size());
    return out;
  }

 private:
  safetensors_file() = default;

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    detail::raise<format_error>("safetensors '", label_, "': ", std::forward<Parts>(parts)...);
  }

  template <std::size_t R>
  static extents_t<R> to_extents(const std::vector<index_t>& shape) {
    extents_t<R> e{};
    for (std::size_t d = 0; d < R; ++d) e[d] = shape[d];
    return e;
  }

  template <std::size_t R>
  void check_rank(const safetensors_tensor_info& t, const char* what) const {
    BLIP2_CHECK(t.rank() == R, shape_error, "safetensors '", label_, "': tensor '", t.name, "' has shape ",
                detail::vector_shape_string(t.shape), " (rank ", t.rank(), ") but ", what, "<", R, "> asks for rank ", R);
  }

  template <class T>
  void check_loads(const safetensors_tensor_info& t) const {
    if (!detail::loads_as<T>(t.dtype))
      fail("tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", which does not convert to ",
           detail::load_description<T>());
  }

  template <class T, std::size_t R>
  host_tensor<T, R> load(std::string_view name, const char* what) const {
    const auto& t = info(name);
    check_rank<R>(t, what);
    host_tensor<T, R> out(to_extents<R>(t.shape));
    read_into(name, out.view());
    return out;
  }

  // ---- validation ----
  using json = nlohmann::json;

  // Parses the header JSON, refusing duplicate keys (in any object) and nesting deeper than 64.
  json parse_header_json(std::string_view text) const {
    struct object_keys {
      std::string where;
      std::set<std::string, std::less<>> keys;
    };
    std::vector<object_keys> open_objects;
    std::string last_key;  // the key whose value is being parsed: names the object in messages
    constexpr int max_depth = 64;
    auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
      switch (event) {
        case json::parse_event_t::object_start:
        case json::parse_event_t::array_start:
          if (depth >= max_depth) fail("header: JSON nested deeper than ", max_depth, " levels");
          if (event == json::parse_event_t::array_start) {
            last_key = "(an array element)";
          } else {
            open_objects.push_back(
                {open_objects.empty() ? std::string("the top-level object") : "the object of key '" + last_key + "'", {}});
          }
          break;
        case json::parse_event_t::key: {
          const auto& k = parsed.get_ref<const std::string&>();
          if (!open_objects.back().keys.insert(k).second)
            fail("header: duplicate key '", k, "' in ", open_objects.back().where,
                 " (a JSON parser would silently keep only the last one)");
          last_key = k;
          break;
        }
        case json::parse_event_t::object_end:
          open_objects.pop_back();
          break;
        default:
          break;
      }
      return true;
    };
    try {
      return json::parse(text.begin(), text.end(), callback);
    } catch (const json::parse_error& e) {
      fail("header is not valid JSON (near file offset ", 8 + (e.byte > 0 ? e.byte - 1 : 0), "): ", e.what());
    } catch (const json::exception& e) {  // e.g. out_of_range 406: a number such as 1e400 overflows a double
      fail("header is not valid JSON: ", e.what());
    }
  }

  static std::uint64_t read_uint(const json& v, bool& ok) {
    ok = v.is_number_unsigned();
    return ok ? v.get<std::uint64_t>() : 0;
  }
  static std::string describe(const json& v) {
    if (v.is_number_integer() && !v.is_number_unsigned()) return "the negative integer " + v.dump();
    if (v.is_number_float()) return "the non-integer " + v.dump();
    return std::string("a JSON ") + v.type_name();
  }

  safetensors_tensor_info parse_entry(const std::string& name, const json& e) const {
    safetensors_tensor_info t;
    t.name = name;
    if (!e.is_object())
      fail("tensor '", name, "': entry is ", describe(e), ", expected an object {\"dtype\", \"shape\", \"data_offsets\"}");
    // dtype
    auto it = e.find("dtype");
    if (it == e.end()) fail("tensor '", name, "': entry has no \"dtype\"");
    if (!it->is_string()) fail("tensor '", name, "': \"dtype\" is ", describe(*it), ", expected a string such as \"F32\"");
    const auto& dt = it->get_ref<const std::string&>();
    auto parsed = parse_dtype(dt);
    if (!parsed)
      fail("tensor '", name, "': unknown dtype \"", dt,
           "\" (expected BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64 or U64)");
    t.dtype = *parsed;
    // shape
    it = e.find("shape");
    if (it == e.end()) fail("tensor '", name, "': entry has no \"shape\"");
    if (!it->is_array()) fail("tensor '", name, "': \"shape\" is ", describe(*it), ", expected a list of non-negative integers");
    t.shape.reserve(it->size());
    for (std::size_t d = 0; d < it->size(); ++d) {
      bool ok = false;
      const std::uint64_t x = read_uint((*it)[d], ok);
      if (!ok) fail("tensor '", name, "': shape[", d, "] is ", describe((*it)[d]), ", expected a non-negative integer");
      if (x > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
        fail("tensor '", name, "': shape[", d, "] = ", x, " overflows a 64-bit signed extent");
      t.shape.push_back(static_cast<index_t>(x));
    }
    // data_offsets
    it = e.find("data_offsets");
    if (it == e.end()) fail("tensor '", name, "': entry has no \"data_offsets\"");
    if (!it->is_array() || it->size() != 2)
      fail("tensor '", name, "': \"data_offsets\" is ", it->is_array() ? "a list of " + std::to_string(it->size()) + " elements" : describe(*it),
           ", expected [begin, end]");
    bool ok_b = false, ok_e = false;
    t.data_begin = read_uint((*it)[0], ok_b);
    t.data_end = read_uint((*it)[1], ok_e);
    if (!ok_b) fail("tensor '", name, "': data_offsets begin is ", describe((*it)[0]), ", expected a non-negative integer");
    if (!ok_e) fail("tensor '", name, "': data_offsets end is ", describe((*it)[1]), ", expected a non-negative integer");
    return t;
  }

  void parse_metadata(const json& m) {
    if (m.is_null()) return;  // the reference treats a null __metadata__ as absent
    if (!m.is_object()) fail("header: \"__metadata__\" is ", describe(m), ", expected an object of string to string");
    for (const auto& [k, v] : m.items()) {
      if (!v.is_string()) fail("header: \"__metadata__\" entry '", k, "' is ", describe(v), ", expected a string");
      metadata_.emplace(k, v.get<std::string>());
    }
  }

  void parse() {
    const std::uint64_t file_size = bytes_.size();
    if (file_size < 8)
      fail("file is ", file_size, " bytes, too short for the 8-byte header length at offset 0");
    const std::uint64_t n = detail::read_u64_le(bytes_.data());
    if (n > safetensors_max_header_size)
      fail("header length ", n, " (file offset 0) exceeds the limit of ", safetensors_max_header_size, " bytes");
    if (n > file_size - 8)
      fail("header length ", n, " (file offset 0) runs past the end of the file: the header would end at offset ", 8 + n,
           " but the file has ", file_size, " bytes (truncated?)");
    header_size_ = n;
    const std::string_view text(reinterpret_cast<const char*>(bytes_.data() + 8), static_cast<std::size_t>(n));
    if (const auto bad = utf8_invalid_offset(text); bad != std::string_view::npos)
      fail("header is not valid UTF-8: byte 0x", hex_byte(static_cast<unsigned char>(text[bad])), " at file offset ",
           8 + bad, " does not start a valid sequence");
    // A raw NUL can never be part of JSON text (inside strings it must be escaped), but nlohmann's lexer
    // takes it for the end of input and would ignore whatever follows.
    if (const auto nul = text.find('\0'); nul != std::string_view::npos)
      fail("header is not valid JSON: NUL byte at file offset ", 8 + nul);
    const json root = parse_header_json(text);
    if (!root.is_object()) fail("header (file offset 8) is ", describe(root), ", expected a JSON object");

    for (const auto& [key, value] : root.items()) {
      if (key == "__metadata__")
        parse_metadata(value);
      else
        tensors_.push_back(parse_entry(key, value));
    }

    // Sorted by offset, the tensors must tile the data buffer exactly.
    std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
      return std::tie(a.data_begin, a.data_end, a.name) < std::tie(b.data_begin, b.data_end, b.name);
    });
    const std::uint64_t data_size = file_size - 8 - n;
    std::uint64_t pos = 0;
    const safetensors_tensor_info* prev = nullptr;
    for (auto& t : tensors_) {
      const auto where = [&] {
        return "tensor '" + t.name + "': data_offsets [" + std::to_string(t.data_begin) + ", " +
               std::to_string(t.data_end) + "]";
      };
      if (t.data_end < t.data_begin) fail(where(), " end before begin");
      if (t.data_begin > pos)
        fail(where(), " leave a gap: bytes [", pos, ", ", t.data_begin, ") of the data buffer belong to no tensor",
             prev ? " (the previous tensor '" + prev->name + "' ends at " + std::to_string(pos) + ")" : std::string());
      if (t.data_begin < pos)
        fail(where(), " overlap the previous tensor '", prev->name, "', which ends at ", pos);
      if (t.data_end > data_size)
        fail(where(), " end past the data buffer, which has ", data_size, " bytes (the tensor would end at file offset ",
             8 + n + t.data_end, ", the file has ", file_size, " bytes: truncated?)");
      // numel x element size, overflow-checked in the order of the dimensions (as the reference does)
      std::uint64_t numel = 1;
      for (index_t d : t.shape) {
        const auto u = static_cast<std::uint64_t>(d);
        if (u != 0 && numel > std::numeric_limits<std::uint64_t>::max() / u)
          fail("tensor '", t.name, "': shape ", detail::vector_shape_string(t.shape), " has more elements than 2^64 (overflow)");
        numel *= u;
      }
      const std::uint64_t esize = dtype_size(t.dtype);
      if (numel > std::numeric_limits<std::uint64_t>::max() / esize)
        fail("tensor '", t.name, "': shape ", detail::vector_shape_string(t.shape), " x ", dtype_name(t.dtype), " overflows 2^64 bytes");
      if (numel * esize != t.nbytes())
        fail(where(), " span ", t.nbytes(), " bytes, but shape ", detail::vector_shape_string(t.shape), " x ", dtype_name(t.dtype),
             " (", esize, " bytes) needs ", numel * esize);
      t.file_offset = 8 + n + t.data_begin;
      pos = t.data_end;
      prev = &t;
    }
    if (pos != data_size)
      fail("the tensors cover ", pos, " bytes of the data buffer, but it has ", data_size, " bytes (",
           data_size - pos, " bytes after the last tensor, from file offset ", 8 + n + pos, ")");
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  }

  static std::string hex_byte(unsigned char b) {
    const char* digits = "0123456789ABCDEF";
    return {digits[b >> 4], digits[b & 15]};
  }

  std::string label_;
  detail::mapped_file mapping_;
  std::span<const std::byte> bytes_;
  std::uint64_t header_size_ = 0;
  std::vector<safetensors_tensor_info> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string, std::less<>> metadata_;
};

// ---- writing ----

namespace detail {
template <class E>
constexpr safetensors_dtype dtype_of() {
  using enum safetensors_dtype;
  if constexpr (std::is_same_v<E, float>) return f32;
  else if constexpr (std::is_same_v<E, double>) return f64;
  else if constexpr (std::is_same_v<E, bool>) return boolean;
  else if constexpr (std::is_integral_v<E> && std::is_signed_v<E>) {
    if constexpr (sizeof(E) == 1) return i8;
    else if constexpr (sizeof(E) == 2) return i16;
    else if constexpr (sizeof(E) == 4) return i32;
    else return i64;
  } else if constexpr (std::is_integral_v<E> && std::is_unsigned_v<E>) {
    if constexpr (sizeof(E) == 1) return u8;
    else if constexpr (sizeof(E) == 2) return u16;
    else if constexpr (sizeof(E) == 4) return u32;
    else return u64;
  } else {
    static_assert(std::is_arithmetic_v<E>,
                  "safetensors_entry::of: elements must be float, double, bool or an integer type (for F16/BF16, "
                  "pass the raw bytes with an explicit dtype)");
    return f32;
  }
}
}  // namespace detail

// One tensor to write: name, dtype, shape and its bytes (little-endian, row-major). It either borrows the
// bytes (they must outlive the save) or owns a copy.
class safetensors_entry {
 public:
  // Borrows `data`. Throws shape_error when its length is not numel(shape) x dtype_size(dtype).
  safetensors_entry(std::string name, safetensors_dtype dtype, std::vector<index_t> shape, std::span<const std::byte> data)
      : name_(std::move(name)), dtype_(dtype), shape_(std::move(shape)), borrowed_(data) {
    check();
  }
  // Owns `data`.
  safetensors_entry(std::string name, safetensors_dtype dtype, std::vector<index_t> shape, std::vector<std::byte> data)
      : name_(std::move(name)), dtype_(dtype), shape_(std::move(shape)), owned_(std::move(data)), owns_(true) {
    check();
  }

  // From any tensor blip2::view accepts: float -> F32, double -> F64, bool -> BOOL, integers by size and
  // sign. Borrows a dense lvalue (or any view); copies a strided one or a temporary tensor.
  template <class X>
    requires tensor<X>
  static safetensors_entry of(std::string name, X&& x) {
    auto v = view(x);
    using V = decltype(v);
    using E = typename V::value_type;
    static_assert(V::memory_space_type::host_accessible, "safetensors_entry::of: the tensor must be in host memory");
    constexpr safetensors_dtype dt = detail::dtype_of<E>();
    std::vector<index_t> shape(v.extents().begin(), v.extents().end());
    const auto nbytes = static_cast<std::size_t>(v.size()) * sizeof(E);
    constexpr bool may_borrow = std::is_lvalue_reference_v<X> || is_tensor_view_v<X>;
    if (may_borrow && v.is_contiguous())
      return {std::move(name), dt, std::move(shape),
              std::span<const std::byte>(reinterpret_cast<const std::byte*>(v.data()), nbytes)};
    std::vector<std::byte> bytes(nbytes);
    if (v.is_contiguous()) {
      if (nbytes) std::memcpy(bytes.data(), v.data(), nbytes);
    } else {
      std::size_t k = 0;
      detail::for_each_offset<V::rank>(v.extents(), v.strides(), [&](index_t off) {
        std::memcpy(bytes.data() + k * sizeof(E), v.data() + off, sizeof(E));
        ++k;
      });
    }
    return {std::move(name), dt, std::move(shape), std::move(bytes)};
  }

  const std::string& name() const { return name_; }
  safetensors_dtype dtype() const { return dtype_; }
  const std::vector<index_t>& shape() const { return shape_; }
  std::span<const std::byte> bytes() const { return owns_ ? std::span<const std::byte>(owned_) : borrowed_; }

 private:
  // Same arithmetic as the reader: element count first (in dimension order), then bytes.
  void check() const {
    constexpr auto max = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t n = 1;
    for (index_t e : shape_) {
      BLIP2_CHECK(e >= 0, shape_error, "safetensors_entry '", name_, "': negative extent in shape ", detail::vector_shape_string(shape_));
      const auto u = static_cast<std::uint64_t>(e);
      BLIP2_CHECK(u == 0 || n <= max / u, shape_error, "safetensors_entry '", name_, "': shape ",
                  detail::vector_shape_string(shape_), " has more elements than 2^64");
      n *= u;
    }
    BLIP2_CHECK(n <= max / dtype_size(dtype_), shape_error, "safetensors_entry '", name_, "': shape ",
                detail::vector_shape_string(shape_), " x ", dtype_name(dtype_), " overflows 2^64 bytes");
    n *= dtype_size(dtype_);
    BLIP2_CHECK(n == bytes().size(), shape_error, "safetensors_entry '", name_, "': shape ", detail::vector_shape_string(shape_), " x ",
                dtype_name(dtype_), " needs ", n, " bytes but ", bytes().size(), " were given");
  }

  std::string name_;
  safetensors_dtype dtype_;
  std::vector<index_t> shape_;
  std::span<const std::byte> borrowed_;
  std::vector<std::byte> owned_;
  bool owns_ = false;
};

using safetensors_metadata = std::map<std::string, std::string, std::less<>>;

namespace detail {

struct safetensors_layout {
  std::string header;  // JSON padded with spaces to a multiple of 8
  std::vector<const safetensors_entry*> order;  // data order
  std::uint64_t data_size = 0;
};

// Checks names and metadata (value_error) and lays the tensors out: larger element sizes first, insertion
// order within a size, so each tensor is aligned to its element size once the header is padded to 8.
inline safetensors_layout layout_safetensors(const std::vector<safetensors_entry>& entries,
                                             const safetensors_metadata& metadata) {
  std::set<std::string_view> seen;
  for (const auto& e : entries) {
    BLIP2_CHECK(e.name() != "__metadata__", value_error, "save_safetensors: a tensor cannot be named \"__metadata__\"");
    BLIP2_CHECK(is_valid_utf8(e.name()), value_error, "save_safetensors: tensor name is not valid UTF-8");
    BLIP2_CHECK(seen.insert(e.name()).second, value_error, "save_safetensors: tensor name '", e.name(), "' appears twice");
  }
  for (const auto& [k, v] : metadata)
    BLIP2_CHECK(is_valid_utf8(k) && is_valid_utf8(v), value_error, "save_safetensors: metadata entry '", k,
                "' is not valid UTF-8");

  safetensors_layout out;
  for (const auto& e : entries) out.order.push_back(&e);
  std::stable_sort(out.order.begin(), out.order.end(),
                   [](const auto* a, const auto* b) { return dtype_size(a->dtype()) > dtype_size(b->dtype()); });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::uint64_t offset = 0;
  for (const auto* e : out.order) {
    const std::uint64_t end = offset + e->bytes().size();
    header[e->name()] = {{"dtype", std::string(dtype_name(e->dtype()))},
                         {"shape", e->shape()},
                         {"data_offsets", {offset, end}}};
    offset = end;
  }
  out.data_size = offset;
  out.header = header.dump();
  out.header.append((8 - out.header.size() % 8) % 8, ' ');
  BLIP2_CHECK(out.header.size() <= safetensors_max_header_size, value_error, "save_safetensors: the header would be ",
              out.header.size(), " bytes, over the format's limit of ", safetensors_max_header_size);
  return out;
}

inline void append_u64_le(std::vector<std::byte>& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
}

}  // namespace detail

// The whole file in memory.
inline std::vector<std::byte> serialize_safetensors(const std::vector<safetensors_entry>& entries,
                                                    const safetensors_metadata& metadata = {}) {
  const auto layout = detail::layout_safetensors(entries, metadata);
  std::vector<std::byte> out;
  out.reserve(8 + layout.header.size() + static_cast<std::size_t>(layout.data_size));
  detail::append_u64_le(out, layout.header.size());
  for (char c : layout.header) out.push_back(static_cast<std::byte>(c));
  for (const auto* e : layout.order) out.insert(out.end(), e->bytes().begin(), e->bytes().end());
  return out;
}

// Writes `path` atomically: `path.tmp.<pid>`, fsync, rename, then fsync of the directory. On failure the
// temporary is removed, `path` is untouched, and format_error says which step failed and why.
inline void save_safetensors(const std::filesystem::path& path, const std::vector<safetensors_entry>& entries,
                             const safetensors_metadata& metadata = {}) {
  const auto layout = detail::layout_safetensors(entries, metadata);
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(::getpid());

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) detail::raise<format_error>("save_safetensors '", path.string(), "': cannot create '", tmp.string(), "': ",
                                          std::strerror(errno));
  auto give_up = [&](const char* step, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    detail::raise<format_error>("save_safetensors '", path.string(), "': ", step, " '", tmp.string(), "' failed: ",
                                std::strerror(err));
  };
  auto write_all = [&](const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ::ssize_t w = ::write(fd, p, std::min<std::size_t>(n, std::size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        give_up("write to", errno);
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  };
  unsigned char len[8];
  const std::uint64_t n = layout.header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xffu);
  write_all(len, 8);
  write_all(layout.header.data(), layout.header.size());
  for (const auto* e : layout.order) write_all(e->bytes().data(), e->bytes().size());
  if (::fsync(fd) != 0) give_up("fsync of", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    detail::raise<format_error>("save_safetensors '", path.string(), "': close of '", tmp.string(), "' failed: ",
                                std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    detail::raise<format_error>("save_safetensors '", path.string(), "': rename from '", tmp.string(), "' failed: ",
                                std::strerror(err));
  }
  // Make the rename itself durable (best effort: some file systems refuse fsync on a directory).
  const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace blip2

// blip2/io/checkpoint_files.hpp: the safetensors files of a Hugging Face checkpoint directory: one
// model.safetensors, or the shards that model.safetensors.index.json lists (as the released
// Salesforce/blip2-* repositories have them). Each file is memory-mapped (io/safetensors.hpp).
#pragma once
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip2/io/safetensors.hpp"

namespace blip2 {

namespace detail {
// Whether a file's tensor has the shape of the view a configuration made for it.
template <class V>
bool same_shape(const safetensors_tensor_info& info, const V& v) {
  bool same = info.rank() == std::remove_cvref_t<V>::rank;
  for (std::size_t d = 0; same && d < info.rank(); ++d) same = info.shape[d] == v.extent(d);
  return same;
}
}  // namespace detail

// The weight files of a checkpoint directory: model.safetensors, or else every shard that
// model.safetensors.index.json names (plain file names inside the directory).
inline std::vector<safetensors_file> open_checkpoint_files(const std::filesystem::path& dir) {
  std::vector<safetensors_file> files;
  const auto single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(single) || !std::filesystem::exists(index)) {
    files.push_back(safetensors_file::open(single));  // also the "no such file" error when neither exists
    return files;
  }
  auto fail = [&](auto&&... parts) { detail::raise<format_error>("checkpoint index '", index.string(), "': ", parts...); };
  std::ifstream in(index, std::ios::binary);
  if (!in) fail("cannot open the file");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("not valid JSON: ", e.what());
  }
  if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object())
    fail("expected an object with a \"weight_map\" object (tensor name -> shard file)");
  std::set<std::string> shards;
  for (const auto& [name, shard] : root["weight_map"].items()) {
    if (!shard.is_string()) fail("weight_map['", name, "'] is not a file name");
    const std::string f = shard.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      fail("weight_map['", name, "'] = \"", f, "\" is not a plain file name in the checkpoint directory");
    shards.insert(f);
  }
  if (shards.empty()) fail("weight_map is empty");
  for (const auto& f : shards) {
    if (!std::filesystem::exists(dir / f))  // a partial download: name the index that wants the shard
      fail("weight_map names the shard \"", f, "\", which is not in the directory '", dir.string(), "'");
    files.push_back(safetensors_file::open(dir / f));
  }
  return files;
}

}  // namespace blip2

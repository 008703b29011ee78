// text_generation_cli.hpp: what caption and vqa share (examples only): their flags, the images or
// precomputed embeddings they read, BLIP-2 OPT generation, and the output (stdout lines, --output JSON).
//
//   --model DIR                 a Blip2ForConditionalGeneration (OPT) directory with the tokenizer files
//   --images FILE... | --inputs IN.safetensors (image_embeds (B, N, E): the ViT is skipped)
//   --beams K                   1: greedy search
//   --max-new-tokens N --min-new-tokens N --length-penalty F --repetition-penalty F
//   --sample --top-p F --temperature F --seed N   nucleus sampling (one beam; top_k 50 as Hugging Face)
//   --num-captions N            sequences per image (beam search: the N best; sampling: N draws)
//   --backend reference|onednn  --output OUT.json
// Output: one text per line on stdout, images in input order (N lines per image with --num-captions N);
// --output writes, atomically, a JSON array with one object per text: {"image", "prompt", "text", "ids",
// "score"} (ids without the prompt and without the EOS).
#pragma once
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <unistd.h>

#include "blip2/generate/generate.hpp"
#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#include "blip2/models/blip2_opt/generate_text.hpp"
#include "cli.hpp"
#ifdef BLIP2_HAS_IMAGE
#include "blip2/io/image.hpp"
#endif

namespace blip2::cli {

struct text_generation_options {
  std::filesystem::path model, inputs, output;
  std::vector<std::string> images;
  std::string prompt;      // the prompt text (vqa: the template filled with the question)
  std::string backend = "reference";
  generation_options gen;  // eos and pad are set from the tokenizer
  bool beams_given = false;
};

// Reads the generation flags shared by caption and vqa; false when `a` is not one of them.
inline bool read_generation_flag(arguments& a, text_generation_options& o) {
  auto& g = o.gen;
  if (a.is("--model")) o.model = a.value();
  else if (a.is("--inputs")) o.inputs = a.value();
  else if (a.is("--output")) o.output = a.value();
  else if (a.is("--images")) for (auto& v : a.values()) o.images.push_back(std::move(v));
  else if (a.is("--backend")) o.backend = backend(a);
  else if (a.is("--beams")) g.num_beams = a.integer<index_t>("a number of beams", 1, 64), o.beams_given = true;
  else if (a.is("--max-new-tokens")) g.max_new_tokens = a.integer<index_t>("a number of tokens", 1, 4096);
  else if (a.is("--min-new-tokens")) g.min_new_tokens = a.integer<index_t>("a number of tokens", 0, 4096);
  else if (a.is("--length-penalty")) g.length_penalty = a.real();
  else if (a.is("--repetition-penalty")) g.repetition_penalty = a.real();
  else if (a.is("--sample")) g.do_sample = true;
  else if (a.is("--top-p")) g.top_p = a.real();
  else if (a.is("--temperature")) g.temperature = a.real();
  else if (a.is("--seed")) g.seed = a.integer<std::uint64_t>("a seed", 0);
  else if (a.is("--num-captions")) g.num_return_sequences = a.integer<index_t>("a number of texts", 1, 64);
  else return false;
  return true;
}

// After parsing: the checks that need no files (usage errors, exit status 2).
inline void check_generation_flags(text_generation_options& o) {
  require(!o.model.empty(), "--model DIR");
  if (!o.inputs.empty() && !o.images.empty()) throw usage_error{"give either --images or --inputs, not both"};
  require(!o.inputs.empty() || !o.images.empty(), "--images FILE... (or --inputs IN.safetensors)");
  // --sample alone means nucleus sampling with one beam (LAVIS before transformers 4.27; today's LAVIS
  // runs Hugging Face's beam-sample with its 5 beams, which is not implemented here)
  if (o.gen.do_sample && !o.beams_given) o.gen.num_beams = 1;
  if (o.gen.min_new_tokens > o.gen.max_new_tokens)
    throw usage_error{"--min-new-tokens " + std::to_string(o.gen.min_new_tokens) + " is more than --max-new-tokens " +
                      std::to_string(o.gen.max_new_tokens)};
  try {
    o.gen.validate();
  } catch (const value_error& e) {
    throw usage_error{e.what()};
  }
}

// image_embeds (B, N, E) of --images (through the checkpoint's ViT) or --inputs.
template <class Be>
dynamic_tensor<float> image_embeddings(Be& be, const text_generation_options& o, index_t E) {
  if (!o.inputs.empty()) {
    const auto file = safetensors_file::open(o.inputs);
    const std::string where = "inputs '" + o.inputs.string() + "'";
    if (!file.contains("image_embeds"))
      detail::raise<value_error>(where, ": no tensor 'image_embeds' (float, shape (B, N, E) with E = ", E, ")");
    auto img = file.load_dynamic<float>("image_embeds");
    if (img.shape.size() != 3 || img.shape[0] < 1 || img.shape[1] < 1 || img.shape[2] != E)
      detail::raise<shape_error>(where, ": 'image_embeds' has shape ", detail::vector_shape_string(img.shape),
                                 ", expected (B, N, E) with B, N >= 1 and E = ", E, " (the Q-Former's encoder width)");
    return img;
  }
#ifdef BLIP2_HAS_IMAGE
  const vision_model<float> vit = load_vision_model<float>(o.model);
  if (vit.config().hidden_size != E)
    detail::raise<value_error>("--model '", o.model.string(), "': vision_config.hidden_size = ", vit.config().hidden_size,
                               " but the Q-Former cross-attends to width ", E);
  const index_t S = vit.config().image_size, B = static_cast<index_t>(o.images.size());
  std::vector<float> pixels(static_cast<std::size_t>(B * 3 * S * S));  // (B, 3, S, S)
  for (index_t b = 0; b < B; ++b) {
    const host_tensor<float, 3> chw =
        io::blip2_eval_transform(io::load_image(o.images[static_cast<std::size_t>(b)]), static_cast<int>(S));
    std::copy(chw.data(), chw.data() + 3 * S * S, pixels.data() + b * 3 * S * S);
  }
  const host_tensor<float, 3> embeds = vision_forward(be, vit, tensor_view<const float, 4>(pixels.data(), {B, 3, S, S}));
  dynamic_tensor<float> out;
  out.shape = {B, embeds.extent(1), embeds.extent(2)};
  out.data.assign(embeds.data(), embeds.data() + embeds.size());
  return out;
#else
  (void)be;
  detail::raise<value_error>("--images: this build has no image decoding (libstb-dev); use --inputs");
#endif
}

// path written whole or not at all: a temporary file beside it, then a rename
inline void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
  const auto tmp = std::filesystem::path(path.string() + ".tmp." + std::to_string(::getpid()));
  std::error_code ec;
  auto fail = [&](const char* what) {
    std::filesystem::remove(tmp, ec);
    detail::raise<value_error>("--output '", path.string(), "': ", what);
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail("cannot create the temporary file beside it");
  for (std::size_t done = 0; done < text.size();) {
    const ::ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      ::close(fd);
      fail("write failed");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) fail("write failed (fsync/close)");
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail("rename failed");
}

// Loads, generates, prints one text per line and writes --output. `what` names the program.
template <class Be>
void run_text_generation(Be& be, text_generation_options o) {
  const auto tok = io::load_opt_tokenizer(o.model);
  const auto m = load_blip2_opt<float>(o.model);
  const auto& cfg = m.llm.config();
  if (static_cast<index_t>(tok.size()) > cfg.vocab_size)
    detail::raise<value_error>("--model '", o.model.string(), "': the tokenizer has ", tok.size(),
                               " tokens but the decoder's embedding has ", cfg.vocab_size,
                               " rows (text_config.vocab_size): vocab.json does not belong to these weights");
  o.gen.eos_token_id = static_cast<std::int32_t>(tok.token_id("\n"));  // LAVIS: generation ends at "\n"
  const auto pad = tok.pad_id();
  if (!pad) detail::raise<value_error>("--model '", o.model.string(), "': the tokenizer has no pad token");
  o.gen.pad_token_id = static_cast<std::int32_t>(*pad);
  const auto ids64 = tok.encode(o.prompt);  // [</s>] + bpe(prompt)
  const std::vector<index_t> prompt_ids(ids64.begin(), ids64.end());
  const auto img = image_embeddings(be, o, m.qformer.config().qformer.encoder_hidden_size);
  const index_t B = img.shape[0];
  const auto out = blip2_opt_generate(be, m, tensor_view<const float, 3>(img.data.data(), {B, img.shape[1], img.shape[2]}),
                                      std::span<const index_t>(prompt_ids), o.gen);
  nlohmann::json j = nlohmann::json::array();
  const index_t n = o.gen.num_return_sequences;
  for (index_t k = 0; k < static_cast<index_t>(out.size()); ++k) {
    const auto& s = out[static_cast<std::size_t>(k)];
    const std::vector<std::int64_t> ids(s.ids.begin(), s.ids.end());
    std::string text = tok.decode(ids, true);
    const auto first = text.find_first_not_of(" \t\n\r\f\v"), last = text.find_last_not_of(" \t\n\r\f\v");
    text = first == std::string::npos ? std::string() : text.substr(first, last - first + 1);  // Python's strip()
    std::printf("%s\n", text.c_str());
    const index_t b = k / n;
    j.push_back({{"image", o.images.empty() ? o.inputs.string() + "[" + std::to_string(b) + "]"
                                            : o.images[static_cast<std::size_t>(b)]},
                 {"prompt", o.prompt},
                 {"text", text},
                 {"ids", s.ids},
                 {"score", s.score}});
  }
  std::fflush(stdout);
  if (!o.output.empty()) write_text_atomically(o.output, j.dump(1) + "\n");
}

}  // namespace blip2::cli

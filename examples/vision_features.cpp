// vision_features: BLIP-2's image embeddings of one image file, as a command-line tool.
//
// What it teaches:
//   - the image path of BLIP-2 from a file to what the Q-Former reads: decode (blip2::io::load_image),
//     the evaluation transform (bicubic resize straight to S x S, /255, CLIP mean/std, CHW:
//     blip2::io::blip2_eval_transform), then the frozen EVA ViT (blip2::vision_forward) to the
//     post-LayerNorm tokens (1, N, E), N = 1 + (S / patch)^2 with the class token first;
//   - loading the encoder from a Hugging Face checkpoint directory by parameter name
//     (blip2::load_vision_model: config.json's vision_config + model.safetensors);
//   - another image size than the checkpoint's (--size 364 for a 224 px model) just works: the position
//     embeddings are interpolated bicubically, as LAVIS does;
//   - the same templated code on the reference backend and on the oneDNN backend;
//   - errors: every library failure is a blip2::error whose message names what and where; the tool
//     prints it and exits with a status, it never crashes on bad input.
//
// Usage:
//   vision_features --model DIR --image FILE [--size S] [--backend reference|onednn] [--bf16]
//                   --output OUT.safetensors
// S defaults to vision_config.image_size; --backend defaults to onednn when built with it; --bf16 asks for
// bfloat16 weights on oneDNN (a clear error where the CPU or the build cannot have them).
// OUT (float32) holds pixel_values (1, 3, S, S) and image_embeds (1, N, E).
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/image.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#ifdef BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#include "blip2/nn/vision_bf16.hpp"
#endif

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: vision_features --model DIR --image FILE [--size S] [--backend reference|onednn] [--bf16] "
    "--output OUT.safetensors";

struct options {
  std::filesystem::path model, image, output;
  int size = 0;  // 0: the checkpoint's image_size
#ifdef BLIP2_HAS_ONEDNN
  std::string backend = "onednn";
#else
  std::string backend = "reference";
#endif
  bool bf16 = false;
};

struct usage_error {
  std::string message;
};

options parse_args(int argc, char** argv) {
  options o;
  bool have_model = false, have_image = false, have_output = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") throw usage_error{};
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw usage_error{std::string(arg) + " needs a value"};
      return argv[++i];
    };
    if (arg == "--model") {
      o.model = value();
      have_model = true;
    } else if (arg == "--image") {
      o.image = value();
      have_image = true;
    } else if (arg == "--output") {
      o.output = value();
      have_output = true;
    } else if (arg == "--size") {
      const std::string v = value();
      char* end = nullptr;
      const long s = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || s < 1 || s > 4096)
        throw usage_error{"--size '" + v + "' is not an image size in [1, 4096]"};
      o.size = static_cast<int>(s);
    } else if (arg == "--backend") {
      o.backend = value();
      if (o.backend != "reference" && o.backend != "onednn")
        throw usage_error{"unknown backend '" + o.backend + "' (expected reference or onednn)"};
#ifndef BLIP2_HAS_ONEDNN
      if (o.backend == "onednn") throw usage_error{"this build has no oneDNN backend"};
#endif
    } else if (arg == "--bf16") {
      o.bf16 = true;
    } else {
      throw usage_error{"unknown argument '" + std::string(arg) + "'"};
    }
  }
  if (!have_model) throw usage_error{"missing --model DIR"};
  if (!have_image) throw usage_error{"missing --image FILE"};
  if (!have_output) throw usage_error{"missing --output OUT.safetensors"};
  if (o.bf16 && o.backend != "onednn") throw usage_error{"--bf16 needs --backend onednn"};
  return o;
}

template <class Be>
int run(Be& be, const options& o) {
  // the encoder first: a bad checkpoint is reported before the image is decoded
  const vision_model<float> vit = load_vision_model<float>(o.model);
  const int size = o.size > 0 ? o.size : static_cast<int>(vit.config().image_size);
  if (size % vit.config().patch_size != 0)
    detail::raise<value_error>("--size ", size, " is not a multiple of the model's patch size ", vit.config().patch_size);

  // file -> (3, S, S) -> (1, 3, S, S)
  const io::rgb_image img = io::load_image(o.image);
  host_tensor<float, 3> chw = io::blip2_eval_transform(img, size);  // (3, S, S)
  const tensor_view<const float, 4> pixels(chw.data(), {1, 3, size, size});

  // (1, 3, S, S) -> (1, N, E)
  const host_tensor<float, 3> embeds = vision_forward(be, vit, pixels);
  save_safetensors(o.output, {safetensors_entry::of("pixel_values", pixels), safetensors_entry::of("image_embeds", embeds)},
                   {{"format", "pt"}});
  std::printf("%s: %d x %d px -> pixel_values (1, 3, %d, %d), image_embeds (1, %ld, %ld) -> %s\n",
              o.image.string().c_str(), img.width, img.height, size, size, static_cast<long>(embeds.extent(1)),
              static_cast<long>(embeds.extent(2)), o.output.string().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    o = parse_args(argc, argv);
  } catch (const usage_error& e) {
    if (!e.message.empty()) std::fprintf(stderr, "vision_features: %s\n", e.message.c_str());
    std::fprintf(stderr, "%s\n", usage_line);
    return 2;
  }
  try {
#ifdef BLIP2_HAS_ONEDNN
    if (o.backend == "onednn") {
      onednn_backend be;
      if (o.bf16) require_bf16_weights(be);  // throws backend_error: see nn/vision_bf16.hpp
      return run(be, o);
    }
#endif
    reference_backend be;
    return run(be, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vision_features: %s\n", e.what());
    return 1;
  }
}

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
//   - the same templated code on the reference backend, the oneDNN backend and the CUDA backend (the model
//     loaded on the host, then copied to the device by blip2::to_backend);
//   - errors: every library failure is a blip2::error whose message names what and where; the tool
//     prints it and exits with a status, it never crashes on bad input.
//
// Usage:
//   vision_features --model DIR --image FILE [--size S] [--backend reference|onednn|cuda] [--bf16]
//                   --output OUT.safetensors
// S defaults to vision_config.image_size; --backend defaults to onednn when built with it; --bf16 asks for
// bfloat16 weights on oneDNN (a clear error where the CPU or the build cannot have them).
// OUT (float32) holds pixel_values (1, 3, S, S) and image_embeds (1, N, E).
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <cstdio>
#include <filesystem>
#include <string>

#include "blip2/io/image.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#include "blip2/models/to_space.hpp"
#include "cli.hpp"
#ifdef BLIP2_HAS_ONEDNN
#include "blip2/models/vit/bf16.hpp"
#endif

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: vision_features --model DIR --image FILE [--size S] [--backend reference|onednn|cuda] [--bf16] "
    "--output OUT.safetensors";

struct options {
  std::filesystem::path model, image, output;
  int size = 0;  // 0: the checkpoint's image_size
  std::string backend = cli::fastest_backend;
  bool bf16 = false;
};

options parse_args(cli::arguments& a) {
  options o;
  while (a.next()) {
    if (a.is("--model")) o.model = a.value();
    else if (a.is("--image")) o.image = a.value();
    else if (a.is("--output")) o.output = a.value();
    else if (a.is("--size")) o.size = a.integer("an image size", 1, 4096);
    else if (a.is("--backend")) o.backend = cli::backend(a, cli::device_backends::cuda);
    else if (a.is("--bf16")) o.bf16 = true;
    else a.unknown();
  }
  cli::require(!o.model.empty(), "--model DIR");
  cli::require(!o.image.empty(), "--image FILE");
  cli::require(!o.output.empty(), "--output OUT.safetensors");
  if (o.bf16 && o.backend != "onednn") throw cli::usage_error{"--bf16 needs --backend onednn"};
  return o;
}

template <class Be>
int run(Be& be, const options& o) {
  if constexpr (requires { require_bf16_weights(be); })
    if (o.bf16) require_bf16_weights(be);  // throws backend_error: see models/vit/bf16.hpp
  // the encoder first: a bad checkpoint is reported before the image is decoded
  const auto vit = to_backend(be, load_vision_model<float>(o.model));
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
  return cli::run_main("vision_features", usage_line, argc, argv, parse_args, [](const options& o) {
    return cli::with_any_backend(o.backend, [&](auto& be) { return run(be, o); });
  });
}

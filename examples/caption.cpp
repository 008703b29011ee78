// caption: BLIP-2 OPT image captioning from image files, as LAVIS's Blip2OPT.generate does it.
//
// What it teaches: the whole stage-2 inference path on a Hugging Face Blip2ForConditionalGeneration
// directory: image -> ViT -> Q-Former queries -> language_projection (the soft prompt), then
// [soft prompt ; [</s>] + bpe("a photo of")] prefilled into OPT's KV cache once per image, beam search
// with Hugging Face's semantics (5 beams, at most 30 new tokens, at least 1, length penalty 1), stopping
// at the id of "\n" as LAVIS does; the new ids decoded without special tokens and stripped.
//
// Usage:
//   caption --model DIR (--images FILE... | --inputs IN.safetensors) [--prompt TEXT] [--beams K]
//           [--max-new-tokens N] [--min-new-tokens N] [--length-penalty F] [--repetition-penalty F]
//           [--sample --top-p F --temperature F --seed N] [--num-captions N] [--backend reference|onednn]
//           [--output OUT.json]
// --prompt "" means no prompt (the ids are then [</s>]); --beams 1 is greedy search. See
// text_generation_cli.hpp for the output. Exit status: 0 success, 1 a failure (message on stderr), 2 a
// usage error.
#include "text_generation_cli.hpp"

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: caption --model DIR (--images FILE... | --inputs IN.safetensors) [--prompt TEXT] [--beams K]\n"
    "               [--max-new-tokens N] [--min-new-tokens N] [--length-penalty F] [--repetition-penalty F]\n"
    "               [--sample --top-p F --temperature F --seed N] [--num-captions N] [--backend reference|onednn]\n"
    "               [--output OUT.json]";

cli::text_generation_options parse_args(cli::arguments& a) {
  cli::text_generation_options o;
  o.gen = lavis_caption_options(-1, -1);  // LAVIS: 5 beams, 30 new tokens at most, 1 at least, length penalty 1
  o.gen.top_p = 0.9;                      // LAVIS generate()'s default, used with --sample
  o.prompt = "a photo of";
  while (a.next()) {
    if (cli::read_generation_flag(a, o)) continue;
    if (a.is("--prompt")) o.prompt = a.value();
    else a.unknown();
  }
  cli::check_generation_flags(o);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("caption", usage_line, argc, argv, parse_args, [](const cli::text_generation_options& o) {
    return cli::with_backend(o.backend, [&](auto& be) { return cli::run_text_generation(be, o); });
  });
}

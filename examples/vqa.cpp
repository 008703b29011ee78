// vqa: BLIP-2 OPT visual question answering from image files, as LAVIS's Blip2OPT.predict_answers does it.
//
// What it teaches: the caption path with another prompt and other limits: the text is
// "Question: {} Short answer:" with the question put in (one question for every image), 5 beams, at most
// 10 new tokens, at least 1, length penalty 0 (answers ranked by their summed log-probability, so short
// answers are not favoured for being short), ending at "\n". The question is used as given (LAVIS's
// pre_question would lowercase it and drop .!"()*#:;~ first).
//
// Usage:
//   vqa --model DIR --images FILE... --question TEXT [--beams K] [--max-new-tokens N] [--min-new-tokens N]
//       [--length-penalty F] [--repetition-penalty F] [--sample --top-p F --temperature F --seed N]
//       [--num-captions N] [--backend reference|onednn] [--output OUT.json]
// (--inputs IN.safetensors with image_embeds works instead of --images.) One answer per line.
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include "text_generation_cli.hpp"

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: vqa --model DIR --images FILE... --question TEXT [--beams K] [--max-new-tokens N] [--min-new-tokens N]\n"
    "           [--length-penalty F] [--repetition-penalty F] [--sample --top-p F --temperature F --seed N]\n"
    "           [--num-captions N] [--backend reference|onednn] [--output OUT.json]";

cli::text_generation_options parse_args(cli::arguments& a) {
  cli::text_generation_options o;
  o.gen = lavis_vqa_options(-1, -1);  // LAVIS: 5 beams, 10 new tokens at most, 1 at least, length penalty 0
  o.gen.top_p = 0.9;
  bool have_question = false;
  std::string question;
  while (a.next()) {
    if (cli::read_generation_flag(a, o)) continue;
    if (a.is("--question")) question = a.value(), have_question = true;
    else a.unknown();
  }
  cli::require(have_question, "--question TEXT");
  o.prompt = "Question: " + question + " Short answer:";
  cli::check_generation_flags(o);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("vqa", usage_line, argc, argv, parse_args, [](const cli::text_generation_options& o) {
    return cli::with_backend(o.backend, [&](auto& be) { return cli::run_text_generation(be, o); });
  });
}

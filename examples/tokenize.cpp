// tokenize: text to BERT token ids, one line of standard input at a time, as a command-line tool.
//
// What it teaches:
//   - loading a vocab.txt with blip2::io::bert_tokenizer::from_vocab_file (a missing [UNK], [CLS], [SEP]
//     or [PAD] is a blip2::format_error naming the file and the token);
//   - encode(): [CLS] word pieces [SEP], truncated to --max-length ids (the two specials included), no
//     padding: the ids BLIP-2's Q-Former takes as input_ids (encode_batch adds the padding and the mask);
//   - --caption: LAVIS's caption pre-processing (blip2::io::lavis_caption: lower-case, . ! " ( ) * # : ; ~
//     to spaces, whitespace runs collapsed, at most 50 words) before tokenizing, as BLIP-2's training and
//     evaluation do;
//   - input is taken as it comes: invalid UTF-8 is replaced and dropped (documented in bert_tokenizer.hpp),
//     never a crash.
//
// Usage:
//   tokenize --vocab VOCAB.txt [--max-length N] [--caption] < lines.txt
// prints, for each input line, its ids separated by spaces. N >= 2, default 512 (BERT's positions).
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <cstdint>
#include <iostream>
#include <stdexcept>
#include <string>

#include "blip2/io/bert_tokenizer.hpp"
#include "cli.hpp"

namespace {

namespace cli = blip2::cli;

constexpr const char* usage_line = "usage: tokenize --vocab VOCAB.txt [--max-length N] [--caption] < lines.txt";
constexpr const char* help_text =
    "Prints the BERT token ids ([CLS] ... [SEP]) of each line of standard input.\n"
    "  --vocab FILE      the vocabulary (vocab.txt of a Hugging Face BERT checkpoint)\n"
    "  --max-length N    at most N ids per line, [CLS] and [SEP] included (default 512)\n"
    "  --caption         apply LAVIS's caption pre-processing first\n";

struct options {
  std::string vocab;
  std::size_t max_length = 512;
  bool caption = false;
};

options parse(cli::arguments& a) {
  options o;
  while (a.next()) {
    if (a.is("--caption")) o.caption = true;
    else if (a.is("--vocab")) o.vocab = a.value();
    else if (a.is("--max-length"))
      o.max_length = a.integer<std::size_t>("a whole number", 2, SIZE_MAX, "room for [CLS] and [SEP]");
    else a.unknown();
  }
  cli::require(!o.vocab.empty(), "--vocab VOCAB.txt");
  return o;
}

int run(const options& opt) {
  const auto tok = blip2::io::bert_tokenizer::from_vocab_file(opt.vocab);
  std::ios::sync_with_stdio(false);
  std::string line, out;
  while (std::getline(std::cin, line)) {
    const auto ids = tok.encode(opt.caption ? blip2::io::lavis_caption(line) : line, opt.max_length);
    out.clear();
    for (std::size_t k = 0; k < ids.size(); ++k) {
      if (k) out.push_back(' ');
      out += std::to_string(ids[k]);
    }
    out.push_back('\n');
    std::cout << out;
  }
  std::cout.flush();
  if (!std::cout) throw std::runtime_error("writing to standard output failed");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("tokenize", usage_line, argc, argv, parse, run, help_text);
}

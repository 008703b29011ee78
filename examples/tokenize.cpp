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
#include <charconv>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

#include "blip2/core/errors.hpp"
#include "blip2/io/bert_tokenizer.hpp"

namespace {

constexpr const char* usage_line = "usage: tokenize --vocab VOCAB.txt [--max-length N] [--caption] < lines.txt";

struct usage_error {
  std::string message;  // empty for --help
};

struct options {
  std::string vocab;
  std::size_t max_length = 512;
  bool caption = false;
};

options parse(int argc, char** argv) {
  options o;
  bool have_vocab = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") throw usage_error{};
    if (arg == "--caption") {
      o.caption = true;
    } else if (arg == "--vocab" || arg == "--max-length") {
      if (i + 1 >= argc) throw usage_error{std::string(arg) + " needs a value"};
      const std::string_view value = argv[++i];
      if (arg == "--vocab") {
        o.vocab = value;
        have_vocab = true;
      } else {
        const auto* end = value.data() + value.size();
        const auto [p, ec] = std::from_chars(value.data(), end, o.max_length);
        if (ec != std::errc{} || p != end || o.max_length < 2)
          throw usage_error{"--max-length needs an integer >= 2 (room for [CLS] and [SEP]), not '" +
                            std::string(value) + "'"};
      }
    } else {
      throw usage_error{"unknown argument '" + std::string(arg) + "'"};
    }
  }
  if (!have_vocab) throw usage_error{"missing --vocab VOCAB.txt"};
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  try {
    opt = parse(argc, argv);
  } catch (const usage_error& e) {
    if (e.message.empty()) {
      std::printf("%s\n", usage_line);
      std::printf("Prints the BERT token ids ([CLS] ... [SEP]) of each line of standard input.\n"
                  "  --vocab FILE      the vocabulary (vocab.txt of a Hugging Face BERT checkpoint)\n"
                  "  --max-length N    at most N ids per line, [CLS] and [SEP] included (default 512)\n"
                  "  --caption         apply LAVIS's caption pre-processing first\n");
      return 0;
    }
    std::fprintf(stderr, "tokenize: %s\n%s\n", e.message.c_str(), usage_line);
    return 2;
  }
  try {
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
    if (!std::cout) {
      std::fprintf(stderr, "tokenize: writing to standard output failed\n");
      return 1;
    }
  } catch (const blip2::error& e) {
    std::fprintf(stderr, "tokenize: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenize: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}

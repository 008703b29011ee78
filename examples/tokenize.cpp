// tokenize: text to token ids (and back), one line of standard input at a time, as a command-line tool.
// Two tokenizers: BERT's WordPiece (the Q-Former's text) and GPT-2's byte-level BPE (OPT's, BLIP-2 stage 2).
//
// What it teaches:
//   - loading a vocab.txt with blip2::io::bert_tokenizer::from_vocab_file (a missing [UNK], [CLS], [SEP]
//     or [PAD] is a blip2::format_error naming the file and the token);
//   - encode(): [CLS] word pieces [SEP], truncated to --max-length ids (the two specials included), no
//     padding: the ids BLIP-2's Q-Former takes as input_ids (encode_batch adds the padding and the mask);
//   - --caption: LAVIS's caption pre-processing (blip2::io::lavis_caption: lower-case, . ! " ( ) * # : ; ~
//     to spaces, whitespace runs collapsed, at most 50 words) before tokenizing, as BLIP-2's training and
//     evaluation do;
//   - with --merges, GPT-2's byte-level BPE (blip2::io::load_byte_bpe_tokenizer: vocab.json + merges.txt,
//     and the tokenizer_config.json beside vocab.json when there is one, so an OPT checkpoint's files give
//     OPT's ids with BOS </s> first; --no-special-tokens leaves BOS out); --decode turns ids back into text
//     (--skip-special-tokens drops </s>, <pad> and the like), as the caption program does with its output;
//   - input is taken as it comes: invalid UTF-8 is replaced (documented in bert_tokenizer.hpp and
//     byte_bpe_tokenizer.hpp), never a crash. A line is what lies between two '\n' (a '\r' stays in it).
//
// Usage:
//   tokenize --vocab VOCAB.txt [--max-length N] [--caption] < lines.txt
//   tokenize --vocab vocab.json --merges merges.txt [--no-special-tokens] < lines.txt
//   tokenize --vocab vocab.json --merges merges.txt --decode [--skip-special-tokens] < ids.txt
// prints, for each input line, its ids separated by spaces (BERT: N >= 2, default 512, BERT's positions),
// or with --decode the text of each line of space-separated ids (a decoded "\n" starts a new output line).
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <cstdint>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "blip2/io/bert_tokenizer.hpp"
#include "blip2/io/opt_tokenizer.hpp"
#include "cli.hpp"

namespace {

namespace cli = blip2::cli;

constexpr const char* usage_line =
    "usage: tokenize --vocab VOCAB.txt [--max-length N] [--caption] < lines.txt\n"
    "       tokenize --vocab vocab.json --merges merges.txt [--no-special-tokens] < lines.txt\n"
    "       tokenize --vocab vocab.json --merges merges.txt --decode [--skip-special-tokens] < ids.txt";
constexpr const char* help_text =
    "Prints the token ids of each line of standard input, or with --decode the text of each line of ids.\n"
    "  --vocab FILE      BERT: vocab.txt; byte-level BPE (GPT-2, OPT): vocab.json\n"
    "  --max-length N    BERT: at most N ids per line, [CLS] and [SEP] included (default 512)\n"
    "  --caption         BERT: apply LAVIS's caption pre-processing first\n"
    "  --merges FILE     byte-level BPE: merges.txt (a tokenizer_config.json beside vocab.json is read too)\n"
    "  --no-special-tokens   byte-level BPE: no BOS (OPT's </s>) before the ids\n"
    "  --decode          byte-level BPE: read ids, print text\n"
    "  --skip-special-tokens with --decode: leave special tokens out of the text\n";

struct options {
  std::string vocab, merges;
  std::size_t max_length = 512;
  bool caption = false, max_length_given = false;
  bool no_special_tokens = false, decode = false, skip_special_tokens = false;
};

options parse(cli::arguments& a) {
  options o;
  while (a.next()) {
    if (a.is("--caption")) o.caption = true;
    else if (a.is("--vocab")) o.vocab = a.value();
    else if (a.is("--merges")) o.merges = a.value();
    else if (a.is("--no-special-tokens")) o.no_special_tokens = true;
    else if (a.is("--decode")) o.decode = true;
    else if (a.is("--skip-special-tokens")) o.skip_special_tokens = true;
    else if (a.is("--max-length")) {
      o.max_length = a.integer<std::size_t>("a whole number", 2, SIZE_MAX, "room for [CLS] and [SEP]");
      o.max_length_given = true;
    } else a.unknown();
  }
  cli::require(!o.vocab.empty(), "--vocab VOCAB.txt (BERT) or --vocab vocab.json --merges merges.txt (BPE)");
  if (o.merges.empty()) {
    if (o.no_special_tokens || o.decode || o.skip_special_tokens)
      throw cli::usage_error{"--no-special-tokens, --decode and --skip-special-tokens need --merges (byte-level BPE)"};
  } else {
    if (o.caption || o.max_length_given) throw cli::usage_error{"--caption and --max-length are BERT's (no --merges)"};
    if (o.decode && o.no_special_tokens) throw cli::usage_error{"--no-special-tokens encodes; --decode decodes"};
    if (o.skip_special_tokens && !o.decode) throw cli::usage_error{"--skip-special-tokens goes with --decode"};
  }
  return o;
}

void print_ids(const std::vector<std::int64_t>& ids, std::string& out) {
  out.clear();
  for (std::size_t k = 0; k < ids.size(); ++k) {
    if (k) out.push_back(' ');
    out += std::to_string(ids[k]);
  }
  out.push_back('\n');
  std::cout << out;
}

// Byte-level BPE: ids per line, or text per line of ids with --decode.
void run_bpe(const options& opt) {
  const auto tok = blip2::io::load_byte_bpe_tokenizer(opt.vocab, opt.merges);
  std::string line, out;
  std::vector<std::int64_t> ids;
  for (std::size_t number = 1; std::getline(std::cin, line); ++number) {
    if (!opt.decode) {
      print_ids(tok.encode(line, !opt.no_special_tokens), out);
      continue;
    }
    ids.clear();
    std::istringstream in(line);
    for (std::string word; in >> word;) {
      std::size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(word, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != word.size()) blip2::detail::raise<blip2::value_error>("line ", number, ": '", word, "' is not an id");
      ids.push_back(id);
    }
    std::cout << tok.decode(ids, opt.skip_special_tokens) << '\n';
  }
}

int run(const options& opt) {
  std::ios::sync_with_stdio(false);
  if (!opt.merges.empty()) {
    run_bpe(opt);
  } else {
    const auto tok = blip2::io::bert_tokenizer::from_vocab_file(opt.vocab);
    std::string line, out;
    while (std::getline(std::cin, line))
      print_ids(tok.encode(opt.caption ? blip2::io::lavis_caption(line) : line, opt.max_length), out);
  }
  std::cout.flush();
  if (!std::cout) throw std::runtime_error("writing to standard output failed");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("tokenize", usage_line, argc, argv, parse, run, help_text);
}

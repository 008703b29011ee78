// retrieve: image-text retrieval with BLIP-2 from a folder of images and a file of captions, as
// BLIP-2's evaluation ranks them (LAVIS compute_sim_matrix).
//
// What it teaches:
//   - the whole path from files to rankings: decode + evaluation transform (io/image.hpp), the frozen ViT
//     (vision_forward), the Q-Former's image pass -> image_feats; captions through LAVIS's pre_caption and
//     the BERT tokenizer, the text pass -> text_feat (eval/rerank_scores.hpp);
//   - BLIP-2's two-stage ranking: ITC (the cosine max over the queries, no temperature) over ALL pairs,
//     then each query's k best candidates re-scored with  ITM class-1 logit (mean over the queries) + ITC
//     and sorted by that (eval/retrieval.hpp: plan_rerank lists the pairs, rerank_recall gives R@K);
//     candidates past k keep their ITC order (LAVIS gives them -100);
//   - streaming: images are decoded and encoded `--batch` at a time; per image only what re-ranking needs
//     is kept: its ViT output image_embeds (N x E floats: 257 x 1408 x 4 B = 1.45 MB at BLIP-2 size) and
//     its image_feats (Q x D = 32 x 256 floats, 32 KB). Keeping the Q-Former's cross-attention K/V instead
//     would cost 6 layers x 2 x 257 x 768 x 4 B = 9.5 MB per image to save recomputing them (two
//     257 x 1408 x 768 products per cross layer, ~6.7 GFLOP, about 1% of the ViT's ~500 GFLOP): they are
//     recomputed once per re-ranking batch instead. 5,000 images (COCO's test split) keep 7.4 GB, plus the
//     (Ni, Nt) ITC matrix (4 B per pair);
//   - errors: every failure is a blip2::error naming the file and what is wrong; exit status 1 (2: usage).
//
// Usage:
//   retrieve --model DIR --images FOLDER --captions FILE [--vocab FILE] [--k 128] [--ground-truth FILE]
//            [--backend reference|onednn] [--batch N] [--max-length L] [--show S] [--output FILE.json]
// DIR holds config.json and model.safetensors with the vision model and the Q-Former's retrieval heads (a
// Blip2ForImageTextRetrieval checkpoint) and, unless --vocab is given, vocab.txt.
// FOLDER: the files ending in .png, .jpg or .jpeg (any case) are the images, in file-name order (byte
//   order); hidden files (a leading '.') and sub-folders are ignored; any other file is SKIPPED with a
//   warning on stderr; an image file that does not decode is an ERROR (exit 1: skipping it would shift the
//   rankings silently). No image at all is an error.
// FILE (captions): UTF-8, one caption a line (\n or \r\n); a final line end is optional; an empty or
//   all-whitespace line is an error naming its line number. Captions go through LAVIS's pre_caption (the
//   blip_caption eval processor: lower-case, . ! " ( ) * # : ; ~ to spaces, 50 words) and are tokenized to at
//   most --max-length tokens with [CLS] and [SEP] (default min(35, max_position_embeddings): 35 is what
//   compute_sim_matrix uses).
// --ground-truth FILE: one line per caption, in the captions' order: the file name (no folder) of the
//   image the caption describes; every image needs at least one caption. Then R@1/5/10 both ways are
//   printed for ITC alone and after re-ranking.
// --batch N: images per ViT call and (image, text) pairs per ITM pass (default 8).
// Output, on stdout: for each caption its best --show (default 5) images, for each image its best captions
// (by index), each with its score, then the R@K lines. --output FILE writes JSON with everything:
//   {"images": [file names], "captions": [text], "k": k, "max_length": L,
//    "score": "itm + itc", "caption_preprocessing": "lavis pre_caption",
//    "text_to_image": [[{"image": i, "score": s, "itm": m, "itc": c}, ...] per caption: its min(k, Ni) best],
//    "image_to_text": [[{"text": j, "score": s, "itm": m, "itc": c}, ...] per image: its min(k, Nt) best],
//    "recall": {"itc": {...}, "itc_itm": {...}} with --ground-truth; each {"text_to_image": {"r1", "r5",
//    "r10", "mean_rank"}, "image_to_text": {...}}, in percent}
// Progress goes to stderr (a bar on a terminal, lines otherwise).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "blip2/eval/rerank_scores.hpp"
#include "blip2/eval/retrieval.hpp"
#include "blip2/io/bert_tokenizer.hpp"
#include "blip2/io/image.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#include "blip2/train/progress.hpp"
#include "cli.hpp"

using namespace blip2;
namespace fs = std::filesystem;

namespace {

constexpr const char* usage_line =
    "usage: retrieve --model DIR --images FOLDER --captions FILE [--vocab FILE] [--k 128] [--ground-truth FILE]\n"
    "                [--backend reference|onednn] [--batch N] [--max-length L] [--show S] [--output FILE.json]";

struct options {
  fs::path model, images, captions, vocab, ground_truth, output;
  index_t k = 128, batch = 8, max_length = 0, show = 5;  // max_length 0: min(35, max_position_embeddings)
  std::string backend = cli::fastest_backend;
};

options parse_args(cli::arguments& a) {
  options o;
  // counts: at least `lo`, at most 2^40
  auto count = [&](index_t lo) { return a.integer<index_t>("a whole number", lo, index_t{1} << 40); };
  while (a.next()) {
    if (a.is("--model")) o.model = a.value();
    else if (a.is("--images")) o.images = a.value();
    else if (a.is("--captions")) o.captions = a.value();
    else if (a.is("--vocab")) o.vocab = a.value();
    else if (a.is("--ground-truth")) o.ground_truth = a.value();
    else if (a.is("--output")) o.output = a.value();
    else if (a.is("--k")) o.k = count(1);
    else if (a.is("--batch")) o.batch = count(1);
    else if (a.is("--max-length")) o.max_length = count(2);
    else if (a.is("--show")) o.show = count(0);
    else if (a.is("--backend")) o.backend = cli::backend(a);
    else a.unknown();
  }
  cli::require(!o.model.empty(), "--model DIR");
  cli::require(!o.images.empty(), "--images FOLDER");
  cli::require(!o.captions.empty(), "--captions FILE");
  return o;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s;
}

// The image files of the folder, sorted by name; other files are skipped with a warning.
std::vector<fs::path> list_images(const fs::path& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec))
    detail::raise<value_error>("--images '", folder.string(), "': not a folder");
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(folder)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || name[0] == '.' || e.is_directory(ec)) continue;
    const std::string ext = lower(e.path().extension().string());
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg")
      out.push_back(e.path());
    else
      std::fprintf(stderr, "retrieve: warning: skipping '%s': not a .png, .jpg or .jpeg file\n", e.path().string().c_str());
  }
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) {
    return a.filename().string() < b.filename().string();
  });
  if (out.empty())
    detail::raise<value_error>("--images '", folder.string(), "': no .png, .jpg or .jpeg file in the folder");
  return out;
}

// Non-empty lines of a text file ("what" names it in errors); \r\n line ends accepted.
std::vector<std::string> read_lines(const fs::path& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::raise<value_error>(what, " '", path.string(), "': cannot open the file");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\r\f\v") == std::string::npos)
      detail::raise<value_error>(what, " '", path.string(), "': line ", lines.size() + 1,
                                 " is empty (one non-empty entry per line)");
    lines.push_back(std::move(line));
    start = end + 1;
  }
  if (lines.empty()) detail::raise<value_error>(what, " '", path.string(), "': the file is empty");
  return lines;
}

struct ranked {
  index_t index;
  double score, itm, itc;
};

nlohmann::json recall_json(const retrieval_result& r) {
  auto dir = [](const recall_at_k& x) {
    return nlohmann::json{{"r1", 100 * x.r1}, {"r5", 100 * x.r5}, {"r10", 100 * x.r10}, {"mean_rank", x.mean_rank}};
  };
  return {{"text_to_image", dir(r.t2i)}, {"image_to_text", dir(r.i2t)}};
}

template <class Be>
int run(Be& be, const options& o) {
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  // ---- inputs first: cheap checks before the model loads ----
  const std::vector<fs::path> files = list_images(o.images);
  const std::vector<std::string> captions = read_lines(o.captions, "--captions");
  const index_t Ni = static_cast<index_t>(files.size()), Nt = static_cast<index_t>(captions.size());
  std::optional<retrieval_ground_truth> gt;
  if (!o.ground_truth.empty()) {
    const auto names = read_lines(o.ground_truth, "--ground-truth");
    if (static_cast<index_t>(names.size()) != Nt)
      detail::raise<value_error>("--ground-truth '", o.ground_truth.string(), "': ", names.size(), " lines for ", Nt,
                                 " captions (one image file name per caption)");
    std::map<std::string, index_t> by_name;
    for (index_t i = 0; i < Ni; ++i) by_name[files[static_cast<std::size_t>(i)].filename().string()] = i;
    std::vector<index_t> t2i;
    for (std::size_t j = 0; j < names.size(); ++j) {
      const auto it = by_name.find(names[j]);
      if (it == by_name.end())
        detail::raise<value_error>("--ground-truth '", o.ground_truth.string(), "': line ", j + 1, " names '", names[j],
                                   "', which is not an image of the folder");
      t2i.push_back(it->second);
    }
    std::vector<bool> seen(static_cast<std::size_t>(Ni));
    for (index_t i : t2i) seen[static_cast<std::size_t>(i)] = true;
    for (index_t i = 0; i < Ni; ++i)
      if (!seen[static_cast<std::size_t>(i)])
        detail::raise<value_error>("--ground-truth '", o.ground_truth.string(), "': image '",
                                   files[static_cast<std::size_t>(i)].filename().string(),
                                   "' has no caption (every image needs at least one)");
    gt = retrieval_ground_truth::from_text_to_image(std::move(t2i), Ni);
  }

  // ---- the model: the ViT and the Q-Former from one checkpoint, the vocabulary ----
  if (!fs::is_directory(o.model)) detail::raise<value_error>("--model '", o.model.string(), "': not a folder");
  const qformer_model<float> qf = load_qformer<float>(o.model);
  const auto& cfg = qf.config();
  if (!cfg.with_text)
    detail::raise<value_error>("--model '", o.model.string(), "': the checkpoint has no text side (no ",
                               "embeddings.word_embeddings.weight): retrieval needs a Blip2ForImageTextRetrieval checkpoint");
  const vision_model<float> vit = load_vision_model<float>(o.model);
  if (vit.config().hidden_size != cfg.qformer.encoder_hidden_size)
    detail::raise<value_error>("--model '", o.model.string(), "': vision_config.hidden_size = ", vit.config().hidden_size,
                               " but qformer_config.encoder_hidden_size = ", cfg.qformer.encoder_hidden_size);
  const auto [tok, max_length] = cli::load_tokenizer(o.model, o.vocab, o.max_length, cfg.qformer);

  // ---- texts: pre_caption, tokenize, text pass -> text_feat (Nt, D) ----
  std::vector<std::string> pre;
  pre.reserve(captions.size());
  for (const auto& c : captions) pre.push_back(io::lavis_caption(c));
  const io::tokenized_batch tb = tok.encode_batch(pre, max_length);
  const index_t T = static_cast<index_t>(tb.length);
  const tensor_view<const index_t, 2> ids(tb.input_ids.data(), {Nt, T}), mask(tb.attention_mask.data(), {Nt, T});
  const host_tensor<float, 2> text_feat = text_features(be, qf, ids, mask);  // (Nt, D)

  // ---- images, streamed: decode + transform + ViT + image pass, --batch at a time ----
  const index_t S = vit.config().image_size, Q = cfg.num_query_tokens, D = cfg.image_text_hidden_size;
  const index_t N = vision_num_tokens(vit.config(), S, S), E = vit.config().hidden_size;
  std::vector<float> embeds(static_cast<std::size_t>(Ni * N * E));  // (Ni, N, E): what re-ranking needs
  host_tensor<float, 3> image_feats({Ni, Q, D});                   // (Ni, Q, D)
  vision_state<float> vst;
  std::vector<float> pixels;
  const auto t_images = clock::now();
  {
    progress_options po;
    po.label = "images";
    progress_bar bar(Ni, po);
    for (index_t i0 = 0; i0 < Ni; i0 += o.batch) {
      const index_t b = std::min(o.batch, Ni - i0);
      pixels.resize(static_cast<std::size_t>(b * 3 * S * S));
      for (index_t x = 0; x < b; ++x) {
        const io::rgb_image img = io::load_image(files[static_cast<std::size_t>(i0 + x)]);
        const host_tensor<float, 3> chw = io::blip2_eval_transform(img, static_cast<int>(S));  // (3, S, S)
        std::copy(chw.data(), chw.data() + 3 * S * S, pixels.data() + x * 3 * S * S);
      }
      const tensor_view<float, 3> out(embeds.data() + i0 * N * E, {b, N, E});  // (b, N, E)
      vision_forward(be, vit, vst, tensor_view<const float, 4>(pixels.data(), {b, 3, S, S}), out, o.batch);
      image_features(be, qf, detail::as_const(out), tensor_view<float, 3>(image_feats.data() + i0 * Q * D, {b, Q, D}));
      bar.update(i0 + b, {});
    }
  }
  const double image_seconds = std::chrono::duration<double>(clock::now() - t_images).count();

  // ---- ITC over all pairs, then the top-k re-scored with ITM + ITC ----
  host_tensor<float, 2> sim({Ni, Nt});  // (Ni, Nt)
  itc_scores(be, detail::as_const(image_feats.view()), detail::as_const(text_feat.view()), sim.view());
  const rerank_plan plan = plan_rerank(detail::as_const(sim.view()), o.k);
  std::vector<float> itm;
  {
    progress_options po;
    po.label = "re-rank pairs";
    progress_bar bar(std::max<index_t>(1, static_cast<index_t>(plan.pairs.size())), po);
    itm = itm_match_scores(
        be, qf, std::span<const std::pair<index_t, index_t>>(plan.pairs),
        [&](index_t i) { return tensor_view<const float, 2>(embeds.data() + i * N * E, {N, E}); }, ids, mask, o.batch,
        [&](index_t done) { bar.update(done, {}); });
  }
  std::vector<double> rescored(plan.pairs.size());
  for (std::size_t p = 0; p < plan.pairs.size(); ++p)
    rescored[p] = static_cast<double>(itm[p]) + static_cast<double>(sim(plan.pairs[p].first, plan.pairs[p].second));

  // ranked lists: each query's k candidates by the new score (ties: lower index first)
  auto rank_list = [&](index_t query, bool t2i) {
    const index_t kk = t2i ? plan.k_t2i : plan.k_i2t;
    const index_t* c = (t2i ? plan.t2i.data() : plan.i2t.data()) + query * kk;
    std::vector<ranked> r;
    for (index_t x = 0; x < kk; ++x) {
      const index_t i = t2i ? c[x] : query, j = t2i ? query : c[x];
      const auto p = static_cast<std::size_t>(plan.pair_index(i, j));
      r.push_back({c[x], rescored[p], static_cast<double>(itm[p]), static_cast<double>(sim(i, j))});
    }
    std::stable_sort(r.begin(), r.end(), [](const ranked& a, const ranked& b) {
      return detail::ranks_before(a.score, a.index, b.score, b.index);
    });
    return r;
  };
  std::vector<std::vector<ranked>> t2i(static_cast<std::size_t>(Nt)), i2t(static_cast<std::size_t>(Ni));
  for (index_t j = 0; j < Nt; ++j) t2i[static_cast<std::size_t>(j)] = rank_list(j, true);
  for (index_t i = 0; i < Ni; ++i) i2t[static_cast<std::size_t>(i)] = rank_list(i, false);

  // ---- report ----
  const double seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  std::printf("retrieve: %lld images, %lld captions, k %lld, %s backend; score = ITM class-1 logit (mean over "
              "queries) + ITC cosine\n",
              static_cast<long long>(Ni), static_cast<long long>(Nt), static_cast<long long>(o.k), Be::name);
  auto image_name = [&](index_t i) { return files[static_cast<std::size_t>(i)].filename().string(); };
  if (o.show > 0) {
    std::printf("text->image (caption: best images, score)\n");
    for (index_t j = 0; j < Nt; ++j) {
      std::printf("  %lld \"%s\":", static_cast<long long>(j), captions[static_cast<std::size_t>(j)].c_str());
      const auto& r = t2i[static_cast<std::size_t>(j)];
      for (std::size_t x = 0; x < r.size() && static_cast<index_t>(x) < o.show; ++x)
        std::printf("  %s %.4f", image_name(r[x].index).c_str(), r[x].score);
      std::printf("\n");
    }
    std::printf("image->text (image: best captions by line index from 0, score)\n");
    for (index_t i = 0; i < Ni; ++i) {
      std::printf("  %s:", image_name(i).c_str());
      const auto& r = i2t[static_cast<std::size_t>(i)];
      for (std::size_t x = 0; x < r.size() && static_cast<index_t>(x) < o.show; ++x)
        std::printf("  %lld %.4f", static_cast<long long>(r[x].index), r[x].score);
      std::printf("\n");
    }
  }
  nlohmann::json recall;
  if (gt) {
    const auto itc_only = retrieval_recall(detail::as_const(sim.view()), *gt);
    const auto reranked = rerank_recall(detail::as_const(sim.view()), plan, std::span<const double>(rescored), *gt);
    std::printf("%s%s", format_retrieval(itc_only, "ITC    ").c_str(), format_retrieval(reranked, "ITC+ITM").c_str());
    recall = {{"itc", recall_json(itc_only)}, {"itc_itm", recall_json(reranked)}};
  }
  std::fprintf(stderr, "retrieve: %lld images encoded in %.2f s (%.2f images/s), %zu pairs re-ranked, %.2f s in all\n",
               static_cast<long long>(Ni), image_seconds, static_cast<double>(Ni) / image_seconds, plan.pairs.size(),
               seconds);

  if (!o.output.empty()) {
    nlohmann::json j;
    j["images"] = nlohmann::json::array();
    for (index_t i = 0; i < Ni; ++i) j["images"].push_back(image_name(i));
    j["captions"] = captions;
    j["k"] = o.k;
    j["max_length"] = max_length;
    j["score"] = "itm + itc";
    j["caption_preprocessing"] = "lavis pre_caption";
    auto lists = [](const std::vector<std::vector<ranked>>& all, const char* key) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& r : all) {
        nlohmann::json q = nlohmann::json::array();
        for (const auto& x : r) q.push_back({{key, x.index}, {"score", x.score}, {"itm", x.itm}, {"itc", x.itc}});
        out.push_back(std::move(q));
      }
      return out;
    };
    j["text_to_image"] = lists(t2i, "image");
    j["image_to_text"] = lists(i2t, "text");
    if (gt) j["recall"] = recall;
    std::ofstream f(o.output, std::ios::binary | std::ios::trunc);
    if (!f) detail::raise<value_error>("--output '", o.output.string(), "': cannot open the file for writing");
    f << j.dump(1) << "\n";
    if (!f.flush()) detail::raise<value_error>("--output '", o.output.string(), "': write failed");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("retrieve", usage_line, argc, argv, parse_args, [](const options& o) {
    return cli::with_backend(o.backend, [&](auto& be) { return run(be, o); });
  });
}

// qformer_features: BLIP-2 image and text features from a Hugging Face checkpoint, as a command-line tool.
//
// What it teaches:
//   - loading a Q-Former from a checkpoint directory (config.json + model.safetensors) with
//     blip2::load_qformer, and reading inputs from / writing results to safetensors files;
//   - the three evaluation passes of BLIP-2 and the heads on top of them:
//       image pass  (queries only, cross-attending to the image)  -> query_output, image_feats
//       text pass   (text only, padding mask)                     -> text_feat (the [CLS] position)
//       joint pass  ([queries ; text], bidirectional, padding)    -> itm_logits
//     and the ITC similarity, the max over the queries of image_feats . text_feat;
//   - the image side is encoded once (encode_image_kv) and shared by every pass that cross-attends;
//   - activations are sequence-major (row p * B + b): the query rows of a pass are its first Q B rows,
//     and position 0 of every text is the first B rows of a text pass;
//   - the same templated code runs on the reference backend, the oneDNN backend and the CUDA backend: the
//     model is loaded on the host and moved once (blip2::to_backend), inputs go to the backend's memory
//     (blip2::to_backend_memory) and results come back (blip2::to_host), each an explicit copy;
//   - evaluation mode: qformer_pass_inputs::training stays false, so there is no dropout;
//   - errors: every library failure is a blip2::error with a message naming what and where; a tool
//     catches it, prints it and exits with a status, it never crashes on bad input.
//
// Usage:
//   qformer_features --model DIR --inputs IN.safetensors --output OUT.safetensors [--backend reference|onednn|cuda]
//   qformer_features --model DIR [--images FILE...] [--texts TEXT...] [--vocab FILE] [--max-length L]
//                    [--raw-texts] --output OUT.safetensors [--backend reference|onednn|cuda]
// IN holds image_embeds (float, (B, N, E)) and optionally input_ids (int64, (B, T)) and attention_mask
// (int64 0/1, (B, T); all ones when absent). OUT (float32) holds
//   query_output (B, Q, C)  image_feats (B, Q, D)                           always
//   text_feat (B, D)  itc_scores (B, B)  itm_logits (B, 2)                  when input_ids is given
// itc_scores[i, j] compares image i with text j; itm_logits[b] scores the pair (image b, text b).
//
// From pixels and words (instead of --inputs; needs a build with blip2::image for --images):
//   --images FILE...  PNG/JPEG files: load_image, blip2_eval_transform to vision_config.image_size, then the
//                     ViT of DIR's model.safetensors (vision_model.*) -> image_embeds (Bi, N, E)
//   --texts TEXT...   sentences: LAVIS's pre_caption (the blip_caption eval processor BLIP-2's retrieval
//                     uses; --raw-texts skips it), then the BERT tokenizer with DIR/vocab.txt (or --vocab),
//                     [CLS] ... [SEP] truncated to --max-length (default min(35, max_position_embeddings):
//                     35 as LAVIS's compute_sim_matrix), padded to the longest -> input_ids, attention_mask
//   Each takes the arguments up to the next one starting with "--". Written: query_output, image_feats with
//   images; text_feat with texts; itc_scores (Bi, Bt) with both; itm_logits only when Bi == Bt (ITM pairs
//   image b with text b: with unequal counts it is undefined and not written, and a note says so).
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/bert_tokenizer.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/models/qformer/heads.hpp"
#include "blip2/models/to_space.hpp"
#include "blip2/nn/transfer.hpp"
#ifdef BLIP2_HAS_IMAGE
#include "blip2/io/image.hpp"
#include "blip2/io/vision_checkpoint.hpp"
#endif
#include "cli.hpp"
#include "precomputed_inputs.hpp"

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: qformer_features --model DIR --inputs IN.safetensors --output OUT.safetensors [--backend reference|onednn|cuda]\n"
    "       qformer_features --model DIR [--images FILE...] [--texts TEXT...] [--vocab FILE] [--max-length L]\n"
    "                        [--raw-texts] --output OUT.safetensors [--backend reference|onednn|cuda]";

struct options {
  std::filesystem::path model, inputs, output, vocab;
  std::string backend = "reference";
  std::vector<std::string> images, texts;  // --images / --texts (instead of --inputs)
  bool have_images = false, have_texts = false, raw_texts = false;
  index_t max_length = 0;  // 0: min(35, max_position_embeddings)
};

options parse_args(cli::arguments& a) {
  options o;
  while (a.next()) {
    if (a.is("--model")) o.model = a.value();
    else if (a.is("--inputs")) o.inputs = a.value();
    else if (a.is("--output")) o.output = a.value();
    else if (a.is("--images") || a.is("--texts")) {
      auto& list = a.is("--images") ? o.images : o.texts;
      for (auto& v : a.values()) list.push_back(std::move(v));
    } else if (a.is("--vocab")) o.vocab = a.value();
    else if (a.is("--raw-texts")) o.raw_texts = true;
    else if (a.is("--max-length"))
      o.max_length = a.integer<index_t>("a whole number", 2, 100000, "room for [CLS] and [SEP]");
    else if (a.is("--backend")) o.backend = cli::backend(a, cli::device_backends::cuda);
    else a.unknown();
  }
  cli::require(!o.model.empty(), "--model DIR");
  const bool have_inputs = !o.inputs.empty();
  o.have_images = !o.images.empty();
  o.have_texts = !o.texts.empty();
  const bool from_files = o.have_images || o.have_texts;
  if (have_inputs && from_files) throw cli::usage_error{"give either --inputs or --images/--texts, not both"};
  cli::require(have_inputs || from_files, "--inputs IN.safetensors (or --images/--texts)");
  if (have_inputs && (!o.vocab.empty() || o.max_length > 0 || o.raw_texts))
    throw cli::usage_error{"--vocab, --max-length and --raw-texts go with --texts, not --inputs"};
#ifndef BLIP2_HAS_IMAGE
  if (o.have_images) throw cli::usage_error{"--images: this build has no image decoder (blip2::image, libstb-dev)"};
#endif
  cli::require(!o.output.empty(), "--output OUT.safetensors");
  return o;
}

// The inputs file, checked before any pass runs: names what is wrong and where.
struct inputs {
  dynamic_tensor<float> image;                  // (B, N, E)
  std::optional<dynamic_tensor<index_t>> ids;   // (B, T)
  std::optional<dynamic_tensor<index_t>> mask;  // (Bt, T)
  index_t B = 0, N = 0, E = 0, T = 0;           // B images (0: none)
  index_t Bt = 0;                               // texts (B with --inputs)
};

inputs read_inputs(const std::filesystem::path& path, const qformer_model_config& cfg) {
  const auto file = safetensors_file::open(path);
  const std::string where = cli::inputs_where(path);
  auto fail = [&](auto&&... parts) { detail::raise<value_error>(where, ": ", parts...); };
  inputs in;
  in.image = cli::read_image_embeds(file, where, cfg);
  in.B = in.image.shape[0], in.N = in.image.shape[1], in.E = in.image.shape[2];
  if (file.contains("input_ids")) {
    in.ids = cli::read_input_ids(file, where, in.B);
    in.T = in.ids->shape[1];
    in.Bt = in.B;
    if (!cfg.with_text)
      fail("has input_ids, but the model has no text side (a Blip2ForConditionalGeneration checkpoint: no ",
           "embeddings.word_embeddings.weight): give image_embeds only");
    in.mask = cli::read_attention_mask(file, where, *in.ids);
  } else if (file.contains("attention_mask")) {
    fail("has attention_mask but no input_ids");
  }
  return in;
}

// --images / --texts: image_embeds through the ViT, input_ids and attention_mask through the tokenizer.
template <class Be>
inputs inputs_from_files(Be& be, const options& opt, const qformer_model_config& cfg) {
  inputs in;
  if (opt.have_texts) {
    if (!cfg.with_text)
      detail::raise<value_error>("--texts: the model has no text side (a Blip2ForConditionalGeneration checkpoint: no ",
                                 "embeddings.word_embeddings.weight)");
    const auto [tok, max_length] = cli::load_tokenizer(opt.model, opt.vocab, opt.max_length, cfg.qformer);
    std::vector<std::string> texts;
    for (const auto& t : opt.texts) texts.push_back(opt.raw_texts ? t : io::lavis_caption(t));
    const io::tokenized_batch b = tok.encode_batch(texts, max_length);
    in.Bt = static_cast<index_t>(b.batch);
    in.T = static_cast<index_t>(b.length);
    in.ids = dynamic_tensor<index_t>{{in.Bt, in.T}, b.input_ids};
    in.mask = dynamic_tensor<index_t>{{in.Bt, in.T}, b.attention_mask};
  }
#ifdef BLIP2_HAS_IMAGE
  if (opt.have_images) {
    const auto vit = to_backend(be, load_vision_model<float>(opt.model));
    if (vit.config().hidden_size != cfg.qformer.encoder_hidden_size)
      detail::raise<value_error>("--model '", opt.model.string(), "': vision_config.hidden_size = ",
                                 vit.config().hidden_size, " but qformer_config.encoder_hidden_size = ",
                                 cfg.qformer.encoder_hidden_size);
    const index_t S = vit.config().image_size, B = static_cast<index_t>(opt.images.size());
    std::vector<float> pixels(static_cast<std::size_t>(B * 3 * S * S));  // (B, 3, S, S)
    for (index_t b = 0; b < B; ++b) {
      const host_tensor<float, 3> chw =
          io::blip2_eval_transform(io::load_image(opt.images[static_cast<std::size_t>(b)]), static_cast<int>(S));
      std::copy(chw.data(), chw.data() + 3 * S * S, pixels.data() + b * 3 * S * S);
    }
    const host_tensor<float, 3> embeds = vision_forward(be, vit, tensor_view<const float, 4>(pixels.data(), {B, 3, S, S}));
    in.B = B, in.N = embeds.extent(1), in.E = embeds.extent(2);
    in.image.shape = {in.B, in.N, in.E};
    in.image.data.assign(embeds.data(), embeds.data() + embeds.size());
  }
#else
  (void)be;
#endif
  return in;
}

template <class Be>
void run(Be& be, const options& opt) {
  using S = typename Be::memory_space;
  const auto m = to_backend(be, load_qformer<float>(opt.model));
  const auto& cfg = m.config();
  const auto in = opt.inputs.empty() ? inputs_from_files(be, opt, cfg) : read_inputs(opt.inputs, cfg);
  const index_t B = in.B, Bt = in.Bt, Q = cfg.num_query_tokens, C = cfg.qformer.hidden_size;
  const index_t D = cfg.image_text_hidden_size;
  std::vector<safetensors_entry> out;

  // image side: cross-attention keys/values of every image, once
  image_kv_state<float, S> kv;
  qformer_pass_state<float, S> image_pass;
  space_tensor<float, 3, S> query_output({B, Q, C});
  projection_state<float, S> img_proj;
  if (B > 0) {
    const auto image = to_backend_memory(be, tensor_view<const float, 3>(in.image.data.data(), {B, in.N, in.E}));
    encode_image_kv(be, m, kv, image.view());

    // image pass: queries only -> query_output (B, Q, C), image_feats = normalize(vision_projection) (B, Q, D)
    qformer_pass_inputs<float, S> ip;
    ip.batch = B;
    ip.queries = true;
    ip.image = &kv;
    qformer_forward(be, m, image_pass, ip);
    // the query rows, batch-major: (B, Q, C)
    copy(be, query_output.view(), detail::as_const(by_batch(row_range(image_pass.output(), 0, Q * B), B)));
    out.push_back(safetensors_entry::of("query_output", to_host(be, query_output.view())));
    // the projections belong to the retrieval heads: a Blip2ForConditionalGeneration checkpoint has none
    if (cfg.with_text) {
      projection_forward(be, img_proj, m.w.vision_projection,
                         tensor_view<const float, 2, S>(query_output.view().data(), {B * Q, C}));
      out.push_back(safetensors_entry::of(
          "image_feats", to_host(be, tensor_view<const float, 3, S>(img_proj.feats.data(), {B, Q, D}))));
    }
  }

  // text side (optional): text pass -> text_feat, ITC scores; joint pass -> ITM logits
  qformer_pass_state<float, S> text_pass, joint_pass;
  projection_state<float, S> txt_proj;
  itc_similarity_state<float, S> itc;
  itm_head_state<float, S> itm;
  if (in.ids) {
    qformer_pass_inputs<float, S> tp;
    tp.batch = Bt;
    tp.input_ids = tensor_view<const index_t, 2>(in.ids->data.data(), {Bt, in.T});
    if (in.mask) tp.attention_mask = tensor_view<const index_t, 2>(in.mask->data.data(), {Bt, in.T});
    qformer_forward(be, m, text_pass, tp);
    // position 0 ([CLS]) of every text: the first Bt rows, (Bt, C)
    projection_forward(be, txt_proj, m.w.text_projection, detail::as_const(row_range(text_pass.output(), 0, Bt)));
    out.push_back(safetensors_entry::of("text_feat", to_host(be, txt_proj.feats)));
    if (B > 0) {
      itc_similarity_forward(be, itc, tensor_view<const float, 3, S>(img_proj.feats.data(), {B, Q, D}),
                             detail::as_const(txt_proj.feats));
      out.push_back(safetensors_entry::of("itc_scores", to_host(be, itc.sim)));
    }
    if (B > 0 && B == Bt) {
      qformer_pass_inputs<float, S> jp = tp;  // [queries ; text], bidirectional, text padding, image b with text b
      jp.queries = true;
      jp.image = &kv;
      jp.attention = qformer_attention::bidirectional;
      qformer_forward(be, m, joint_pass, jp);
      itm_head_forward(be, itm, m.w.itm_head, detail::as_const(row_range(joint_pass.output(), 0, Q * B)), B);
      out.push_back(safetensors_entry::of("itm_logits", to_host(be, itm.logits)));
    } else if (B > 0) {
      std::printf("qformer_features: note: %lld images and %lld texts: itm_logits (image b with text b) needs equal "
                  "counts and is not written\n", static_cast<long long>(B), static_cast<long long>(Bt));
    }
  }
  save_safetensors(opt.output, out, {{"format", "pt"}, {"backend", Be::name}});
  std::printf("qformer_features: %s backend, %lld image(s) and %lld text(s) -> %s\n", Be::name,
              static_cast<long long>(B), static_cast<long long>(Bt), opt.output.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("qformer_features", usage_line, argc, argv, parse_args, [](const options& opt) {
    return cli::with_any_backend(opt.backend, [&](auto& be) { return run(be, opt); });
  });
}

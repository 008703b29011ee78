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
//   - the same templated code runs on the reference backend and on the oneDNN backend;
//   - evaluation mode: qformer_pass_inputs::training stays false, so there is no dropout;
//   - errors: every library failure is a blip2::error with a message naming what and where; a tool
//     catches it, prints it and exits with a status, it never crashes on bad input.
//
// Usage:
//   qformer_features --model DIR --inputs IN.safetensors --output OUT.safetensors [--backend reference|onednn]
// IN holds image_embeds (float, (B, N, E)) and optionally input_ids (int64, (B, T)) and attention_mask
// (int64 0/1, (B, T); all ones when absent). OUT (float32) holds
//   query_output (B, Q, C)  image_feats (B, Q, D)                           always
//   text_feat (B, D)  itc_scores (B, B)  itm_logits (B, 2)                  when input_ids is given
// itc_scores[i, j] compares image i with text j; itm_logits[b] scores the pair (image b, text b).
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/nn/qformer_heads.hpp"
#ifdef BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: qformer_features --model DIR --inputs IN.safetensors --output OUT.safetensors [--backend reference|onednn]";

struct options {
  std::filesystem::path model, inputs, output;
  std::string backend = "reference";
};

struct usage_error {
  std::string message;
};

// --name VALUE pairs; anything else is a usage error.
options parse_args(int argc, char** argv) {
  options o;
  bool have_model = false, have_inputs = false, have_output = false;
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
    } else if (arg == "--inputs") {
      o.inputs = value();
      have_inputs = true;
    } else if (arg == "--output") {
      o.output = value();
      have_output = true;
    } else if (arg == "--backend") {
      o.backend = value();
      if (o.backend != "reference" && o.backend != "onednn")
        throw usage_error{"unknown backend '" + o.backend + "' (expected reference or onednn)"};
    } else {
      throw usage_error{"unknown argument '" + std::string(arg) + "'"};
    }
  }
  if (!have_model) throw usage_error{"missing --model DIR"};
  if (!have_inputs) throw usage_error{"missing --inputs IN.safetensors"};
  if (!have_output) throw usage_error{"missing --output OUT.safetensors"};
  return o;
}

// The inputs file, checked before any pass runs: names what is wrong and where.
struct inputs {
  dynamic_tensor<float> image;                  // (B, N, E)
  std::optional<dynamic_tensor<index_t>> ids;   // (B, T)
  std::optional<dynamic_tensor<index_t>> mask;  // (B, T)
  index_t B = 0, N = 0, E = 0, T = 0;
};

inputs read_inputs(const std::filesystem::path& path, const qformer_model_config& cfg) {
  const auto file = safetensors_file::open(path);
  const std::string where = "inputs '" + path.string() + "'";
  auto fail = [&](auto&&... parts) { detail::raise<value_error>(where, ": ", parts...); };
  inputs in;
  if (!file.contains("image_embeds"))
    fail("no tensor 'image_embeds' (float, shape (B, N, E) with E = encoder_hidden_size = ",
         cfg.qformer.encoder_hidden_size, ")");
  in.image = file.load_dynamic<float>("image_embeds");
  const auto shape = [](const auto& t) { return detail::vector_shape_string(t.shape); };
  if (in.image.shape.size() != 3)
    detail::raise<shape_error>(where, ": 'image_embeds' has shape ", shape(in.image), ", expected (B, N, E)");
  in.B = in.image.shape[0], in.N = in.image.shape[1], in.E = in.image.shape[2];
  if (in.B < 1 || in.N < 1)
    detail::raise<shape_error>(where, ": 'image_embeds' has shape ", shape(in.image),
                               ", expected at least one image (B >= 1) of at least one token (N >= 1)");
  if (in.E != cfg.qformer.encoder_hidden_size)
    detail::raise<shape_error>(where, ": 'image_embeds' has shape ", shape(in.image), " but its last dimension must be ",
                               "the model's encoder_hidden_size = ", cfg.qformer.encoder_hidden_size);
  if (file.contains("input_ids")) {
    in.ids = file.load_dynamic<index_t>("input_ids");
    if (in.ids->shape.size() != 2 || in.ids->shape[0] != in.B || in.ids->shape[1] < 1)
      detail::raise<shape_error>(where, ": 'input_ids' has shape ", shape(*in.ids), ", expected (B, T) with B = ", in.B,
                                 " (one text per image) and T >= 1");
    in.T = in.ids->shape[1];
    if (!cfg.with_text)
      fail("has input_ids, but the model has no text side (a Blip2ForConditionalGeneration checkpoint: no ",
           "embeddings.word_embeddings.weight): give image_embeds only");
    if (file.contains("attention_mask")) {
      in.mask = file.load_dynamic<index_t>("attention_mask");
      if (in.mask->shape != in.ids->shape)
        detail::raise<shape_error>(where, ": 'attention_mask' has shape ", shape(*in.mask), " but 'input_ids' has shape ",
                                   shape(*in.ids));
    }
  } else if (file.contains("attention_mask")) {
    fail("has attention_mask but no input_ids");
  }
  return in;
}

template <class T>
host_tensor<T, 3> query_rows_by_batch(const qformer_pass_state<T>& st) {  // (B, Q, C) copy of the query rows
  host_tensor<T, 3> out({st.B, st.Lq, st.output().extent(1)});
  reference_backend ref;
  copy(ref, out.view(), detail::as_const(detail::by_batch(detail::row_range(st.output(), 0, st.Lq * st.B), st.B)));
  return out;
}

template <class Be>
void run(Be& be, const options& opt) {
  const auto m = load_qformer<float>(opt.model);
  const auto& cfg = m.config();
  const auto in = read_inputs(opt.inputs, cfg);
  const index_t B = in.B, Q = cfg.num_query_tokens, C = cfg.qformer.hidden_size, D = cfg.image_text_hidden_size;
  std::vector<safetensors_entry> out;

  // image side: cross-attention keys/values of every image, once
  image_kv_state<float> kv;
  encode_image_kv(be, m, kv, tensor_view<const float, 3>(in.image.data.data(), {B, in.N, in.E}));

  // image pass: queries only -> query_output (B, Q, C), image_feats = normalize(vision_projection) (B, Q, D)
  qformer_pass_state<float> image_pass;
  qformer_pass_inputs<float> ip;
  ip.batch = B;
  ip.queries = true;
  ip.image = &kv;
  qformer_forward(be, m, image_pass, ip);
  const auto query_output = query_rows_by_batch(image_pass);
  out.push_back(safetensors_entry::of("query_output", query_output));
  // the projections belong to the retrieval heads: a Blip2ForConditionalGeneration checkpoint has none
  projection_state<float> img_proj;
  if (cfg.with_text) {
    projection_forward(be, img_proj, m.w.vision_projection,
                       tensor_view<const float, 2>(query_output.data(), {B * Q, C}));
    out.push_back(safetensors_entry::of("image_feats", tensor_view<const float, 3>(img_proj.feats.data(), {B, Q, D})));
  }

  // text side (optional): text pass -> text_feat, ITC scores; joint pass -> ITM logits
  qformer_pass_state<float> text_pass, joint_pass;
  projection_state<float> txt_proj;
  itc_similarity_state<float> itc;
  itm_head_state<float> itm;
  if (in.ids) {
    qformer_pass_inputs<float> tp;
    tp.batch = B;
    tp.input_ids = tensor_view<const index_t, 2>(in.ids->data.data(), {B, in.T});
    if (in.mask) tp.attention_mask = tensor_view<const index_t, 2>(in.mask->data.data(), {B, in.T});
    qformer_forward(be, m, text_pass, tp);
    // position 0 ([CLS]) of every text: the first B rows, (B, C)
    projection_forward(be, txt_proj, m.w.text_projection, detail::as_const(detail::row_range(text_pass.output(), 0, B)));
    itc_similarity_forward(be, itc, tensor_view<const float, 3>(img_proj.feats.data(), {B, Q, D}),
                           detail::as_const(txt_proj.feats));

    qformer_pass_inputs<float> jp = tp;  // [queries ; text], bidirectional, text padding, image b with text b
    jp.queries = true;
    jp.image = &kv;
    jp.attention = qformer_attention::bidirectional;
    qformer_forward(be, m, joint_pass, jp);
    itm_head_forward(be, itm, m.w.itm_head, detail::as_const(detail::row_range(joint_pass.output(), 0, Q * B)), B);

    out.push_back(safetensors_entry::of("text_feat", txt_proj.feats));
    out.push_back(safetensors_entry::of("itc_scores", itc.sim));
    out.push_back(safetensors_entry::of("itm_logits", itm.logits));
  }
  save_safetensors(opt.output, out, {{"format", "pt"}, {"backend", Be::name}});
  std::printf("qformer_features: %s backend, %lld image(s)%s -> %s\n", Be::name, static_cast<long long>(B),
              in.ids ? " and text(s)" : "", opt.output.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  options opt;
  try {
    opt = parse_args(argc, argv);
  } catch (const usage_error& e) {
    if (e.message.empty()) {  // --help
      std::printf("%s\n", usage_line);
      return 0;
    }
    std::fprintf(stderr, "qformer_features: %s\n%s\n", e.message.c_str(), usage_line);
    return 2;
  }
  try {
    if (opt.backend == "onednn") {
#ifdef BLIP2_HAS_ONEDNN
      onednn_backend be;
      run(be, opt);
#else
      std::fprintf(stderr, "qformer_features: --backend onednn: this build has no oneDNN backend "
                           "(compiled without BLIP2_HAS_ONEDNN); use --backend reference\n");
      return 1;
#endif
    } else {
      reference_backend be;
      run(be, opt);
    }
  } catch (const blip2::error& e) {
    std::fprintf(stderr, "qformer_features: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qformer_features: %s\n", e.what());
    return 1;
  }
  return 0;
}

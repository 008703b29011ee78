// qformer_golden: the whole Q-Former against PyTorch fixtures (tests/fixtures/make_qformer_fixtures.py):
// the ITC image and text features, the ITC scores, the ITM logits, the multimodal-causal (ITG) text rows,
// and the gradient of a fixed scalar of all of them with respect to every parameter and the image
// embeddings, on the reference backend (float and double) and the oneDNN backend (float).
//
// Tolerance: every tensor within 1e-4 of its largest magnitude (at least 1, the scale of the objective) in float32 (the bound: the pass is
// a few dozen dependent float32 operations, each rounding at 6e-8 relative, and the fixtures are float64
// results rounded to float32), and 2e-6 in double (the fixtures themselves are rounded to float32, which
// is 6e-8 relative per element; the bound leaves room for that error growing through a 2-3 layer model).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "blip2/backend/reference/reference_backend.hpp"
#if BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif
#if BLIP2_HAS_CUDA
#include "blip2/backend/cuda/cuda.hpp"
#endif
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/models/qformer/heads.hpp"
#include "harness/on_backend.hpp"

using namespace blip2;

namespace {

const std::filesystem::path fixtures = BLIP2_FIXTURE_DIR;
double worst_ratio = 0;  // max over the tensors of one run of maxdiff / max(largest magnitude, 1)
std::string worst_name;

// max |got - want| / max |want| over one tensor; reports the name on failure
template <class T>
void check_close(const std::string& name, const T* got, const dynamic_tensor<double>& want, double tol) {
  double maxdiff = 0, maxref = 0;
  bool finite = true;
  for (index_t k = 0; k < want.size(); ++k) {
    const double g = static_cast<double>(got[k]);
    finite = finite && std::isfinite(g);
    maxdiff = std::max(maxdiff, std::abs(g - want.data[static_cast<std::size_t>(k)]));
    maxref = std::max(maxref, std::abs(want.data[static_cast<std::size_t>(k)]));
  }
  // The objective's weights are O(1), so gradients are O(1): a tensor whose gradient vanishes by
  // symmetry (a key bias: softmax ignores a constant shift) is compared at that unit scale.
  const double bound = tol * std::max(maxref, 1.0);
  INFO(name, ": max diff ", maxdiff, ", largest magnitude ", maxref);
  if (maxdiff / std::max(maxref, 1.0) > worst_ratio) {
    worst_ratio = maxdiff / std::max(maxref, 1.0);
    worst_name = name;
  }
  CHECK(finite);
  CHECK(maxdiff <= bound);
}

// (B, Q, C) host copy of a pass's query rows
template <class D, class St>
auto batch_major_queries(D& d, const St& st) {
  return d.host(detail::as_const(by_batch(row_range(st.output(), 0, st.Lq * st.B), st.B)));
}

// The fixture's forward and backward on backend be; on a device backend the model, the inputs and the
// objective's weights are copied to the device, and the outputs and gradients back (harness/on_backend.hpp).
template <class T, class Be>
void run_fixture(Be& be, const std::string& fixture, double tol) {
  using S = typename Be::memory_space;
  testing::on_backend<Be> d(be);
  worst_ratio = 0;
  const auto dir = fixtures / fixture;
  auto m = d.model(load_qformer<T>(dir));
  const auto inputs = safetensors_file::open(dir / "inputs.safetensors");
  const auto expected = safetensors_file::open(dir / "expected.safetensors");
  auto want = [&](const std::string& name) { return expected.load_dynamic<double>(name); };
  auto img = inputs.load_dynamic<T>("image_embeds");
  const host_tensor<index_t, 2> ids = inputs.load_i64<2>("input_ids");
  const host_tensor<index_t, 2> mask = inputs.load_i64<2>("attention_mask");
  const index_t B = ids.extent(0), T_ = ids.extent(1), N = img.shape[1], E = img.shape[2];
  const index_t Q = m.config().num_query_tokens, C = m.config().qformer.hidden_size;
  const index_t D = m.config().image_text_hidden_size;
  const auto image = detail::as_const(d.copy_of(tensor_view<const T, 3>(img.data.data(), {B, N, E})));

  // ---- forward: image pass, text pass, ITM joint pass, ITG (joint multimodal-causal and cached K/V) ----
  image_kv_state<T, S> kv;
  encode_image_kv(be, m, kv, image);
  qformer_pass_state<T, S> image_pass, text_pass, itm_pass, itg_joint, itg_cached;
  qformer_pass_inputs<T, S> in;
  in.batch = B;
  in.queries = true;
  in.image = &kv;
  qformer_forward(be, m, image_pass, in);
  qformer_pass_inputs<T, S> tin;
  tin.batch = B;
  tin.input_ids = ids.view();  // ids and masks are host data: the pass copies what it needs
  tin.attention_mask = mask.view();
  qformer_forward(be, m, text_pass, tin);
  qformer_pass_inputs<T, S> jin = tin;
  jin.queries = true;
  jin.image = &kv;
  qformer_forward(be, m, itm_pass, jin);
  jin.attention = qformer_attention::multimodal_causal;
  qformer_forward(be, m, itg_joint, jin);
  qformer_pass_inputs<T, S> cin = tin;
  cin.prefix = &image_pass;
  qformer_forward(be, m, itg_cached, cin);

  const auto query_output = d.copy_of(tensor_view<const T, 3>(batch_major_queries(d, image_pass).data(), {B, Q, C}));
  check_close("query_output", d.host(query_output).data(), want("query_output"), tol);
  check_close("itm_query_output", batch_major_queries(d, itm_pass).data(), want("itm_query_output"), tol);
  check_close("text_output", d.host(detail::as_const(text_pass.output_by_batch())).data(), want("text_output"), tol);
  // ITG: the joint multimodal-causal pass's text rows, and the cached-K/V pass, both equal the fixture
  check_close("itg_text_output (joint pass)",
              d.host(detail::as_const(by_batch(row_range(itg_joint.output(), Q * B, (Q + T_) * B), B))).data(),
              want("itg_text_output"), tol);
  check_close("itg_text_output (cached K/V pass)", d.host(detail::as_const(itg_cached.output_by_batch())).data(),
              want("itg_text_output"), tol);

  projection_state<T, S> img_proj, txt_proj;
  projection_forward(be, img_proj, m.w.vision_projection, tensor_view<const T, 2, S>(query_output.data(), {B * Q, C}));
  check_close("image_feats", d.host(img_proj.feats).data(), want("image_feats"), tol);
  const auto cls_rows = row_range(text_pass.output(), 0, B);  // position 0 of every text: (B, C)
  projection_forward(be, txt_proj, m.w.text_projection, detail::as_const(cls_rows));
  check_close("text_feat", d.host(txt_proj.feats).data(), want("text_feat"), tol);
  itc_similarity_state<T, S> itc;
  itc_similarity_forward(be, itc, tensor_view<const T, 3, S>(img_proj.feats.data(), {B, Q, D}),
                         detail::as_const(txt_proj.feats));
  check_close("itc_scores", d.host(itc.sim).data(), want("itc_scores"), tol);
  itm_head_state<T, S> itm;
  itm_head_forward(be, itm, m.w.itm_head, detail::as_const(row_range(itm_pass.output(), 0, Q * B)), B);
  check_close("itm_logits", d.host(itm.logits).data(), want("itm_logits"), tol);

  // ---- backward of L = sum(w.query_output * query_output) + sum(w.image_feats * image_feats) + ... ----
  auto w_of = [&](const std::string& name, auto extents) {
    const auto w = expected.load_dynamic<T>("w." + name);
    return d.copy_of(tensor_view<const T, std::tuple_size_v<decltype(extents)>>(w.data.data(), extents));
  };
  const auto dimage_feats = w_of("image_feats", extents_t<3>{B, Q, D});
  const auto dtext_feat = w_of("text_feat", extents_t<2>{B, D});
  const auto w_itc = w_of("itc_scores", extents_t<2>{B, B});
  const auto w_itm = w_of("itm_logits", extents_t<2>{B, 2});
  const auto dquery_output = w_of("query_output", extents_t<3>{B, Q, C});
  itc_similarity_backward(be, itc, detail::as_const(w_itc), dimage_feats, dtext_feat);
  projection_backward(be, img_proj, m.w.vision_projection, m.g.vision_projection,
                      tensor_view<const T, 2, S>(dimage_feats.data(), {B * Q, D}),
                      tensor_view<T, 2, S>(dquery_output.data(), {B * Q, C}), grad_write::accumulate);
  // image pass: d(query rows) in sequence-major order
  const auto dimage_out = d.template zeros<T, 2>({Q * B, C});
  copy(be, by_batch(dimage_out, B), detail::as_const(dquery_output));
  // text pass: only position 0 feeds the text feature
  const auto dtext_out = d.template zeros<T, 2>({T_ * B, C});
  projection_backward(be, txt_proj, m.w.text_projection, m.g.text_projection, detail::as_const(dtext_feat),
                      row_range(dtext_out, 0, B));
  // ITM pass: only the query rows feed the head
  const auto ditm_out = d.template zeros<T, 2>({(Q + T_) * B, C});
  itm_head_backward(be, itm, m.w.itm_head, m.g.itm_head, detail::as_const(w_itm), row_range(ditm_out, 0, Q * B));
  qformer_backward(be, m, itm_pass, detail::as_const(ditm_out));
  qformer_backward(be, m, text_pass, detail::as_const(dtext_out));
  qformer_backward(be, m, image_pass, detail::as_const(dimage_out));
  const auto dimage = d.template zeros<T, 3>({B, N, E});
  encode_image_kv_backward(be, m, kv, dimage);

  int checked = 0;
  for_each_parameter(m.config(), m.g, [&](const std::string& name, auto& g) {
    check_close("grad." + name, d.host(g).data(), want("grad." + name), tol);
    ++checked;
  });
  check_close("grad.image_embeds", d.host(dimage).data(), want("grad.image_embeds"), tol);
  // every gradient in the fixture was compared
  int in_fixture = 0;
  for (const auto& name : expected.names())
    if (name.rfind("grad.", 0) == 0 && name != "grad.image_embeds") ++in_fixture;
  CHECK(checked == in_fixture);
  std::printf("%-10s %-7s %-15s %3d gradients + 8 outputs; worst |diff| / max(|ref|, 1) = %.2e (%s)\n", Be::name,
              sizeof(T) == 8 ? "double" : "float", fixture.c_str(), checked + 1, worst_ratio, worst_name.c_str());
}

}  // namespace

TEST_CASE("qformer golden: Hugging Face Blip2ForImageTextRetrieval outputs and every gradient") {
  for (const std::string fixture : {"qformer_freq1", "qformer_padded"}) {
    SUBCASE(("reference double " + fixture).c_str()) {
      reference_backend be;
      run_fixture<double>(be, fixture, 2e-6);
    }
    SUBCASE(("reference float " + fixture).c_str()) {
      reference_backend be;
      run_fixture<float>(be, fixture, 1e-4);
    }
#if BLIP2_HAS_ONEDNN
    SUBCASE(("onednn float " + fixture).c_str()) {
      onednn_backend be;
      run_fixture<float>(be, fixture, 1e-4);
    }
#endif
#if BLIP2_HAS_CUDA
    SUBCASE(("cuda float " + fixture).c_str()) {
      std::string why;
      if (!cuda_available(&why)) {
        MESSAGE("skipped: no CUDA device (" << why << ")");
      } else {
        cuda_backend be;
        run_fixture<float>(be, fixture, 1e-4);
      }
    }
#endif
  }
}

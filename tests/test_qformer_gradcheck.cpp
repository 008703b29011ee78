// qformer_gradcheck: the whole Q-Former backward against central finite differences, in double, on the
// parts the PyTorch fixtures do not reach: dropout on (training, fixed seeds), the multimodal-causal joint
// pass, ITM-style pairs that reuse images through image_index (gathered image K/V, gradients scattered
// back), and ITG's text pass over the image pass's cached K/V (gradients into the prefix's dk_extra).
//
// L = sum(w_img * image_pass_out) + sum(w_joint * joint_pass_out) + sum(w_itg * cached_kv_pass_out)
//     + sum(w_text * text_pass_out), w random and fixed.
// Tolerance as in tests/harness/gradcheck.hpp: |analytic - numeric| <= 1e-7 + 1e-5 |numeric| with
// h = 1e-5 (central differences in double: truncation ~h^2, round-off ~1e-16 |L| / h, both far below).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <random>

#include "blip2/nn/qformer.hpp"

using namespace blip2;

namespace {

struct problem {
  qformer_model<double> m;
  index_t B = 2, Bj = 3, N = 3, T = 4;
  std::vector<double> image;               // (B, N, E)
  host_tensor<index_t, 2> ids, mask;       // (B, T) for the text and cached-K/V passes
  host_tensor<index_t, 2> ids_j, mask_j;   // (Bj, T) for the joint pass
  std::vector<index_t> pairing{1, 0, 1};   // image of each joint-pass pair
  std::vector<double> w_img, w_joint, w_itg, w_text;

  image_kv_state<double> kv;
  qformer_pass_state<double> img, joint, itg, text;

  static qformer_model_config config() {
    qformer_model_config c;
    auto& q = c.qformer;
    q.vocab_size = 11;
    q.hidden_size = 8;
    q.num_hidden_layers = 2;
    q.num_attention_heads = 2;
    q.intermediate_size = 12;
    q.max_position_embeddings = 6;
    q.cross_attention_frequency = 1;
    q.encoder_hidden_size = 6;
    q.hidden_dropout_prob = 0.2;
    q.attention_probs_dropout_prob = 0.25;
    q.layer_norm_eps = 1e-12;
    q.pad_token_id = std::nullopt;  // no padding_idx: every embedding row has its true gradient here
    c.num_query_tokens = 2;
    c.image_text_hidden_size = 4;
    return c;
  }

  problem() : m(config()), ids({2, 4}), mask({2, 4}), ids_j({3, 4}), mask_j({3, 4}) {
    std::mt19937_64 gen(7);
    std::normal_distribution<double> nd(0.0, 0.5);
    for (auto& p : m.parameters()) p = nd(gen);
    for_each_parameter(m.config(), m.w, [&](const std::string& name, auto& v) {
      if (name.find("LayerNorm.weight") != std::string::npos || name.find("layernorm.weight") != std::string::npos)
        for (index_t k = 0; k < v.size(); ++k) v.data()[k] = 1.0 + 0.2 * nd(gen);
    });
    const index_t E = m.config().qformer.encoder_hidden_size;
    image.resize(static_cast<std::size_t>(B * N * E));
    for (auto& x : image) x = nd(gen);
    std::uniform_int_distribution<index_t> id(1, 10);
    const index_t lengths[] = {4, 2, 3};
    for (index_t b = 0; b < 3; ++b)
      for (index_t t = 0; t < T; ++t) {
        if (b < 2) {
          ids(b, t) = id(gen);
          mask(b, t) = t < lengths[b] ? 1 : 0;
        }
        ids_j(b, t) = id(gen);
        mask_j(b, t) = t < lengths[2 - b] ? 1 : 0;
      }
    forward();  // sizes the outputs
    auto fill = [&](std::vector<double>& w, const qformer_pass_state<double>& st) {
      w.resize(static_cast<std::size_t>(st.output().size()));
      for (auto& x : w) x = nd(gen);
    };
    fill(w_img, img);
    fill(w_joint, joint);
    fill(w_itg, itg);
    fill(w_text, text);
  }

  void forward() {
    reference_backend be;
    const index_t E = m.config().qformer.encoder_hidden_size;
    encode_image_kv(be, m, kv, tensor_view<const double, 3>(image.data(), {B, N, E}));
    qformer_pass_inputs<double> in;
    in.batch = B;
    in.queries = true;
    in.image = &kv;
    in.training = true;
    in.seed = 11;
    qformer_forward(be, m, img, in);
    qformer_pass_inputs<double> jin;
    jin.batch = Bj;
    jin.queries = true;
    jin.image = &kv;
    jin.image_index = pairing;
    jin.input_ids = ids_j.view();
    jin.attention_mask = mask_j.view();
    jin.attention = qformer_attention::multimodal_causal;
    jin.training = true;
    jin.seed = 12;
    qformer_forward(be, m, joint, jin);
    qformer_pass_inputs<double> cin;
    cin.batch = B;
    cin.input_ids = ids.view();
    cin.attention_mask = mask.view();
    cin.prefix = &img;
    cin.training = true;
    cin.seed = 13;
    qformer_forward(be, m, itg, cin);
    qformer_pass_inputs<double> tin = cin;
    tin.prefix = nullptr;
    tin.seed = 14;
    qformer_forward(be, m, text, tin);
  }

  double loss() const {
    auto dot = [](const std::vector<double>& w, const qformer_pass_state<double>& st) {
      const double* y = st.output().data();
      double s = 0;
      for (std::size_t k = 0; k < w.size(); ++k) s += w[k] * y[k];
      return s;
    };
    return dot(w_img, img) + dot(w_joint, joint) + dot(w_itg, itg) + dot(w_text, text);
  }

  // analytic gradients into m.g and the returned dimage
  std::vector<double> backward() {
    reference_backend be;
    m.zero_grad();
    forward();
    auto d = [](std::vector<double>& w, const qformer_pass_state<double>& st) {
      return tensor_view<const double, 2>(w.data(), st.output().extents());
    };
    qformer_backward(be, m, joint, d(w_joint, joint));
    qformer_backward(be, m, itg, d(w_itg, itg));  // before the image pass: it adds into img's dk/dv_extra
    qformer_backward(be, m, text, d(w_text, text));
    qformer_backward(be, m, img, d(w_img, img));
    std::vector<double> dimage(image.size(), 0.0);
    const index_t E = m.config().qformer.encoder_hidden_size;
    encode_image_kv_backward(be, m, kv, tensor_view<double, 3>(dimage.data(), {B, N, E}));
    return dimage;
  }
};

}  // namespace

TEST_CASE("qformer gradcheck: every parameter and the image, with dropout, pairs and cached K/V (double)") {
  problem pr;
  const std::vector<double> dimage = pr.backward();
  const double h = 1e-5;
  std::mt19937_64 pick(3);
  auto numeric = [&](double& x) {
    const double saved = x;
    x = saved + h;
    pr.forward();
    const double lp = pr.loss();
    x = saved - h;
    pr.forward();
    const double lm = pr.loss();
    x = saved;
    return (lp - lm) / (2 * h);
  };
  double worst = 0;
  int checked = 0;
  auto check = [&](const std::string& what, double analytic, double num) {
    const double err = std::abs(analytic - num) / (1e-7 + 1e-5 * std::abs(num));
    worst = std::max(worst, err);
    ++checked;
    INFO(what, ": analytic ", analytic, ", numeric ", num);
    CHECK(err <= 1.0);
  };
  // two elements of every parameter tensor (the gradient arena has the parameter arena's layout)
  std::vector<std::pair<std::string, std::pair<double*, double>>> picks;
  for_each_parameter(pr.m.config(), pr.m.w, [&](const std::string& name, auto& v) {
    for (int r = 0; r < 2; ++r) {
      const index_t k = std::uniform_int_distribution<index_t>(0, v.size() - 1)(pick);
      const std::ptrdiff_t offset = v.data() + k - pr.m.parameters().data();
      picks.push_back({name + "[" + std::to_string(k) + "]", {v.data() + k, pr.m.gradients()[static_cast<std::size_t>(offset)]}});
    }
  });
  for (auto& [what, pg] : picks) check(what, pg.second, numeric(*pg.first));
  for (int r = 0; r < 8; ++r) {
    const std::size_t k = std::uniform_int_distribution<std::size_t>(0, pr.image.size() - 1)(pick);
    check("image_embeds[" + std::to_string(k) + "]", dimage[k], numeric(pr.image[k]));
  }
  std::printf("qformer gradcheck: %d elements, worst |analytic - numeric| / tolerance = %.2e\n", checked, worst);
}

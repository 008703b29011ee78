// qformer_gradcheck: the whole Q-Former backward against central finite differences, in double, on the
// parts the PyTorch fixtures do not reach: dropout on (training, fixed seeds), the multimodal-causal joint
// pass, ITM-style pairs that reuse images through image_index (gathered image K/V, gradients scattered
// back), and ITG's text pass over the image pass's cached K/V (gradients into the prefix's dk_extra).
//
// L = sum(w_img * image_pass_out) + sum(w_joint * joint_pass_out) + sum(w_itg * cached_kv_pass_out)
//     + sum(w_text * text_pass_out) + sum(w_pairs * pairs_out[rows of the queries])
//     + sum(w_cls * text_pass_out[rows of [CLS]]) + sum(w_itg2 * cached_kv_pass_out'), w random and fixed;
// the last three passes skip their padding rows (skip_padding), and pairs and cls run with
// output_positions (the last layer computes the positions read, as ITM and ITC use them).
// A second test checks that such a pass equals the full pass on the rows it keeps, gradients included.
// Tolerance as in tests/harness/gradcheck.hpp: |analytic - numeric| <= 1e-7 + 1e-5 |numeric| with
// h = 1e-5 (central differences in double: truncation ~h^2, round-off ~1e-16 |L| / h, both far below).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>

#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/models/qformer/pass.hpp"

using namespace blip2;

namespace {

struct problem {
  qformer_model<double> m;
  index_t B = 2, Bj = 3, N = 3, T = 4;
  std::vector<double> image;               // (B, N, E)
  host_tensor<index_t, 2> ids, mask;       // (B, T) for the text and cached-K/V passes
  host_tensor<index_t, 2> ids_j, mask_j;   // (Bj, T) for the joint pass
  std::vector<index_t> pairing{1, 0, 1};   // image of each joint-pass pair
  std::vector<double> w_img, w_joint, w_itg, w_text, w_pairs, w_cls, w_itg2;

  image_kv_state<double> kv;
  qformer_pass_state<double> img, joint, itg, text, pairs, cls, itg2;

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

  explicit problem(const qformer_model_config& c = config())
      : m(c), ids({2, 4}), mask({2, 4}), ids_j({3, 4}), mask_j({3, 4}) {
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
      w.assign(static_cast<std::size_t>(st.output().size()), 0.0);
      for (index_t k = 0; k < computed(st); ++k) w[static_cast<std::size_t>(k)] = nd(gen);
    };
    fill(w_img, img);
    fill(w_joint, joint);
    fill(w_itg, itg);
    fill(w_text, text);
    fill(w_pairs, pairs);
    fill(w_cls, cls);
    fill(w_itg2, itg2);
  }

  // elements of st.output() that the pass computes (rows [0, R B))
  static index_t computed(const qformer_pass_state<double>& st) { return st.R * st.B * st.output().extent(1); }

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
    cin.seed = 17;
    cin.skip_padding = true;
    qformer_forward(be, m, itg2, cin);
    qformer_pass_inputs<double> tin = cin;
    tin.prefix = nullptr;
    tin.skip_padding = false;
    tin.seed = 14;
    qformer_forward(be, m, text, tin);
    tin.seed = 15;
    tin.output_positions = 1;  // [CLS] only
    tin.skip_padding = true;
    qformer_forward(be, m, cls, tin);
    jin.attention = qformer_attention::bidirectional;
    jin.seed = 16;
    jin.output_positions = m.config().num_query_tokens;  // the query rows only
    jin.skip_padding = true;
    qformer_forward(be, m, pairs, jin);
  }

  double loss() const {
    auto dot = [](const std::vector<double>& w, const qformer_pass_state<double>& st) {
      const double* y = st.output().data();
      double s = 0;
      for (index_t k = 0; k < computed(st); ++k) s += w[static_cast<std::size_t>(k)] * y[k];
      return s;
    };
    return dot(w_img, img) + dot(w_joint, joint) + dot(w_itg, itg) + dot(w_text, text) + dot(w_pairs, pairs) +
           dot(w_cls, cls) + dot(w_itg2, itg2);
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
    qformer_backward(be, m, itg2, d(w_itg2, itg2));
    qformer_backward(be, m, text, d(w_text, text));
    qformer_backward(be, m, pairs, d(w_pairs, pairs));
    qformer_backward(be, m, cls, d(w_cls, cls));
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

// A pass run with output_positions = R and/or skip_padding against the same pass run in full: the rows
// it keeps (positions [0, R), text positions with attention_mask 1), every parameter gradient and the
// image gradient, for dout that is zero beyond those rows (what the ITM head, ITC and ITG give).
// Dropout: a truncated last layer draws its attention-dropout mask over (B, NH, R, S), and packed rows
// draw their hidden-dropout masks over the packed rows (models/qformer/pass.hpp), so each case keeps on the
// dropout whose masks it leaves unchanged and turns the other off.
// Tolerance: the kept rows go through the same operations in the same order; the full pass adds exact
// zeros for the others (masked keys have softmax weight exp(-10000) = 0), so the two agree to the last
// bits; 1e-13 relative allows a reordered sum.
TEST_CASE("qformer output_positions and skip_padding: the kept rows and every gradient equal the full pass's (double)") {
  struct variant {
    const char* name;
    bool truncate, skip;
  };
  for (const variant v : {variant{"output_positions", true, false}, variant{"skip_padding", false, true},
                          variant{"both", true, true}}) {
    auto cfg = problem::config();
    if (v.truncate) cfg.qformer.attention_probs_dropout_prob = 0.0;
    if (v.skip) cfg.qformer.hidden_dropout_prob = 0.0;
    problem pr(cfg);
    reference_backend be;
    const index_t C = cfg.qformer.hidden_size, E = cfg.qformer.encoder_hidden_size, Q = cfg.num_query_tokens;
    std::normal_distribution<double> nd(0.0, 1.0);

    struct run_result {
      std::vector<double> out, grads, dimage;
    };
    // Rows a consumer reads: position < R and not masked text, except that a text-only element with
    // every position masked is read whole (it has no unmasked key, so skip_padding keeps it).
    auto kept_row = [&](const qformer_pass_inputs<double>& in, index_t R, index_t r) {
      const index_t p = r / in.batch, b = r % in.batch, Lq = in.queries ? Q : 0;
      bool none = !in.queries;
      for (index_t t = 0; t < in.attention_mask.extent(1); ++t) none = none && in.attention_mask(b, t) == 0;
      return p < R && (p < Lq || none || in.attention_mask(b, p - Lq) == 1);
    };
    // One pass, full or not, with dout random on the kept rows. The state is reused, as training reuses
    // it step after step: a run must not read what the previous one left behind.
    qformer_pass_state<double> st;
    auto run = [&](qformer_pass_inputs<double> in, index_t R, bool reduced) {
      pr.m.zero_grad();
      image_kv_state<double> kv;
      encode_image_kv(be, pr.m, kv, tensor_view<const double, 3>(pr.image.data(), {pr.B, pr.N, E}));
      in.image = in.queries ? &kv : nullptr;
      in.output_positions = reduced && v.truncate ? R : 0;
      in.skip_padding = reduced && v.skip;
      qformer_forward(be, pr.m, st, in);
      const index_t rows = st.output().extent(0);
      std::vector<double> dout(static_cast<std::size_t>(rows * C), 0.0);
      std::mt19937_64 g(9);  // the same dout for both runs
      run_result res;
      for (index_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < C; ++c) {
          const double d = nd(g);
          if (!kept_row(in, R, r)) continue;
          dout[static_cast<std::size_t>(r * C + c)] = d;
          res.out.push_back(st.output()(r, c));
        }
      qformer_backward(be, pr.m, st, tensor_view<const double, 2>(dout.data(), st.output().extents()));
      res.grads.assign(pr.m.gradients().begin(), pr.m.gradients().end());
      res.dimage.assign(pr.image.size(), 0.0);
      encode_image_kv_backward(be, pr.m, kv, tensor_view<double, 3>(res.dimage.data(), {pr.B, pr.N, E}));
      return res;
    };
    auto compare = [&](const std::string& what, const std::vector<double>& a, const std::vector<double>& b) {
      REQUIRE(a.size() == b.size());
      double scale = 0, diff = 0;
      for (std::size_t k = 0; k < a.size(); ++k) {
        scale = std::max(scale, std::abs(b[k]));
        diff = std::max(diff, std::abs(a[k] - b[k]));
      }
      INFO(v.name, ", ", what, ": max |reduced - full| = ", diff, ", max |full| = ", scale);
      CHECK(scale > 0);  // a vector of zeros would compare equal without testing anything
      CHECK(diff <= 1e-13 * scale);
    };

    qformer_pass_inputs<double> pairs;  // ITM-style: [queries ; text], pairs reusing images, R = Q
    pairs.batch = pr.Bj;
    pairs.queries = true;
    pairs.image_index = pr.pairing;
    pairs.input_ids = pr.ids_j.view();
    pairs.attention_mask = pr.mask_j.view();
    pairs.training = true;
    pairs.seed = 21;
    qformer_pass_inputs<double> text;  // ITC text side: [CLS] only, R = 1
    text.batch = pr.B;
    text.input_ids = pr.ids.view();
    text.attention_mask = pr.mask.view();
    text.training = true;
    text.seed = 22;
    // a text whose every position is masked keeps its rows under skip_padding (nothing else to attend to)
    host_tensor<index_t, 2> mask_none = pr.mask;
    for (index_t t = 0; t < pr.T; ++t) mask_none(1, t) = 0;
    mask_none(0, 3) = 0;  // element 0 still has a padding row to skip
    qformer_pass_inputs<double> text_none = text;
    text_none.attention_mask = mask_none.view();
    const index_t T = pr.T;
    for (auto [name, in, R] : {std::tuple{"pairs, R = Q", pairs, Q}, std::tuple{"text, R = 1", text, index_t{1}},
                               std::tuple{"pairs, R = Q + 2", pairs, Q + 2}, std::tuple{"text, R = T", text, T}}) {
      const auto full = run(in, R, false), cut = run(in, R, true);
      compare(std::string(name) + " output", cut.out, full.out);
      compare(std::string(name) + " parameter gradients", cut.grads, full.grads);
      if (in.queries) compare(std::string(name) + " image gradient", cut.dimage, full.dimage);
    }
    if (v.skip) {  // the fully masked text: its rows are all kept, so compare every row of it
      const auto full = run(text_none, T, false), cut = run(text_none, T, true);
      qformer_pass_state<double> probe;
      auto in = text_none;
      in.skip_padding = true;
      qformer_forward(be, pr.m, probe, in);
      CHECK(probe.plan.rows() == 3 + T);  // element 0 keeps its 3 unmasked positions, element 1 all T
      compare("text with a fully masked row, output", cut.out, full.out);
      compare("text with a fully masked row, parameter gradients", cut.grads, full.grads);
    }
  }
}

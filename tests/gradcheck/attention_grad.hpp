// Finite-difference checks for attention_backward (dq, dk, dv) under every mask policy, with key
// padding, and with attention-probs dropout (p = 0.3, fixed seed: the mask is a constant of the seed).
#pragma once
#include "blip2/models/qformer/masks.hpp"
#include "blip2/nn/attention.hpp"
#include "harness/gradcheck.hpp"

namespace blip2::testing {

inline void add_attention_grads(std::vector<grad_case>& cases) {
  enum class policy { bidirectional, unimodal, multimodal_causal, cached_query_kv };
  struct config {
    index_t B, T, S, C, NH;
    policy pol;
    index_t Q;
    bool pad;
    bool pad_all;  // batch 1 has every key padded: fully masked rows
    double p;
  };
  auto with_policy = [](policy p, index_t Q, auto&& f) {
    switch (p) {
      case policy::bidirectional: f(bidirectional{}); break;
      case policy::unimodal: f(unimodal_mask{Q}); break;
      case policy::multimodal_causal: f(multimodal_causal_mask{Q}); break;
      case policy::cached_query_kv: f(causal{Q}); break;
    }
  };
  for (const config& c : {config{2, 3, 5, 4, 2, policy::bidirectional, 0, true, false, 0.0},
                          config{2, 5, 5, 6, 2, policy::multimodal_causal, 2, true, false, 0.0},
                          config{1, 5, 5, 6, 3, policy::unimodal, 2, true, false, 0.3},
                          config{2, 3, 5, 4, 2, policy::cached_query_kv, 2, true, false, 0.3},
                          config{2, 2, 3, 4, 1, policy::bidirectional, 0, true, true, 0.0}}) {
    grad_case g;
    std::string extra;
    with_policy(c.pol, c.Q, [&](const auto& m) { extra = std::string(mask_name(m)); });
    if (c.pol != policy::bidirectional) extra += ",Q=" + std::to_string(c.Q);
    if (c.pad) extra += c.pad_all ? ",pad_all_keys_of_batch1" : ",pad";
    if (c.p > 0) extra += ",p=" + std::to_string(c.p).substr(0, 3);
    g.desc = describe("attention", {{"B", c.B}, {"T", c.T}, {"S", c.S}, {"C", c.C}, {"NH", c.NH}}, extra);
    g.init = [c](io<double>& x) {
      rng r(c.B * 100 + c.T * 10 + c.S + static_cast<int>(c.pol));
      x.make("q", {c.B, c.T, c.C}, r.normals());
      x.make("k", {c.B, c.S, c.C}, r.normals());
      x.make("v", {c.B, c.S, c.C}, r.normals());
      x.make("pad", {c.B, c.S}, [&](index_t i) {  // batch 1 pads its last key, or all of them
        const index_t b = i / c.S, s = i % c.S;
        return b == 1 && (c.pad_all || s == c.S - 1) ? 0.0 : 1.0;
      });
      x.make("out", {c.B, c.T, c.C}, [](index_t) { return 0.0; });
      x.make("probs", {c.B, c.NH, c.T, c.S}, [](index_t) { return 0.0; });
    };
    g.wrt = {"q", "k", "v"};
    g.outputs = {"out"};
    g.forward = [c, with_policy](reference_backend& be, io<double>& x) {
      with_policy(c.pol, c.Q, [&](const auto& mask) {
        attention_cache<double> cache{x.out<4>("probs")};
        if (c.pad)
          attention_forward(be, x.out<3>("out"), cache, x.in<3>("q"), x.in<3>("k"), x.in<3>("v"), c.NH, mask,
                            x.in<2>("pad"), c.p, 1234);
        else
          attention_forward(be, x.out<3>("out"), cache, x.in<3>("q"), x.in<3>("k"), x.in<3>("v"), c.NH, mask,
                            no_padding, c.p, 1234);
      });
    };
    g.backward = [c, with_policy](reference_backend& be, io<double>& x) {
      with_policy(c.pol, c.Q, [&](const auto& mask) {
        attention_cache<double> cache{x.out<4>("probs")};
        if (c.pad)
          attention_backward(be, x.out<3>("dq"), x.out<3>("dk"), x.out<3>("dv"), x.in<3>("dout"), x.in<3>("q"),
                             x.in<3>("k"), x.in<3>("v"), cache, c.NH, mask, x.in<2>("pad"), c.p, 1234);
        else
          attention_backward(be, x.out<3>("dq"), x.out<3>("dk"), x.out<3>("dv"), x.in<3>("dout"), x.in<3>("q"),
                             x.in<3>("k"), x.in<3>("v"), cache, c.NH, mask, no_padding, c.p, 1234);
      });
    };
    cases.push_back(std::move(g));
  }
}

}  // namespace blip2::testing

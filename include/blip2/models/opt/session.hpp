// blip2/models/opt/session.hpp: an OPT decoder generating text, one token per sequence per step,
// through the KV cache: what generate/ drives (it models generate/decoding_model.hpp's concept).
//
// Dimensions: R sequences held (rows()), L prompt positions, V embedding rows, Dw word width.
//   start(embeds (L R, Dw), mask (R, L), max_new)  prefill: every layer's K/V of the prompt, the logits of
//                                                  its last position; room for max_new more positions
//   append(tokens (R))                             one position per sequence (mask 1, as Hugging Face
//                                                  extends it), then the next logits
//   select(rows (R'))                              sequence i becomes a copy of old sequence rows[i]:
//                                                  beams' reordering, expansion to K beams or to several
//                                                  samples per input (R' may differ from R)
//   logits()                                       (R, V) host floats of the last position
// The cache is sequence-major (row p R + b), so select gathers rows of every filled position into a
// second cache and swaps: O(positions R C) per layer, the same traffic as Hugging Face's reorder.
#pragma once
#include <algorithm>
#include <span>
#include <vector>

#include "blip2/models/opt/decoder.hpp"
#include "blip2/nn/copy_to_host.hpp"

namespace blip2 {

template <backend Be, class T = float>
class opt_session {
  using Space = typename Be::memory_space;

 public:
  opt_session(Be& be, const opt_model<T, Space>& m) : be_(be), m_(m) {}

  index_t vocab_size() const { return m_.config().vocab_size; }
  index_t rows() const { return rows_; }
  index_t length() const { return cache().length(); }
  tensor_view<const float, 2> logits() const { return {logits_host_.data(), {rows_, vocab_size()}}; }

  // Prefill: embeds (L R, Dw) sequence-major in the backend's memory, mask (R, L) host 0/1.
  void start(tensor_view<const T, 2, Space> embeds, tensor_view<const index_t, 2> mask, index_t max_new_tokens) {
    const index_t R = mask.extent(0), L = mask.extent(1);
    BLIP2_CHECK(R > 0 && L > 0, shape_error, "opt_session::start: the mask has shape ", shape_string(mask),
                "; at least one sequence and one position are needed");
    BLIP2_CHECK(max_new_tokens >= 0, value_error, "opt_session::start: max_new_tokens = ", max_new_tokens);
    for (index_t b = 0; b < R; ++b)
      BLIP2_CHECK(mask(b, L - 1) == 1, value_error, "opt_session::start: sequence ", b, " ends with padding ",
                  "(mask(", b, ", ", L - 1, ") = ", mask(b, L - 1), "): generation continues from the last position, "
                  "so pad prompts on the left");
    capacity_ = L + max_new_tokens;
    rows_ = R;
    cur_ = 0;
    mask_.assign(static_cast<std::size_t>(R * capacity_), 0);
    for (index_t b = 0; b < R; ++b)
      for (index_t s = 0; s < L; ++s) mask_[static_cast<std::size_t>(b * capacity_ + s)] = mask(b, s);
    reserve(caches_[0], R);
    run(embeds, L);
  }

  // One token per sequence; then logits() holds the next ones.
  void append(std::span<const std::int32_t> tokens) {
    BLIP2_CHECK(static_cast<index_t>(tokens.size()) == rows_, shape_error, "opt_session::append: ", tokens.size(),
                " tokens for ", rows_, " sequences");
    const index_t S = length();
    BLIP2_CHECK(S < capacity_, value_error, "opt_session::append: the session was started with room for ",
                capacity_, " positions, all used");
    ids_.host.resize(static_cast<std::size_t>(rows_));
    for (index_t b = 0; b < rows_; ++b) {
      const index_t id = tokens[static_cast<std::size_t>(b)];
      BLIP2_CHECK(id >= 0 && id < vocab_size(), value_error, "opt_session::append: token ", id, " of sequence ", b,
                  " is outside [0, ", vocab_size(), ")");
      ids_.host[static_cast<std::size_t>(b)] = id;
      mask_[static_cast<std::size_t>(b * capacity_ + S)] = 1;
    }
    ids_.upload(be_);
    lay_out(step_storage_, [&](auto& a) { step_embeds_ = a.template take<2>({rows_, m_.config().word_embed_proj_dim}); });
    embedding_forward(be_, step_embeds_, ids_.view(), m_.w.embed_tokens);
    run(detail::as_const(step_embeds_), 1);
  }

  // Sequence i continues old sequence rows[i].
  void select(std::span<const index_t> rows) {
    const index_t R = static_cast<index_t>(rows.size()), S = length();
    BLIP2_CHECK(R > 0, shape_error, "opt_session::select: no rows");
    gather_.host.resize(static_cast<std::size_t>(S * R));
    for (index_t i = 0; i < R; ++i) {
      const index_t src = rows[static_cast<std::size_t>(i)];
      BLIP2_CHECK(src >= 0 && src < rows_, value_error, "opt_session::select: row ", src, " of ", rows_);
      for (index_t p = 0; p < S; ++p) gather_.host[static_cast<std::size_t>(p * R + i)] = p * rows_ + src;
    }
    gather_.upload(be_);
    auto& from = cache();
    auto& to = caches_[1 - cur_];
    reserve(to, R);
    for (std::size_t l = 0; l < from.layers.size(); ++l) {
      auto& d = to.layers[l];
      const auto& s = from.layers[l];
      if (S > 0) {
        embedding_forward(be_, d.k_rows(0, S), gather_.view(), detail::as_const(s.k_rows(0, S)));
        embedding_forward(be_, d.v_rows(0, S), gather_.view(), detail::as_const(s.v_rows(0, S)));
      }
      d.len = S;
    }
    cur_ = 1 - cur_;
    // the host mask and logits follow their sequences
    std::vector<index_t> mask(static_cast<std::size_t>(R * capacity_));
    std::vector<float> logits(static_cast<std::size_t>(R * vocab_size()));
    const auto V = static_cast<std::size_t>(vocab_size()), cap = static_cast<std::size_t>(capacity_);
    for (index_t i = 0; i < R; ++i) {
      const auto src = static_cast<std::size_t>(rows[static_cast<std::size_t>(i)]);
      std::copy_n(mask_.begin() + static_cast<std::ptrdiff_t>(src * cap), cap,
                  mask.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(i) * cap));
      std::copy_n(logits_host_.begin() + static_cast<std::ptrdiff_t>(src * V), V,
                  logits.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(i) * V));
    }
    mask_.swap(mask);
    logits_host_.swap(logits);
    rows_ = R;
  }

 private:
  layer_kv_caches<T, Space>& cache() { return caches_[cur_]; }
  const layer_kv_caches<T, Space>& cache() const { return caches_[cur_]; }
  void reserve(layer_kv_caches<T, Space>& c, index_t R) {
    const auto& cfg = m_.config();
    c.reserve(cfg.num_hidden_layers, R, capacity_, cfg.hidden_size, false);
  }
  // the pass over L new positions, then the logits of the last one
  void run(tensor_view<const T, 2, Space> embeds, index_t L) {
    const index_t S = length() + L, V = vocab_size();
    opt_forward(be_, m_, pass_, cache(), embeds,
                tensor_view<const index_t, 2>(mask_.data(), {rows_, S}, {capacity_, 1}));
    lay_out(logits_storage_, [&](auto& a) { logits_ = a.template take<2>({rows_, V}); });
    opt_logits(be_, m_, logits_, detail::as_const(row_range(pass_.out, (L - 1) * rows_, L * rows_)));
    logits_host_.resize(static_cast<std::size_t>(rows_ * V));
    if constexpr (std::is_same_v<T, float>) {
      copy_to_host(be_, tensor_view<float, 2>(logits_host_.data(), {rows_, V}), detail::as_const(logits_));
    } else {
      std::vector<T> tmp(static_cast<std::size_t>(rows_ * V));
      copy_to_host(be_, tensor_view<T, 2>(tmp.data(), {rows_, V}), detail::as_const(logits_));
      std::transform(tmp.begin(), tmp.end(), logits_host_.begin(), [](T x) { return static_cast<float>(x); });
    }
  }

  Be& be_;
  const opt_model<T, Space>& m_;
  layer_kv_caches<T, Space> caches_[2];
  int cur_ = 0;
  index_t rows_ = 0, capacity_ = 0;
  std::vector<index_t> mask_;  // (rows, capacity) host
  opt_pass_state<T, Space> pass_;
  index_list<Space> ids_, gather_;
  buffer<T, Space> step_storage_, logits_storage_;
  tensor_view<T, 2, Space> step_embeds_, logits_;
  std::vector<float> logits_host_;
};

}  // namespace blip2

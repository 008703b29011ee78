// blip2/train/stage1_step.hpp: one BLIP-2 stage-1 step: ITC, ITM with hard negatives, ITG, and their
// backward, on a batch of (image embeddings, caption) pairs (LAVIS's Blip2Qformer.forward).
//
// Dimensions: B pairs, N image tokens, E image width, T text tokens, Q queries, C hidden, D projection.
//
//   image K/V      once per image: every cross-attention layer's keys and values (the ITM pairs reuse them)
//   image pass     queries + cross-attention, training dropout      -> query_output, and the K/V ITG reuses
//   text pass      text alone, padding mask                         -> [CLS] output
//   ITC            image_feats = normalize(vision_projection(query_output)), text_feat likewise; loss_itc
//   ITM            negatives from the sampler (or given), 3B pairs through the joint bidirectional pass
//   ITG            [DEC] replaces [CLS]; text over the image pass's cached query K/V; LM head; loss_itg
//   backward       ITG, ITM, ITC, then the image pass (which gets ITG's gradient of its cached K/V), then
//                  the image K/V projections. The image embeddings are frozen: they get no gradient.
//
// An objective whose weight is 0 is not computed at all (its passes are skipped), so the ablations of the
// paper cost what they should. ITM's sampling reads the ITC similarities, which are then computed even
// when ITC's weight is 0 (without their backward).
// Parameter gradients accumulate into model.g: zero them (model.zero_grad()) before a step unless you
// accumulate micro-batches. The step is a deterministic function of (model, batch, seed) on the reference
// backend; on oneDNN at a fixed thread count (its reductions split by thread; oneDNN 2.x has no
// deterministic mode). Fixed negatives must not be positives (use fixed_sampler to replay positives).
//
// Over W ranks (a communicator, dist/communicator.hpp; the default is one process), each rank passes its
// shard of the world batch (B pairs each, the same B and T on every rank; rank r holds global pairs
// [r B, (r + 1) B)), and the objectives see the world batch as LAVIS's do:
//   ITC   image and text features all-gathered: each rank's B rows against the W B columns. Gradient:
//         by default the full one, the gathered features' gradients summed back to their owners
//         (reduce_scatter), so that W ranks compute what one process computes on the world batch;
//         with stage1_options::itc_detach_gathered_side, LAVIS's (concat_all_gather has no gradient).
//   ITM   negatives drawn from the world's similarities (the samplers key their draws by global row, so the
//         choice does not depend on W); fixed negatives are global indices. The chosen negative texts' ids
//         come from an all-gather of the (small) id and mask tables; the chosen negative images' embeddings
//         are fetched from their owners (dist/fetch_rows.hpp) and their K/V projected here (the local
//         images' are reused: models/qformer/image_kv.hpp, concat_image_kv). The embeddings are frozen, so
//         no gradient goes back to the owner: the K/V projections' gradients are this rank's and are
//         averaged with every other parameter's.
//   ITG   local; its token mean is over the world's counted tokens (each rank's loss weighted by its share).
// Returned losses are the world batch's. The parameter gradients in model.g are this rank's part: call
// average_gradients(comm, model.gradients()) (dist/average_gradients.hpp) after the step; then they equal
// one process's gradient on the world batch, to rounding. Dropout masks are drawn per rank (the seed mixed
// with the rank, as LAVIS seeds each rank with seed + rank), so with dropout a W-rank step is a different
// draw than one process's; without dropout it is the same step.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "blip2/dist/communicator.hpp"
#include "blip2/dist/fetch_rows.hpp"
#include "blip2/loss/itc.hpp"
#include "blip2/loss/itg.hpp"
#include "blip2/loss/itm.hpp"
#include "blip2/loss/stage1_loss.hpp"
#include "blip2/mining/negative_sampler.hpp"
#include "blip2/models/qformer/pass.hpp"
#include "blip2/models/qformer/heads.hpp"

namespace blip2 {

template <class T>
struct stage1_batch {
  tensor_view<const T, 3> image_embeds;          // (B, N, E) the frozen encoder's output
  tensor_view<const index_t, 2> input_ids;       // (B, T) with [CLS] at position 0
  tensor_view<const index_t, 2> attention_mask;  // (B, T) 0/1, or empty: all ones
  tensor_view<const index_t, 1> image_ids;       // (B) or empty: pairs sharing an id are all positives
};

struct stage1_options {
  stage1_loss_weights weights{};
  bool training = true;       // dropout as the config says (false: evaluation, no dropout)
  std::uint64_t seed = 0;     // dropout and negative sampling
  double itc_label_smoothing = 0.1;
  double itg_label_smoothing = 0.1;
  // ITC's gradient through the gathered features as LAVIS computes it (loss/itc.hpp, "Gradient flow"):
  // image features only through their own rows of sim_i2t, text features through sim_t2i.
  bool itc_detach_gathered_side = false;
};

struct stage1_losses {
  double itc = 0, itm = 0, itg = 0, total = 0;
};

// Everything a step keeps between forward and backward (reused across steps: buffers only grow).
template <class T>
struct stage1_state {
  image_kv_state<T> kv;
  qformer_pass_state<T> image_pass, text_pass, itm_pass, itg_pass;
  projection_state<T> image_proj, text_proj;
  itc_cache<T> itc;
  itm_head_state<T> itm_head;
  itm_cache<T> itm;
  itg_cache<T> itg;
  // host index buffers
  std::vector<index_t> neg_image, neg_text, pair_image, pair_text, itm_ids, itm_mask, dec_ids, labels;
  // float buffers
  tensor_view<T, 3> query_output;                   // (B, Q, C) batch-major copy of the image pass's queries
  tensor_view<T, 3> dimage_feats;                   // (B, Q, D)
  tensor_view<T, 2> dtext_feat;                     // (B, D)
  tensor_view<T, 3> dquery_output;                  // (B, Q, C)
  tensor_view<T, 2> dimage_rows, dtext_rows;        // (Q B, C), (T B, C)
  tensor_view<T, 2> ditm_rows, ditm_logits;         // ((Q + T) 3B, C), (3B, 2)
  tensor_view<T, 2> ditg_rows;                      // (T B, C)
  tensor_view<T, 1> losses, dlosses;                // (3): itc, itm, itg and their weights
  std::vector<T> storage;
  // over W > 1 ranks only: the world's features and texts, the ITM image table (local images, then the
  // fetched negatives) and its K/V
  std::vector<T> world_image_feats, world_text_feat, extra_image_feats, extra_text_feat, fetched_embeds;
  std::vector<index_t> world_ids, world_mask, world_image_ids, fetched, pair_table;
  image_kv_state<T> fetched_kv, table_kv;  // the fetched images' K/V; the local and fetched ones joined
};

namespace detail {
inline std::uint64_t stage1_seed(std::uint64_t seed, std::uint64_t what) {
  const auto r = random_bits(seed, 0x5354414745310000ull + what);  // "STAGE1" + what
  return (static_cast<std::uint64_t>(r[0]) << 32) | r[1];
}

// dst (n) = the world's (W n) without block r: the other ranks' rows, in rank order
template <class T>
void other_blocks(std::vector<T>& dst, const std::vector<T>& world, std::size_t n, int r) {
  dst.assign(world.begin(), world.begin() + static_cast<std::ptrdiff_t>(n * static_cast<std::size_t>(r)));
  dst.insert(dst.end(), world.begin() + static_cast<std::ptrdiff_t>(n * static_cast<std::size_t>(r + 1)), world.end());
}

// The world's (W n) from every rank's local (n): all_gather in place.
template <communicator Comm, class T>
void gather_world(Comm& comm, std::vector<T>& world, const T* local, std::size_t n) {
  world.resize(n * static_cast<std::size_t>(comm.size()));
  T* mine = world.data() + n * static_cast<std::size_t>(comm.rank());
  std::copy_n(local, n, mine);
  comm.all_gather(std::span<const T>(mine, n), std::span<T>(world));
}
}  // namespace detail

// Forward and backward of one step; returns the losses. Negatives come from `sampler` unless
// fixed_neg_image / fixed_neg_text (B each) are given.
// Over the ranks of comm: batch is this rank's shard, fixed negatives are global indices (see the header).
template <backend Be, communicator Comm, class T, class Sampler>
stage1_losses stage1_step(Be& be, Comm& comm, qformer_model<T>& m, stage1_state<T>& st, const stage1_batch<T>& batch,
                          Sampler& sampler, const stage1_options& opt, std::span<const index_t> fixed_neg_image = {},
                          std::span<const index_t> fixed_neg_text = {}) {
  constexpr std::string_view op = "stage1_step";
  const auto& mc = m.config();
  const auto& cfg = mc.qformer;
  opt.weights.validate();
  BLIP2_CHECK(mc.with_text && mc.with_stage1_heads, value_error, op,
              ": the model needs the text side and the stage-1 heads (cls.predictions.*, temp)");
  const index_t B = batch.image_embeds.extent(0), Tn = batch.input_ids.extent(1);
  const index_t Q = mc.num_query_tokens, C = cfg.hidden_size, D = mc.image_text_hidden_size;
  detail::check_shape(op, "input_ids", batch.input_ids, {B, Tn});
  if (batch.image_ids.data()) detail::check_shape(op, "image_ids", batch.image_ids, {B});
  const int W = comm.size(), rank = comm.rank();
  const bool world = W > 1;
  const index_t off = world ? rank * B : 0, Bw = world ? W * B : B;  // global row of local pair 0; world batch
  if (world) {
    // every rank has the same B and T, and gives the same optional tensors
    const std::array<index_t, 4> mine{B, Tn, batch.image_ids.data() ? 1 : 0, batch.attention_mask.data() ? 1 : 0};
    std::vector<index_t> all(static_cast<std::size_t>(4 * W));
    comm.all_gather(std::span<const index_t>(mine), std::span<index_t>(all));
    for (int r = 0; r < W; ++r)
      BLIP2_CHECK(std::equal(mine.begin(), mine.end(), all.begin() + 4 * r), shape_error, op, ": rank ", rank, " has B = ", B,
                  ", T = ", Tn, (mine[2] ? ", image ids" : ", no image ids"), (mine[3] ? ", a mask" : ", no mask"),
                  " but rank ", r, " has B = ", all[static_cast<std::size_t>(4 * r)], ", T = ",
                  all[static_cast<std::size_t>(4 * r + 1)], (all[static_cast<std::size_t>(4 * r + 2)] ? ", image ids" : ", no image ids"),
                  (all[static_cast<std::size_t>(4 * r + 3)] ? ", a mask" : ", no mask"),
                  ": every rank needs a shard of the same shape");
  }
  // dropout seeds: one stream per rank over W > 1 ranks (the sampler's seed is the world's)
  auto dropout_seed = [&](std::uint64_t what) {
    return detail::stage1_seed(world ? detail::stage1_seed(opt.seed, 16 + static_cast<std::uint64_t>(rank)) : opt.seed, what);
  };
  BLIP2_CHECK(fixed_neg_image.size() == fixed_neg_text.size() &&
                  (fixed_neg_image.empty() || static_cast<index_t>(fixed_neg_image.size()) == B),
              shape_error, op, ": fixed negatives need B = ", B, " entries each, got ", fixed_neg_image.size(), " and ",
              fixed_neg_text.size());
  const bool do_itc = opt.weights.itc != 0, do_itm = opt.weights.itm != 0, do_itg = opt.weights.itg != 0;
  BLIP2_CHECK(do_itc || do_itm || do_itg, value_error, op, ": every objective's weight is 0");
  const bool need_feats = do_itc || do_itm;

  lay_out(st.storage, [&](auto& a) {
    st.query_output = a.template take<3>({B, Q, C});
    st.dimage_feats = a.template take<3>({B, Q, D});
    st.dtext_feat = a.template take<2>({B, D});
    st.dquery_output = a.template take<3>({B, Q, C});
    st.dimage_rows = a.template take<2>({Q * B, C});
    st.dtext_rows = a.template take<2>({Tn * B, C});
    st.ditm_rows = a.template take<2>({(Q + Tn) * 3 * B, C});
    st.ditm_logits = a.template take<2>({3 * B, 2});
    st.ditg_rows = a.template take<2>({Tn * B, C});
    st.losses = a.template take<1>({3});
    st.dlosses = a.template take<1>({3});
  });
  std::fill(st.losses.data(), st.losses.data() + 3, T{});

  // ---- forward ----
  encode_image_kv(be, m, st.kv, batch.image_embeds);
  qformer_pass_inputs<T> ip;
  ip.batch = B;
  ip.queries = true;
  ip.image = &st.kv;
  ip.training = opt.training;
  ip.seed = dropout_seed(1);
  qformer_forward(be, m, st.image_pass, ip);

  if (need_feats) {
    // ITC features: query_output (B, Q, C) batch-major, then the projections
    copy(be, st.query_output, detail::as_const(by_batch(row_range(st.image_pass.output(), 0, Q * B), B)));
    projection_forward(be, st.image_proj, m.w.vision_projection,
                       detail::as_const(tensor_view<T, 2>(st.query_output.data(), {B * Q, C})));
    qformer_pass_inputs<T> tp;
    tp.batch = B;
    tp.input_ids = batch.input_ids;
    tp.attention_mask = batch.attention_mask;
    tp.training = opt.training;
    tp.seed = dropout_seed(2);
    tp.output_positions = 1;  // ITC reads [CLS] only
    tp.skip_padding = true;   // nor the padding rows
    qformer_forward(be, m, st.text_pass, tp);
    projection_forward(be, st.text_proj, m.w.text_projection, detail::as_const(row_range(st.text_pass.output(), 0, B)));
    itc_options<T> io;
    io.image_ids = batch.image_ids;
    io.label_smoothing = opt.itc_label_smoothing;
    io.detach_gathered_side = opt.itc_detach_gathered_side;
    if (world) {
      // the other ranks' features are the extra columns, in rank order around the local block
      const std::size_t nf = static_cast<std::size_t>(B * Q * D), nt = static_cast<std::size_t>(B * D);
      detail::gather_world(comm, st.world_image_feats, st.image_proj.feats.data(), nf);
      detail::gather_world(comm, st.world_text_feat, st.text_proj.feats.data(), nt);
      detail::other_blocks(st.extra_image_feats, st.world_image_feats, nf, rank);
      detail::other_blocks(st.extra_text_feat, st.world_text_feat, nt, rank);
      io.extra.image_feats = tensor_view<const T, 3>(st.extra_image_feats.data(), {Bw - B, Q, D});
      io.extra.text_feat = tensor_view<const T, 2>(st.extra_text_feat.data(), {Bw - B, D});
      io.extra.local_offset = off;
      if (batch.image_ids.data()) {
        detail::gather_world(comm, st.world_image_ids, batch.image_ids.data(), static_cast<std::size_t>(B));
        io.image_ids = tensor_view<const index_t, 1>(st.world_image_ids.data(), {Bw});
      }
    }
    itc_forward(be, tensor_view<T, 1>(st.losses.data(), {1}), st.itc,
                detail::as_const(tensor_view<T, 3>(st.image_proj.feats.data(), {B, Q, D})),
                detail::as_const(st.text_proj.feats), m.w.temp, io);
  }

  if (do_itm) {
    // negatives: given, or drawn from the ITC similarities (no gradient through the draw)
    st.neg_image.resize(static_cast<std::size_t>(B));
    st.neg_text.resize(static_cast<std::size_t>(B));
    const tensor_view<index_t, 1> ni(st.neg_image.data(), {B}), nt(st.neg_text.data(), {B});
    if (!fixed_neg_image.empty()) {
      // the image id of global pair g (its index without ids)
      auto id_of = [&](index_t g) {
        if (!batch.image_ids.data()) return g;
        return world ? st.world_image_ids[static_cast<std::size_t>(g)] : batch.image_ids(g);
      };
      for (index_t b = 0; b < B; ++b) {
        ni(b) = fixed_neg_image[static_cast<std::size_t>(b)];
        nt(b) = fixed_neg_text[static_cast<std::size_t>(b)];
        BLIP2_CHECK(ni(b) >= 0 && ni(b) < Bw && nt(b) >= 0 && nt(b) < Bw, value_error, op, ": fixed negative of pair ",
                    b, " (image ", ni(b), ", text ", nt(b), ") outside [0, ", Bw, ")");
        BLIP2_CHECK(id_of(ni(b)) != id_of(off + b) && id_of(nt(b)) != id_of(off + b),
                    value_error, op, ": fixed negative of pair ", b, " (image ", ni(b), ", text ", nt(b),
                    ") is a positive of that pair (the same image", batch.image_ids.data() ? " id" : "",
                    "); to replay positives, pass fixed_sampler(images, texts, true) as the sampler instead");
      }
    } else {
      negative_sampling_inputs<T> si;
      si.sim_i2t = detail::as_const(st.itc.sim_i2t);
      si.sim_t2i = detail::as_const(st.itc.sim_t2i);
      si.image_ids = world && batch.image_ids.data() ? tensor_view<const index_t, 1>(st.world_image_ids.data(), {Bw})
                                                     : batch.image_ids;
      si.local_offset = off;
      si.seed = detail::stage1_seed(opt.seed, 3);
      sampler.sample(si, ni, nt);
    }
    // 3B pairs: (image b, text b), (neg image, text b), (image b, neg text)
    st.pair_image.resize(static_cast<std::size_t>(3 * B));
    st.pair_text.resize(static_cast<std::size_t>(3 * B));
    itm_pair_layout(detail::as_const(ni), detail::as_const(nt), tensor_view<index_t, 1>(st.pair_image.data(), {3 * B}),
                    tensor_view<index_t, 1>(st.pair_text.data(), {3 * B}), off);
    // the texts of the pairs: the world's id and mask tables over W > 1 ranks (pair_text is global)
    const index_t* ids_of = batch.input_ids.data();
    const index_t* mask_of = batch.attention_mask.data();
    if (world) {
      detail::gather_world(comm, st.world_ids, batch.input_ids.data(), static_cast<std::size_t>(B * Tn));
      ids_of = st.world_ids.data();
      if (mask_of) {
        detail::gather_world(comm, st.world_mask, batch.attention_mask.data(), static_cast<std::size_t>(B * Tn));
        mask_of = st.world_mask.data();
      }
    }
    st.itm_ids.resize(static_cast<std::size_t>(3 * B * Tn));
    st.itm_mask.resize(static_cast<std::size_t>(3 * B * Tn));
    for (index_t r = 0; r < 3 * B; ++r)
      for (index_t t = 0; t < Tn; ++t) {
        const index_t src = st.pair_text[static_cast<std::size_t>(r)];
        st.itm_ids[static_cast<std::size_t>(r * Tn + t)] = ids_of[src * Tn + t];
        st.itm_mask[static_cast<std::size_t>(r * Tn + t)] = mask_of ? mask_of[src * Tn + t] : 1;
      }
    qformer_pass_inputs<T> jp;
    jp.batch = 3 * B;
    jp.queries = true;
    jp.input_ids = tensor_view<const index_t, 2>(st.itm_ids.data(), {3 * B, Tn});
    jp.attention_mask = tensor_view<const index_t, 2>(st.itm_mask.data(), {3 * B, Tn});
    jp.attention = qformer_attention::bidirectional;
    jp.image = &st.kv;
    jp.image_index = st.pair_image;
    if (world) {
      // the pairs' images: the local ones and the negatives fetched from their owners, as one table
      const index_t N = batch.image_embeds.extent(1), E = batch.image_embeds.extent(2);
      st.fetched.clear();
      for (index_t g : st.pair_image)
        if (g < off || g >= off + B) st.fetched.push_back(g);
      std::sort(st.fetched.begin(), st.fetched.end());
      st.fetched.erase(std::unique(st.fetched.begin(), st.fetched.end()), st.fetched.end());
      const index_t R = static_cast<index_t>(st.fetched.size());
      st.fetched_embeds.resize(static_cast<std::size_t>(R * N * E));
      fetch_rows(comm, std::span<const index_t>(st.fetched), tensor_view<const T, 2>(batch.image_embeds.data(), {B, N * E}),
                 tensor_view<T, 2>(st.fetched_embeds.data(), {R, N * E}));
      st.pair_table.resize(st.pair_image.size());
      for (std::size_t k = 0; k < st.pair_image.size(); ++k) {
        const index_t g = st.pair_image[k];
        st.pair_table[k] = g >= off && g < off + B
                               ? g - off
                               : B + (std::lower_bound(st.fetched.begin(), st.fetched.end(), g) - st.fetched.begin());
      }
      // the table's K/V: the local images' (computed above) and the fetched ones', projected here
      if (R > 0) {
        encode_image_kv(be, m, st.fetched_kv, tensor_view<const T, 3>(st.fetched_embeds.data(), {R, N, E}));
        concat_image_kv(be, m, st.table_kv, st.kv, st.fetched_kv);
      }
      jp.image = R > 0 ? &st.table_kv : &st.kv;
      jp.image_index = st.pair_table;
    }
    jp.training = opt.training;
    jp.seed = dropout_seed(4);
    jp.output_positions = Q;  // the ITM head reads the query rows only
    jp.skip_padding = true;
    qformer_forward(be, m, st.itm_pass, jp);
    itm_head_forward(be, st.itm_head, m.w.itm_head, detail::as_const(row_range(st.itm_pass.output(), 0, Q * 3 * B)),
                     3 * B);
    itm_forward(be, tensor_view<T, 1>(st.losses.data() + 1, {1}), st.itm, detail::as_const(st.itm_head.logits));
  }

  if (do_itg) {
    st.dec_ids.resize(static_cast<std::size_t>(B * Tn));
    st.labels.resize(static_cast<std::size_t>(B * Tn));
    itg_decoder_inputs(batch.input_ids, cfg.dec_token_id(), cfg.pad_token_id,
                       tensor_view<index_t, 2>(st.dec_ids.data(), {B, Tn}), tensor_view<index_t, 2>(st.labels.data(), {B, Tn}));
    qformer_pass_inputs<T> gp;
    gp.batch = B;
    gp.input_ids = tensor_view<const index_t, 2>(st.dec_ids.data(), {B, Tn});
    gp.attention_mask = batch.attention_mask;
    gp.prefix = &st.image_pass;
    gp.training = opt.training;
    gp.seed = dropout_seed(5);
    // padding rows can be skipped when nothing reads them: row t predicts label t + 1, so every masked
    // position t must be the last or be followed by an ignored label (true for LAVIS's suffix padding)
    gp.skip_padding = true;
    for (index_t b = 0; b < B && batch.attention_mask.data(); ++b)
      for (index_t t = 0; t + 1 < Tn; ++t)
        if (batch.attention_mask(b, t) == 0 && st.labels[static_cast<std::size_t>(b * Tn + t + 1)] != default_ignore_index)
          gp.skip_padding = false;
    qformer_forward(be, m, st.itg_pass, gp);
    itg_forward(be, tensor_view<T, 1>(st.losses.data() + 2, {1}), st.itg, m.w.lm_head, m.w.word_embeddings,
                detail::as_const(st.itg_pass.output()), tensor_view<const index_t, 2>(st.labels.data(), {B, Tn}),
                cfg.layer_norm_eps, opt.itg_label_smoothing);
  }

  stage1_losses out;
  out.itc = do_itc ? static_cast<double>(st.losses(0)) : 0.0;
  out.itm = do_itm ? static_cast<double>(st.losses(1)) : 0.0;
  out.itg = do_itg ? static_cast<double>(st.losses(2)) : 0.0;
  double itg_share = 1;  // W n_r / N: this rank's ITG tokens against the world's mean
  if (world) {
    // ITC and ITM are means over rows, B per rank: the world's is the mean of the ranks'. ITG's is over
    // counted tokens, which differ by rank: sum(n_r loss_r) / sum(n_r).
    const double n_r = do_itg ? static_cast<double>(st.itg.count(0)) : 0.0;  // tokens ITG counted here
    std::array<double, 4> sums{out.itc, out.itm, do_itg ? n_r * out.itg : 0.0, do_itg ? n_r : 0.0};
    comm.all_reduce_sum(std::span<double>(sums));
    out.itc = sums[0] / W, out.itm = sums[1] / W;
    out.itg = sums[3] > 0 ? sums[2] / sums[3] : 0.0;
    itg_share = sums[3] > 0 ? W * n_r / sums[3] : 0.0;
  }
  out.total = stage1_total(opt.weights, out.itc, out.itm, out.itg);

  // ---- backward: d total / d each loss is its weight ----
  const stage1_dlosses dl = stage1_backward(opt.weights);
  st.dlosses(0) = static_cast<T>(dl.itc);
  st.dlosses(1) = static_cast<T>(dl.itm);
  st.dlosses(2) = static_cast<T>(dl.itg * itg_share);
  if (do_itg) {
    // loss_itg -> the LM head (and the tied word embeddings) -> the text rows of the cached-K/V pass
    itg_backward(be, st.ditg_rows, m.g.lm_head, m.g.word_embeddings, tensor_view<const T, 1>(st.dlosses.data() + 2, {1}),
                 st.itg, m.w.lm_head, m.w.word_embeddings);
    qformer_backward(be, m, st.itg_pass, detail::as_const(st.ditg_rows));  // adds into the image pass's K/V
  }
  if (do_itm) {
    // loss_itm -> logits -> the joint pass's query rows (text rows get nothing)
    itm_backward(be, st.ditm_logits, tensor_view<const T, 1>(st.dlosses.data() + 1, {1}), detail::as_const(st.itm_head.logits),
                 st.itm);
    fill(be, st.ditm_rows, T{});
    itm_head_backward(be, st.itm_head, m.w.itm_head, m.g.itm_head, detail::as_const(st.ditm_logits),
                      row_range(st.ditm_rows, 0, Q * 3 * B));
    qformer_backward(be, m, st.itm_pass, detail::as_const(st.ditm_rows));  // adds into the image K/V gradients
    if (world && !st.fetched.empty()) {  // the table's K/V gradients: the local images', the fetched ones'
      split_image_kv_grads(be, m, st.table_kv, st.kv, st.fetched_kv);
      encode_image_kv_backward(be, m, st.fetched_kv);  // the K/V projections' share of the fetched images
    }
  }
  fill(be, st.dimage_rows, T{});
  if (do_itc) {
    // loss_itc -> features (and temp) -> projections -> query_output and the text pass's [CLS] row
    itc_backward(be, tensor_view<T, 3>(st.dimage_feats.data(), {B, Q, D}), st.dtext_feat, m.g.temp,
                 tensor_view<const T, 1>(st.dlosses.data(), {1}), st.itc);
    if (world && !opt.itc_detach_gathered_side) {
      // the full gradient: every rank's loss reads every rank's features; each rank's gradient of its
      // loss with respect to all W B columns, summed over the ranks, block r to rank r
      const std::size_t nf = static_cast<std::size_t>(B * Q * D), nt = static_cast<std::size_t>(B * D);
      std::copy_n(st.dimage_feats.data(), nf, st.itc.dimage_all.data() + off * Q * D);  // the local block, both ways
      comm.reduce_scatter_sum(std::span<const T>(st.itc.dimage_all.data(), nf * W), std::span<T>(st.dimage_feats.data(), nf));
      comm.reduce_scatter_sum(std::span<const T>(st.itc.dtext_all.data(), nt * W), std::span<T>(st.dtext_feat.data(), nt));
    }
    projection_backward(be, st.image_proj, m.w.vision_projection, m.g.vision_projection,
                        detail::as_const(tensor_view<T, 2>(st.dimage_feats.data(), {B * Q, D})),
                        tensor_view<T, 2>(st.dquery_output.data(), {B * Q, C}));
    copy(be, by_batch(st.dimage_rows, B), detail::as_const(st.dquery_output));
    fill(be, st.dtext_rows, T{});
    projection_backward(be, st.text_proj, m.w.text_projection, m.g.text_projection, detail::as_const(st.dtext_feat),
                        row_range(st.dtext_rows, 0, B));
    qformer_backward(be, m, st.text_pass, detail::as_const(st.dtext_rows));
  }
  if (do_itc || do_itg) qformer_backward(be, m, st.image_pass, detail::as_const(st.dimage_rows));
  encode_image_kv_backward(be, m, st.kv);  // the image K/V projections; the encoder is frozen
  return out;
}

// One process: the whole batch (the default communicator).
template <backend Be, class T, class Sampler>
stage1_losses stage1_step(Be& be, qformer_model<T>& m, stage1_state<T>& st, const stage1_batch<T>& batch, Sampler& sampler,
                          const stage1_options& opt, std::span<const index_t> fixed_neg_image = {},
                          std::span<const index_t> fixed_neg_text = {}) {
  single_process_communicator one;
  return stage1_step(be, one, m, st, batch, sampler, opt, fixed_neg_image, fixed_neg_text);
}

}  // namespace blip2

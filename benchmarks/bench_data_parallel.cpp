// bench_data_parallel: what data parallelism costs per stage-1 step at BLIP-2 size: the bytes each rank
// sends and the seconds it spends in communication against the seconds it computes.
//
// Run it as one process (the peer: the world batch on one rank) and under mpirun (W ranks, each its shard);
// benchmarks/run_data_parallel.sh runs both on the same world batch and prints the ratio.
//
// The step: blip2::stage1_step over the communicator (ITC over the gathered features with the full
// gradient, ITM negatives drawn from the world and fetched from their owners, ITG), average_gradients
// (one all-reduce per bucket), clipping and AdamW, on the oneDNN backend. Sizes: Q-Former 12 layers,
// C 768, Q 32, cross-attention every 2nd layer, image 257 x 1408, vocabulary 30523, D 256; --world-batch B
// pairs per step in all (default 8), T 32 text tokens. Dropout off.
//
// Printed per step (medians of --reps timed steps after one untimed step):
//   - the step's wall time, and inside it the seconds spent in MPI per operation kind (mpi_communicator's
//     stats: wall time in the call, waiting for the other rank included), and the bytes this rank sent;
//   - the same bytes from the shapes (what each collective moves: ITC features, ITM negatives' image
//     embeddings, the gradient all-reduce), so the projection in the README can scale them;
//   - the gradient all-reduce alone (107 M floats) at three bucket sizes, for its bandwidth here.
//
// Usage: [mpirun -np W] bench_data_parallel [--world-batch B] [--reps N] [--layers N] [--threads N]
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_common.hpp"
#include "blip2/dist/average_gradients.hpp"
#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/optim/adamw.hpp"
#include "blip2/optim/clip_grad.hpp"
#include "blip2/train/stage1_step.hpp"
#include "blip2/dist/launch.hpp"

using namespace blip2;
using namespace blip2::bench;

namespace {

constexpr index_t N_IMG = 257, E_IMG = 1408, VOCAB = 30523, T_TEXT = 32;

struct settings {
  index_t world_batch = 8, layers = 12;
  int reps = 3, threads = 0;
};

// What one step's collectives move per rank (bytes sent), from the shapes: W ranks, B pairs each.
struct traffic {
  double itc = 0, itm_fetch = 0, grads = 0;
};
traffic expected_traffic(index_t W, index_t B, index_t Q, index_t D, index_t remote_negatives, double params) {
  traffic t;
  // all_gather of the image features (B, Q, D) and text features (B, D), each rank sends its block to W - 1
  // others (ring: (W - 1) blocks) and reduce_scatter of the same sizes back (the full ITC gradient)
  t.itc = 2.0 * static_cast<double>(W - 1) * static_cast<double>(B * Q * D + B * D) * 4;
  // the fetched negatives' embeddings (N, E) each, float32, plus the id/mask gather (B, T) int64 twice
  t.itm_fetch = static_cast<double>(remote_negatives) * N_IMG * E_IMG * 4 + 2.0 * static_cast<double>(W - 1) * B * T_TEXT * 8;
  // ring all-reduce: 2 (W - 1) / W of the gradient
  t.grads = 2.0 * static_cast<double>(W - 1) / static_cast<double>(W) * params * 4;
  return t;
}

template <class Comm>
int run(Comm& comm, const settings& s) {
  const int W = comm.size(), rank = comm.rank();
  const bool lead = rank == 0;
  BLIP2_CHECK(s.world_batch % W == 0, value_error, "--world-batch ", s.world_batch, " is not divisible by ", W, " ranks");
  const index_t B = s.world_batch / W, off = rank * B;
  const int threads = set_threads(s.threads);
  if (lead) print_banner("bench_data_parallel", false, threads);

  qformer_model_config mc;
  mc.qformer.vocab_size = VOCAB;
  mc.qformer.num_hidden_layers = s.layers;
  mc.qformer.hidden_dropout_prob = mc.qformer.attention_probs_dropout_prob = 0.0;
  mc.with_text = true;
  mc.with_stage1_heads = true;
  qformer_model<float> m(mc);
  fill_hashed(m);
  const index_t Q = mc.num_query_tokens, D = mc.image_text_hidden_size;
  const double params = static_cast<double>(m.parameters().size());

  // this rank's shard of one world batch (the same hashed batch whatever W)
  host_tensor<float, 3> images({B, N_IMG, E_IMG});
  host_tensor<index_t, 2> ids({B, T_TEXT}), mask({B, T_TEXT});
  for (index_t i = 0; i < images.size(); ++i) images[i] = unit(11, static_cast<std::uint64_t>(off * N_IMG * E_IMG + i));
  for (index_t b = 0; b < B; ++b) {
    const index_t g = off + b, len = std::max<index_t>(4, T_TEXT - (5 * g) % 24);
    for (index_t t = 0; t < T_TEXT; ++t) {
      ids(b, t) = t == 0 ? 101 : t < len ? 1000 + static_cast<index_t>(bits24(12, static_cast<std::uint64_t>(g * T_TEXT + t)) % 29000) : 0;
      mask(b, t) = t < len ? 1 : 0;
    }
  }
  stage1_batch<float> batch{detail::as_const(images.view()), detail::as_const(ids.view()), detail::as_const(mask.view()), {}};

  onednn_backend be;
  stage1_state<float> st;
  blip2_sampler sampler;
  adamw_options ao;
  ao.weight_decay = 0.05;
  auto opt = make_adamw(m, ao);
  stage1_options so;
  if (lead)
    std::printf("step: Q-Former %lld layers, %.1f M parameters; world batch %lld pairs over %d rank(s) (%lld each), T %lld, "
                "image %lld x %lld, oneDNN f32\n",
                static_cast<long long>(s.layers), params * 1e-6, static_cast<long long>(s.world_batch), W,
                static_cast<long long>(B), static_cast<long long>(T_TEXT), static_cast<long long>(N_IMG),
                static_cast<long long>(E_IMG));

  struct step_times {
    double total = 0, compute = 0, optim = 0, comm_itc = 0, comm_itm = 0, comm_grads = 0, bytes = 0;
    index_t remote = 0;
  };
  std::vector<step_times> runs;
  for (int rep = 0; rep <= s.reps; ++rep) {
    so.seed = static_cast<std::uint64_t>(rep);
#ifdef BLIP2_HAS_MPI
    if constexpr (std::is_same_v<Comm, mpi_communicator>) comm.reset_stats();
#endif
    comm.barrier();
    const double t0 = now_s();
    m.zero_grad();
    const double tz = now_s();
    stage1_step(be, comm, m, st, batch, sampler, so);
    const double t1 = now_s();
    average_gradients(comm, m.gradients());
    const double t2 = now_s();
    clip_grad_norm(m.gradients(), 1.0);
    opt.step(m.parameters(), m.gradients(), 1e-4);
    const double t3 = now_s();
    step_times r;
    r.total = t3 - t0;
    r.comm_grads = t2 - t1;
    r.optim = (t3 - t2) + (tz - t0);  // zeroing, clipping and AdamW over every parameter: the same on every rank
    r.remote = static_cast<index_t>(st.fetched.size());  // distinct negative images fetched from other ranks
#ifdef BLIP2_HAS_MPI
    if constexpr (std::is_same_v<Comm, mpi_communicator>) {
      const auto& c = comm.stats();
      r.comm_itc = c.all_gather.seconds + c.reduce_scatter.seconds;  // ITC's features both ways, ITM's id tables
      r.comm_itm = c.all_to_all.seconds;                              // the negatives' fetch
      r.bytes = c.total_bytes();
    }
#endif
    r.compute = r.total - r.comm_itc - r.comm_itm - r.comm_grads;
    if (rep > 0) runs.push_back(r);
  }
  auto med = [&](double step_times::*f) {
    std::vector<double> v;
    for (const auto& r : runs) v.push_back(r.*f);
    return median(v);
  };
  // every rank's figures, then rank 0 prints them
  std::vector<double> mine{med(&step_times::total),     med(&step_times::compute),    med(&step_times::comm_itc),
                           med(&step_times::comm_itm),  med(&step_times::comm_grads), med(&step_times::bytes),
                           static_cast<double>(runs.back().remote), med(&step_times::optim)};
  std::vector<double> all(mine.size() * static_cast<std::size_t>(W));
  comm.all_gather(std::span<const double>(mine), std::span<double>(all));
  if (lead) {
    std::printf("per step (median of %d):\n", s.reps);
    std::printf("  rank  step s  compute s (optimizer s)  ITC gathers s  ITM fetch s  grad all-reduce s  comm share  MB payload  "
                "negatives fetched\n");
    for (int r = 0; r < W; ++r) {
      const double* v = all.data() + r * mine.size();
      const double comm_s = v[2] + v[3] + v[4];
      std::printf("  %4d  %6.2f  %9.2f (%11.2f)  %13.3f  %11.3f  %17.3f  %9.1f%%  %10.1f  %17.0f\n", r, v[0], v[1], v[7], v[2], v[3],
                  v[4], 100 * comm_s / v[0], v[5] / 1e6, v[6]);
    }
    const traffic t = expected_traffic(W, B, Q, D, static_cast<index_t>(all[6]), params);
    std::printf("bytes per rank per step from the shapes (W = %d, B = %lld each): ITC features %.2f MB, ITM negatives %.1f MB "
                "(%lld images of %.2f MB), gradient all-reduce %.0f MB (ring: 2 (W-1)/W of %.0f MB)\n",
                W, static_cast<long long>(B), t.itc / 1e6, t.itm_fetch / 1e6, static_cast<long long>(all[6]),
                N_IMG * E_IMG * 4 / 1e6, t.grads / 1e6, params * 4 / 1e6);
    std::printf("JSON {\"ranks\": %d, \"world_batch\": %lld, \"step_s\": %.3f, \"compute_s\": %.3f, \"optimizer_s\": %.3f, "
                "\"itc_comm_s\": %.4f, \"itm_comm_s\": %.4f, \"grad_comm_s\": %.4f, \"mb_payload\": %.1f, \"params\": %.0f}\n",
                W, static_cast<long long>(s.world_batch), all[0], all[1], all[7], all[2], all[3], all[4], all[5] / 1e6, params);
  }
  // the gradient all-reduce alone, three bucket sizes
  if (W > 1) {
    for (std::size_t bucket : {std::size_t{1} << 20, default_bucket_elements, std::size_t{1} << 26}) {
      std::vector<double> t;
      for (int rep = 0; rep <= s.reps; ++rep) {
        comm.barrier();
        const double a = now_s();
        average_gradients(comm, m.gradients(), bucket);
        if (rep > 0) t.push_back(now_s() - a);
      }
      const double sec = median(t);
      if (lead)
        std::printf("gradient all-reduce alone, buckets of %5.1f MB: %.3f s = %.2f GB/s of gradient (%.0f MB)\n",
                    static_cast<double>(bucket) * 4 / 1e6, sec, params * 4 / sec / 1e9, params * 4 / 1e6);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--world-batch") s.world_batch = std::stol(flag_value(argc, argv, i));
    else if (a == "--reps") s.reps = std::stoi(flag_value(argc, argv, i));
    else if (a == "--layers") s.layers = std::stol(flag_value(argc, argv, i));
    else if (a == "--threads") s.threads = std::stoi(flag_value(argc, argv, i));
    else {
      std::fprintf(stderr, "usage: [mpirun -np W] bench_data_parallel [--world-batch B] [--reps N] [--layers N] [--threads N]\n");
      return 2;
    }
  }
  return with_communicator(argc, argv, [&](auto& comm) {
    try {
      return run(comm, s);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_data_parallel: %s\n", e.what());
      return 1;
    }
  });
}

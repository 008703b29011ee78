// bench_retrieve: images per second of examples/retrieve's path at BLIP-2 sizes, float32 on oneDNN, random
// weights: an image FILE to its retrieval features, and the ITM re-ranking that follows.
//
// Sizes: EVA ViT-g/14 at 224 px (39 layers, E 1408, F 6144, 16 heads, N 257) and the Q-Former of
// blip2-itm-vit-g (12 layers, C 768, 32 queries, D 256, cross-attention every 2nd layer, V 30523).
// Stages, each timed per image, the median of --images runs after one warm-up (primitive creation):
//   decode     load_image of a 640 x 480 JPEG written here with stb_image_write, blip2_eval_transform to 224
//   vit        vision_forward, one image
//   image pass image_features: encode_image_kv + the queries-only pass + vision_projection
// "encode" = their sum: what retrieve's streaming phase spends per image. Then the re-ranking cost:
//   itm        seconds per (image, text) pair: itm_match_scores on --pairs pairs of one image and texts of
//              --tokens tokens (median of 3 batches)
//   text       seconds per caption of the text pass (text_features on 64 captions)
// and the end-to-end estimate for retrieval with k candidates and c captions per image (the pairs of one
// image: k from its own query plus, on average, c k from the caption queries that pick it):
//   seconds per image = encode + c text + (k + c k) itm
// Weights: the ViT's layers all view one layer's parameters (vision_storage::shared_layers: 101 MB instead
// of 3.9 GB; the same work). bfloat16 is not measured: oneDNN 2.6 has no bf16 matmul on AVX2 CPUs (this one:
// the ISA is printed), see models/vit/bf16.hpp.
//
// Usage: bench_retrieve [--images N] [--k K] [--captions-per-image C] [--pairs P] [--tokens T] [--vit-layers L]
//   defaults: 3 images, k 128, 1 caption per image, 32 pairs, 20 tokens, 39 ViT layers
// Threads: OpenMP's (OMP_NUM_THREADS). On a shared machine check that the CPUs are idle first.
//
// Measured (2 AVX2 cores shared with other engineers' jobs, OMP_NUM_THREADS=2, defaults; the ViT alone varies
// 2x with the load, see bench_vision.cpp):
//   run 1: encode 12.5 s per image = 0.080 images/s (ViT 12.0 s = 96%, image pass 0.54 s, decode 19 ms);
//          ITM 0.36 s per pair, text 0.10 s; end to end at k 128, 1 caption per image: 104 s per image
//   run 2 (others used 128% of one CPU): encode 20.3 s = 0.049 images/s (ViT 17.9 s = 88%); ITM 0.43 s per
//          pair; end to end 130 s per image
// So the ViT dominates the streaming phase, but at k = 128 the 256 ITM passes per image (each a 12-layer pass
// over 32 + T tokens, ~9 GFLOP) cost 5-7 times the ViT: re-ranking, not the image encoder, bounds retrieve.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <stb/stb_image_write.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "blip2/backend/onednn/onednn.hpp"
#include "blip2/core/rng.hpp"
#include "blip2/eval/rerank_scores.hpp"
#include "blip2/io/image.hpp"
#include "blip2/models/vit/bf16.hpp"
#include "blip2/models/vit/vision_transformer.hpp"

using namespace blip2;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void fill(std::span<float> x, std::uint64_t seed, float scale, float offset = 0) {
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = offset + scale * (2 * uniform_float(seed, i) - 1);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// CPU seconds used by every process (busy jiffies of /proc/stat) and by this one (getrusage): a shared
// machine slows every figure, so the run reports what the others took.
double cpu_all_s() {
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return 0;
  long long v[8] = {};
  const int got = std::fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                              &v[6], &v[7]);
  std::fclose(f);
  if (got != 8) return 0;
  return static_cast<double>(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}
double cpu_self_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  index_t images = 3, k = 128, per_image = 1, pairs = 32, tokens = 20, vit_layers = 39;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto num = [&]() -> index_t {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_retrieve: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::max<index_t>(1, std::atoll(argv[++i]));
    };
    if (a == "--images") images = num();
    else if (a == "--k") k = num();
    else if (a == "--captions-per-image") per_image = num();
    else if (a == "--pairs") pairs = num();
    else if (a == "--tokens") tokens = std::max<index_t>(2, num());
    else if (a == "--vit-layers") vit_layers = num();
    else {
      std::fprintf(stderr, "usage: bench_retrieve [--images N] [--k K] [--captions-per-image C] [--pairs P] "
                           "[--tokens T] [--vit-layers L]\n");
      return 2;
    }
  }
  int threads = 1;
#if defined(_OPENMP)
  threads = omp_get_max_threads();
#endif
  onednn_backend be;
  std::printf("bench_retrieve: float32, oneDNN (ISA %s), %d thread(s); bf16 matmul %s\n", onednn_cpu_isa_name().c_str(),
              threads, onednn_bf16_matmul_available(be) ? "available (not measured: path not implemented)"
                                                        : "unavailable on this CPU (oneDNN 2.6: none on AVX2)");

  // ---- models: random weights of a trained model's scale (O(1) activations), LayerNorm weights near 1 ----
  vision_config vc;  // EVA ViT-g/14, 224 px
  vc.num_hidden_layers = vit_layers;
  vision_model<float> vit(vc, vision_storage::shared_layers);
  fill(vit.parameters(), 1, 0.02f);
  for (auto* ln : {&vit.w.layers[0].attention.norm, &vit.w.layers[0].mlp.norm, &vit.w.post_norm})
    fill({ln->weight.data(), static_cast<std::size_t>(ln->weight.size())}, 2, 0.1f, 1.0f);
  qformer_model_config qc;  // blip2-itm-vit-g
  qc.qformer.vocab_size = 30523;
  qformer_model<float> qf(qc);
  fill(qf.parameters(), 3, 0.02f);
  std::uint64_t seed = 4;
  for_each_parameter(qc, qf.w, [&](const std::string& name, auto& v) {
    if (ends_with(name, "LayerNorm.weight") || ends_with(name, "layernorm.weight"))
      fill({v.data(), static_cast<std::size_t>(v.size())}, seed++, 0.1f, 1.0f);
  });
  std::printf("ViT-g/14: %lld layers (shared weights), 224 px; Q-Former: 12 layers, C 768, Q 32, D 256\n",
              static_cast<long long>(vit_layers));

  // ---- a JPEG file to decode: 640 x 480, smooth colours plus noise ----
  const int W = 640, H = 480;
  std::vector<unsigned char> rgb(static_cast<std::size_t>(W * H * 3));
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[static_cast<std::size_t>((y * W + x) * 3 + c)] = static_cast<unsigned char>(
            (x * (c + 1) / 5 + y * (3 - c) / 4 + static_cast<int>(64 * uniform_float(5, static_cast<std::uint64_t>(y * W + x)))) & 255);
  const auto jpeg = std::filesystem::temp_directory_path() / ("bench_retrieve." + std::to_string(::getpid()) + ".jpg");
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines as they come, also into a pipe
  if (!stbi_write_jpg(jpeg.c_str(), W, H, 3, rgb.data(), 90)) {
    std::fprintf(stderr, "bench_retrieve: cannot write %s\n", jpeg.c_str());
    return 1;
  }

  const double all0 = cpu_all_s(), self0 = cpu_self_s(), wall0 = now_s();
  // ---- encode: decode + transform, ViT, image pass; one warm-up, then `images` timed ----
  const index_t S = vc.image_size, N = vision_num_tokens(vc, S, S), E = vc.hidden_size;
  const index_t Q = qc.num_query_tokens, D = qc.image_text_hidden_size;
  host_tensor<float, 3> embeds({1, N, E}), feats({1, Q, D});
  vision_state<float> vst;
  std::vector<double> t_dec, t_vit, t_pass, t_all;
  for (index_t r = 0; r <= images; ++r) {
    const double t0 = now_s();
    const host_tensor<float, 3> chw = io::blip2_eval_transform(io::load_image(jpeg), static_cast<int>(S));  // (3, S, S)
    const double t1 = now_s();
    vision_forward(be, vit, vst, tensor_view<const float, 4>(chw.data(), {1, 3, S, S}), embeds.view());
    const double t2 = now_s();
    image_features(be, qf, detail::as_const(embeds.view()), feats.view());
    const double t3 = now_s();
    if (r == 0) continue;  // warm-up
    t_dec.push_back(t1 - t0), t_vit.push_back(t2 - t1), t_pass.push_back(t3 - t2), t_all.push_back(t3 - t0);
    std::printf("  image %lld: decode+transform %.1f ms, ViT %.3f s, image pass %.3f s\n", static_cast<long long>(r),
                1e3 * (t1 - t0), t2 - t1, t3 - t2);
  }
  std::filesystem::remove(jpeg);
  const double encode = median(t_all);

  // ---- re-ranking: ITM pairs of one image, and the text pass ----
  std::vector<index_t> ids(static_cast<std::size_t>(pairs * tokens)), mask(ids.size(), 1);
  for (index_t j = 0; j < pairs; ++j)
    for (index_t t = 0; t < tokens; ++t)
      ids[static_cast<std::size_t>(j * tokens + t)] =
          t == 0 ? 101 : t == tokens - 1 ? 102 : 1000 + static_cast<index_t>(20000 * uniform_float(6, static_cast<std::uint64_t>(j * tokens + t)));
  const tensor_view<const index_t, 2> idv(ids.data(), {pairs, tokens}), mv(mask.data(), {pairs, tokens});
  std::vector<std::pair<index_t, index_t>> plist;
  for (index_t j = 0; j < pairs; ++j) plist.emplace_back(0, j);
  auto image_of = [&](index_t) { return tensor_view<const float, 2>(embeds.data(), {N, E}); };
  std::vector<double> t_itm, t_txt;
  for (int r = 0; r <= 3; ++r) {
    const double t0 = now_s();
    (void)itm_match_scores(be, qf, std::span<const std::pair<index_t, index_t>>(plist), image_of, idv, mv, pairs);
    const double t1 = now_s();
    (void)text_features(be, qf, idv, mv, pairs);
    const double t2 = now_s();
    if (r == 0) continue;
    t_itm.push_back((t1 - t0) / static_cast<double>(pairs));
    t_txt.push_back((t2 - t1) / static_cast<double>(pairs));
  }
  const double itm = median(t_itm), txt = median(t_txt);
  const double pairs_per_image = static_cast<double>(k + per_image * k);
  const double end_to_end = encode + static_cast<double>(per_image) * txt + pairs_per_image * itm;

  const double others = (cpu_all_s() - all0) - (cpu_self_s() - self0), wall = now_s() - wall0;
  std::printf("\nmedians of %lld images (1 per call); other processes used %.0f%% of one CPU during the runs%s\n",
              static_cast<long long>(images), 100 * others / wall, others / wall > 0.2 ? " (figures slowed)" : "");
  std::printf("  decode + transform   %8.1f ms\n", 1e3 * median(t_dec));
  std::printf("  ViT-g/14             %8.3f s   (%.0f%% of encode)\n", median(t_vit), 100 * median(t_vit) / encode);
  std::printf("  Q-Former image pass  %8.3f s\n", median(t_pass));
  std::printf("  encode (streaming)   %8.3f s   = %.3f images/s\n", encode, 1 / encode);
  std::printf("  ITM per pair         %8.4f s   (%lld pairs of %lld tokens per batch)\n", itm,
              static_cast<long long>(pairs), static_cast<long long>(tokens));
  std::printf("  text pass per text   %8.4f s\n", txt);
  std::printf("retrieve end to end, k %lld, %lld caption(s) per image (%.0f ITM pairs per image): %.2f s per image = "
              "%.3f images/s\n",
              static_cast<long long>(k), static_cast<long long>(per_image), pairs_per_image, end_to_end, 1 / end_to_end);
  return 0;
}

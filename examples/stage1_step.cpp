// stage1_step: one BLIP-2 stage-1 training step (ITC + ITM + ITG) on a batch, as a command-line tool:
// the three losses and the gradient of their sum with respect to every parameter of the checkpoint.
//
// What it teaches:
//   - loading a Q-Former WITH the stage-1 heads (the ITG LM head cls.predictions.* and the ITC
//     temperature temp) from a checkpoint directory, and refusing, with the names of what is missing,
//     one that has only the Hugging Face retrieval heads;
//   - one call of blip2::stage1_step: the image pass, the text pass, ITC, ITM over 3B pairs (positive,
//     negative image, negative text), ITG over the image pass's cached query K/V, and the backward of
//     loss_itc + loss_itm + loss_itg into model.g (zeroed first: gradients accumulate);
//   - ITM's negatives either given (itm_neg_image_idx / itm_neg_text_idx: replaying another run's draws,
//     through blip2::fixed_sampler, which refuses a negative that is a positive) or drawn by BLIP-2's
//     hard-negative sampler (blip2::blip2_sampler) from the ITC similarities, with --seed: the step is a
//     deterministic function of (model, inputs, seed), so the same seed writes the same bytes (on the
//     reference backend whatever the thread count; oneDNN's kernels may round differently with another
//     OMP_NUM_THREADS, so there the bytes repeat for a given thread count);
//   - training mode: dropout as config.json says (hidden_dropout_prob, attention_probs_dropout_prob),
//     drawn from the counter-based RNG with the seed as well;
//   - writing every gradient under its Hugging Face name (qformer_entries(model, true, "grad.")), the
//     layout of PyTorch's {name: p.grad for name, p in model.named_parameters()};
//   - errors: every library failure is a blip2::error naming what and where; the tool prints it and
//     exits with a status, it never crashes on bad input, and it never writes a non-finite loss or
//     gradient as if it were a result.
//
//   - data parallelism (when built with blip2::mpi): under `mpirun -np W stage1_step ...` every rank
//     reads the same IN, takes its contiguous shard of the batch (rank r: pairs [r B/W, (r+1) B/W); B must
//     be divisible by W), and the step sees the world batch as LAVIS's does (train/stage1_step.hpp): ITC
//     against every rank's features, ITM negatives from the whole batch (itm_neg_*_idx are global
//     indices), the gradients averaged over the ranks. Rank 0 writes OUT: without dropout it holds what
//     one process writes for the whole batch, to rounding. A rank that fails ends the job (MPI_Abort)
//     rather than leaving the others waiting.
//
// Usage:
//   [mpirun -np W] stage1_step --model DIR --inputs IN.safetensors --output OUT.safetensors
//               [--backend reference|onednn] [--seed N]
// DIR holds config.json and model.safetensors (with cls.predictions.transform.*, cls.predictions.bias
// and temp (0-d) besides the Q-Former and its retrieval heads). IN holds
//   image_embeds       float (B, N, E)   the frozen image encoder's output, E = encoder_hidden_size
//   input_ids          int64 (B, T)      caption b of image b, [CLS] at position 0
//   attention_mask     int64 (B, T)      0/1; optional (all ones when absent)
//   image_ids          int64 (B)         optional: pairs sharing an id are all positives (ITC's soft
//                                        targets; never drawn as ITM negatives)
//   itm_neg_image_idx  int64 (B)         optional, with itm_neg_text_idx: the ITM negatives. ITM row B + b
//   itm_neg_text_idx   int64 (B)         pairs image itm_neg_image_idx[b] with text b, row 2B + b image b
//                                        with text itm_neg_text_idx[b]. Absent: sampled with --seed.
// B >= 2: a batch of one pair has no negative for ITM.
// [DEC] (the id that replaces [CLS] for ITG) is qformer_config.bos_token_id when config.json has one,
// else vocab_size - 1. --seed (default 0) seeds the dropout masks and the sampled negatives.
// OUT holds loss_itc, loss_itm, loss_itg (float32, 0-d), grad.<name> (float32) for every parameter the model
// uses (every tensor of model.safetensors that belongs to the Q-Former and its heads), shaped like it:
// the gradient of loss_itc + loss_itm + loss_itg; and itm_neg_image_idx, itm_neg_text_idx (int64, (B)):
// the negatives the step used (given or drawn), to replay them. The image embeddings are frozen: no
// gradient.
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "blip2/dist/average_gradients.hpp"
#include "blip2/dist/launch.hpp"
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/mining/blip2_sampler.hpp"
#include "blip2/mining/fixed_sampler.hpp"
#include "blip2/train/stage1_step.hpp"
#include "cli.hpp"
#include "precomputed_inputs.hpp"

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: stage1_step --model DIR --inputs IN.safetensors --output OUT.safetensors [--backend reference|onednn] "
    "[--seed N]\n       (data parallel, with blip2::mpi: mpirun -np W stage1_step ...)";

struct options {
  std::filesystem::path model, inputs, output;
  std::string backend = "reference";
  std::uint64_t seed = 0;
};

options parse_args(cli::arguments& a) {
  options o;
  while (a.next()) {
    if (a.is("--model")) o.model = a.value();
    else if (a.is("--inputs")) o.inputs = a.value();
    else if (a.is("--output")) o.output = a.value();
    else if (a.is("--backend")) o.backend = cli::backend(a);
    else if (a.is("--seed")) o.seed = a.integer<std::uint64_t>("an integer", 0);
    else a.unknown();
  }
  cli::require(!o.model.empty(), "--model DIR");
  cli::require(!o.inputs.empty(), "--inputs IN.safetensors");
  cli::require(!o.output.empty(), "--output OUT.safetensors");
  return o;
}

// The model, refused with the names of what is missing when it cannot train stage 1.
qformer_model<float> load_stage1_model(const std::filesystem::path& dir) {
  auto m = load_qformer<float>(dir);
  const auto& cfg = m.config();
  if (cfg.with_text && cfg.with_stage1_heads) return m;
  const auto path = dir / "model.safetensors";
  const auto file = safetensors_file::open(path);
  std::string missing;
  for (const char* name : {"embeddings.word_embeddings.weight", "cls.predictions.transform.dense.weight", "temp"})
    if (!file.contains(name)) missing += std::string(missing.empty() ? "'" : ", '") + name + "'";
  detail::raise<format_error>(
      "model '", path.string(), "' has no stage-1 heads: missing ", missing,
      ". A stage-1 step needs the text side (embeddings.word_embeddings.*), the ITG LM head "
      "(cls.predictions.transform.*, cls.predictions.bias) and the ITC temperature (temp, 0-d): a Hugging Face "
      "Blip2ForImageTextRetrieval checkpoint has no LM head, LAVIS's Blip2Qformer has both");
}

// The inputs file, checked before any pass runs: names what is wrong and where.
struct inputs {
  dynamic_tensor<float> image;                      // (B, N, E)
  dynamic_tensor<index_t> ids;                      // (B, T)
  std::optional<dynamic_tensor<index_t>> mask;      // (B, T)
  std::optional<dynamic_tensor<index_t>> image_ids; // (B)
  std::optional<dynamic_tensor<index_t>> neg_image, neg_text;  // (B) each
  index_t B = 0, N = 0, E = 0, T = 0;
};

inputs read_inputs(const std::filesystem::path& path, const qformer_model_config& cfg) {
  const auto file = safetensors_file::open(path);
  const std::string where = cli::inputs_where(path);
  auto fail = [&](auto&&... parts) { detail::raise<value_error>(where, ": ", parts...); };
  inputs in;
  in.image = cli::read_image_embeds(file, where, cfg);
  in.B = in.image.shape[0], in.N = in.image.shape[1], in.E = in.image.shape[2];
  if (!file.contains("input_ids"))
    fail("no tensor 'input_ids' (int64, shape (B, T) with B = ", in.B,
         "): the stage-1 losses need a caption for every image");
  in.ids = cli::read_input_ids(file, where, in.B);
  in.T = in.ids.shape[1];
  in.mask = cli::read_attention_mask(file, where, in.ids);
  auto one_per_pair = [&](const char* name) {
    auto t = file.load_dynamic<index_t>(name);
    if (t.shape.size() != 1 || t.shape[0] != in.B)
      detail::raise<shape_error>(where, ": '", name, "' has shape ", cli::shape_of(t), ", expected (B) with B = ", in.B);
    return t;
  };
  if (file.contains("image_ids")) in.image_ids = one_per_pair("image_ids");
  const bool has_ni = file.contains("itm_neg_image_idx"), has_nt = file.contains("itm_neg_text_idx");
  if (has_ni != has_nt)
    fail("has '", has_ni ? "itm_neg_image_idx" : "itm_neg_text_idx", "' but not '",
         has_ni ? "itm_neg_text_idx" : "itm_neg_image_idx", "': give both negatives, or neither to sample them");
  if (has_ni) {
    in.neg_image = one_per_pair("itm_neg_image_idx");
    in.neg_text = one_per_pair("itm_neg_text_idx");
    auto image_id = [&](index_t b) { return in.image_ids ? in.image_ids->data[static_cast<std::size_t>(b)] : b; };
    for (const auto* which : {&in.neg_image, &in.neg_text}) {
      const char* name = which == &in.neg_image ? "itm_neg_image_idx" : "itm_neg_text_idx";
      for (index_t b = 0; b < in.B; ++b) {
        const index_t v = (*which)->data[static_cast<std::size_t>(b)];
        if (v < 0 || v >= in.B) fail("'", name, "'[", b, "] = ", v, " is outside [0, B) with B = ", in.B);
        if (image_id(v) == image_id(b))
          fail("'", name, "'[", b, "] = ", v, " is not a negative of pair ", b, ": ",
               in.image_ids ? "it has the same image id" : "it is the pair itself");
      }
    }
  }
  return in;
}

template <class Be, class Comm>
void run(Be& be, Comm& comm, const options& opt) {
  auto m = load_stage1_model(opt.model);
  const auto& cfg = m.config();
  const auto in = read_inputs(opt.inputs, cfg);
  const index_t B = in.B;
  // this rank's shard: pairs [a, a + n)
  const index_t W = comm.size(), n = B / W, a = comm.rank() * n;
  BLIP2_CHECK(B % W == 0, value_error, cli::inputs_where(opt.inputs), ": the batch has B = ", B, " pairs, which ", W,
              " ranks cannot share evenly (rank r takes pairs [r B/W, (r+1) B/W)); give a B divisible by ", W);

  stage1_batch<float> batch;
  batch.image_embeds = tensor_view<const float, 3>(in.image.data.data() + a * in.N * in.E, {n, in.N, in.E});
  batch.input_ids = tensor_view<const index_t, 2>(in.ids.data.data() + a * in.T, {n, in.T});
  if (in.mask) batch.attention_mask = tensor_view<const index_t, 2>(in.mask->data.data() + a * in.T, {n, in.T});
  if (in.image_ids) batch.image_ids = tensor_view<const index_t, 1>(in.image_ids->data.data() + a, {n});
  stage1_options so;
  so.training = true;  // dropout as config.json says
  so.seed = opt.seed;

  stage1_state<float> st;
  m.zero_grad();  // parameter gradients accumulate
  stage1_losses losses;
  if (in.neg_image) {  // global indices: this rank's pairs' entries
    auto shard = [&](const std::vector<index_t>& v) { return std::vector<index_t>(v.begin() + a, v.begin() + a + n); };
    fixed_sampler given(shard(in.neg_image->data), shard(in.neg_text->data));
    losses = stage1_step(be, comm, m, st, batch, given, so);
  } else {
    blip2_sampler sampler;
    losses = stage1_step(be, comm, m, st, batch, sampler, so);
  }
  average_gradients(comm, m.gradients());
  // the negatives every rank used, in pair order
  std::vector<index_t> neg_image(static_cast<std::size_t>(B)), neg_text(static_cast<std::size_t>(B));
  comm.all_gather(std::span<const index_t>(st.neg_image), std::span<index_t>(neg_image));
  comm.all_gather(std::span<const index_t>(st.neg_text), std::span<index_t>(neg_text));
  if (comm.rank() != 0) return;  // rank 0 writes

  // a diverged step is reported, not written as a result
  for (const auto& [name, value] : {std::pair{"loss_itc", losses.itc}, std::pair{"loss_itm", losses.itm},
                                    std::pair{"loss_itg", losses.itg}})
    BLIP2_CHECK(std::isfinite(value), value_error, name, " = ", value, " is not finite");
  std::vector<safetensors_entry> out;
  out.push_back(cli::scalar_entry("loss_itc", static_cast<float>(losses.itc)));
  out.push_back(cli::scalar_entry("loss_itm", static_cast<float>(losses.itm)));
  out.push_back(cli::scalar_entry("loss_itg", static_cast<float>(losses.itg)));
  for_each_parameter(cfg, m.g, [&](const std::string& name, auto& g) {
    for (index_t k = 0; k < g.size(); ++k)
      BLIP2_CHECK(std::isfinite(g.data()[k]), value_error, "the gradient of '", name, "' has a non-finite element (",
                  g.data()[k], " at flat index ", k, ")");
  });
  for (auto& e : qformer_entries(m, true, "grad.")) out.push_back(std::move(e));
  out.push_back(safetensors_entry::of("itm_neg_image_idx", tensor_view<const index_t, 1>(neg_image.data(), {B})));
  out.push_back(safetensors_entry::of("itm_neg_text_idx", tensor_view<const index_t, 1>(neg_text.data(), {B})));
  save_safetensors(opt.output, out,
                   {{"format", "pt"},
                    {"backend", std::string(Be::name)},
                    {"negatives", in.neg_image ? "given" : "sampled"},
                    {"seed", std::to_string(opt.seed)},
                    {"ranks", std::to_string(W)}});
  std::printf("stage1_step: %s backend, %lld pairs over %lld rank(s), negatives %s (seed %llu): loss_itc %.6f, "
              "loss_itm %.6f, loss_itg %.6f -> %s\n",
              Be::name, static_cast<long long>(B), static_cast<long long>(W), in.neg_image ? "given" : "sampled",
              static_cast<unsigned long long>(opt.seed), losses.itc, losses.itm, losses.itg, opt.output.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  return with_communicator(argc, argv, [&](auto& comm) {
    return cli::run_main("stage1_step", usage_line, argc, argv, parse_args, [&](const options& opt) {
      return cli::with_backend(opt.backend, [&](auto& be) { return run(be, comm, opt); });
    });
  });
}

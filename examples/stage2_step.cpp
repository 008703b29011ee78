// stage2_step: one BLIP-2 stage-2 step with a frozen OPT decoder, as a command-line tool: the
// language-model loss of a batch, the logits, and the gradient of the loss for every trainable tensor.
//
// What it teaches:
//   - loading a Hugging Face Blip2ForConditionalGeneration directory (blip2::load_blip2_opt): the
//     Q-Former's query path and the projection are copied (they train), the float32 decoder is used in
//     place in the memory-mapped file (it is frozen);
//   - stage2_forward / stage2_backward (models/blip2_opt/stage2.hpp): soft prompt = projection of the
//     Q-Former's query outputs, [soft prompt ; embed(input_ids)] through OPT, the LAVIS loss (text token t
//     predicted from position Q + t - 1, mean over labels != -100), gradients for query_tokens, qformer.*
//     and language_projection.* only: the frozen decoder computes no parameter gradient.
//
// Usage:
//   stage2_step --model DIR --inputs IN.safetensors --output OUT.safetensors [--backend reference|onednn]
// IN holds
//   image_embeds    float (B, N, E)  the frozen image encoder's output, E = the vision width
//   input_ids       int64 (B, T)     BOS first, right-padded
//   attention_mask  int64 (B, T)     0/1 (optional: all ones)
//   labels          int64 (B, T)     the target of each text token, -100 where it does not count
// OUT (float32) holds loss_lm (0-d), logits (B, T, V) (row t: the decoder's output at sequence position
// Q + t) and grad.<name> for query_tokens, every qformer.* tensor and language_projection.{weight, bias}.
// No evaluation-mode switch is needed: the step runs without dropout (a deterministic reference).
// Exit status: 0 success, 1 a failure (message on stderr), 2 a usage error.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "blip2/io/blip2_opt_checkpoint.hpp"
#include "blip2/io/safetensors.hpp"
#include "blip2/models/blip2_opt/stage2.hpp"
#include "cli.hpp"
#include "precomputed_inputs.hpp"

using namespace blip2;

namespace {

constexpr const char* usage_line =
    "usage: stage2_step --model DIR --inputs IN.safetensors --output OUT.safetensors [--backend reference|onednn]";

struct options {
  std::filesystem::path model, inputs, output;
  std::string backend = "reference";
};

options parse_args(cli::arguments& a) {
  options o;
  while (a.next()) {
    if (a.is("--model")) o.model = a.value();
    else if (a.is("--inputs")) o.inputs = a.value();
    else if (a.is("--output")) o.output = a.value();
    else if (a.is("--backend")) o.backend = cli::backend(a);
    else a.unknown();
  }
  cli::require(!o.model.empty(), "--model DIR");
  cli::require(!o.inputs.empty(), "--inputs IN.safetensors");
  cli::require(!o.output.empty(), "--output OUT.safetensors");
  return o;
}

struct inputs {
  dynamic_tensor<float> image;       // (B, N, E)
  dynamic_tensor<index_t> ids, mask, labels;  // (B, T)
  index_t B = 0, T = 0;
};

inputs read_inputs(const std::filesystem::path& path, const qformer_model_config& cfg) {
  const auto file = safetensors_file::open(path);
  const std::string where = cli::inputs_where(path);
  inputs in;
  in.image = cli::read_image_embeds(file, where, cfg);
  in.B = in.image.shape[0];
  for (const char* name : {"input_ids", "labels"})
    if (!file.contains(name))
      detail::raise<value_error>(where, ": no tensor '", name, "' (int64, shape (B, T) with B = ", in.B, ")");
  in.ids = cli::read_input_ids(file, where, in.B);
  in.T = in.ids.shape[1];
  if (auto m = cli::read_attention_mask(file, where, in.ids))
    in.mask = std::move(*m);
  else
    in.mask = dynamic_tensor<index_t>{in.ids.shape, std::vector<index_t>(in.ids.data.size(), 1)};
  in.labels = file.load_dynamic<index_t>("labels");
  if (in.labels.shape != in.ids.shape)
    detail::raise<shape_error>(where, ": 'labels' has shape ", cli::shape_of(in.labels), " but 'input_ids' has shape ",
                               cli::shape_of(in.ids));
  return in;
}

template <class Be>
void run(Be& be, const options& opt) {
  auto m = load_blip2_opt<float>(opt.model);
  const auto in = read_inputs(opt.inputs, m.qformer.config());
  const index_t B = in.B, Tn = in.T, V = m.llm.config().vocab_size;
  const index_t N = in.image.shape[1], E = in.image.shape[2];

  stage2_state<float> st;
  m.zero_grad(be);
  const float loss = stage2_forward(be, m, st, tensor_view<const float, 3>(in.image.data.data(), {B, N, E}),
                                    tensor_view<const index_t, 2>(in.ids.data.data(), {B, Tn}),
                                    tensor_view<const index_t, 2>(in.mask.data.data(), {B, Tn}),
                                    tensor_view<const index_t, 2>(in.labels.data.data(), {B, Tn}));
  BLIP2_CHECK(std::isfinite(loss), value_error, "loss_lm = ", loss, " is not finite");
  stage2_backward(be, m, st);

  host_tensor<float, 3> logits({B, Tn, V});  // batch-major copy of the sequence-major rows
  copy_to_host(be, logits.view(), detail::as_const(by_batch(st.logits(), B)));
  std::vector<safetensors_entry> out;
  out.push_back(cli::scalar_entry("loss_lm", loss));
  out.push_back(safetensors_entry::of("logits", logits));
  auto& g = m.qformer.g;
  for_each_parameter(m.qformer.config(), g, [&](const std::string& name, auto& v) {
    for (index_t k = 0; k < v.size(); ++k)
      BLIP2_CHECK(std::isfinite(v.data()[k]), value_error, "the gradient of '", name, "' has a non-finite element");
  });
  for (auto& e : qformer_entries(m.qformer, true, "grad.")) out.push_back(std::move(e));
  out.push_back(safetensors_entry::of("grad.language_projection.weight", m.projection.g.weight));
  out.push_back(safetensors_entry::of("grad.language_projection.bias", m.projection.g.bias));
  save_safetensors(opt.output, out, {{"format", "pt"}, {"backend", std::string(Be::name)}});
  std::printf("stage2_step: %s backend, %lld sequences of %lld tokens: loss_lm %.6f -> %s\n", Be::name,
              static_cast<long long>(B), static_cast<long long>(Tn), static_cast<double>(loss),
              opt.output.string().c_str());
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("stage2_step", usage_line, argc, argv, parse_args, [](const options& opt) {
    return cli::with_backend(opt.backend, [&](auto& be) { return run(be, opt); });
  });
}

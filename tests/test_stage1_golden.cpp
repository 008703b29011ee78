// stage1_golden: one stage-1 step (ITC + ITM with given negatives + ITG) against PyTorch fixtures
// (tests/fixtures/make_stage1_fixtures.py, LAVIS semantics): the three losses and the gradient of their sum
// with respect to every tensor of model.safetensors (temp, the ITG head and the tied word embeddings
// included), on the reference backend (float, double) and the oneDNN backend (float).
//
// Tolerance as in qformer_golden: float32 within 1e-4 of each tensor's largest magnitude (at least 1, the
// objective's scale), double within 2e-6 (the fixture is float64 rounded to float32).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "blip2/backend/reference/reference_backend.hpp"
#if BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif
#include "blip2/io/qformer_checkpoint.hpp"
#include "blip2/mining/fixed_sampler.hpp"
#include "blip2/train/stage1_step.hpp"

using namespace blip2;

namespace {

const std::filesystem::path fixtures = BLIP2_FIXTURE_DIR;

template <class T, class Be>
void run(Be& be, const std::string& fixture, double tol) {
  const auto dir = fixtures / fixture;
  auto m = load_qformer<T>(dir);
  REQUIRE(m.config().with_stage1_heads);
  const auto inputs = safetensors_file::open(dir / "inputs.safetensors");
  const auto expected = safetensors_file::open(dir / "expected.safetensors");
  auto img = inputs.load_dynamic<T>("image_embeds");
  const auto ids = inputs.load_i64<2>("input_ids");
  const auto mask = inputs.load_i64<2>("attention_mask");
  const auto neg_image = inputs.load_i64<1>("itm_neg_image_idx");
  const auto neg_text = inputs.load_i64<1>("itm_neg_text_idx");
  host_tensor<index_t, 1> image_ids;
  if (inputs.contains("image_ids")) image_ids = inputs.load_i64<1>("image_ids");
  const index_t B = ids.extent(0);
  stage1_batch<T> batch;
  batch.image_embeds = tensor_view<const T, 3>(img.data.data(), {img.shape[0], img.shape[1], img.shape[2]});
  batch.input_ids = ids.view();
  batch.attention_mask = mask.view();
  if (image_ids.size() > 0) batch.image_ids = image_ids.view();
  stage1_state<T> st;
  stage1_options opt;
  opt.seed = 5;
  fixed_sampler unused({}, {});
  m.zero_grad();
  const auto losses = stage1_step(be, m, st, batch, unused, opt, std::span<const index_t>(neg_image.data(), B),
                                  std::span<const index_t>(neg_text.data(), B));
  double worst = 0;
  std::string worst_name;
  auto check = [&](const std::string& name, const T* got, index_t n) {
    const auto want = expected.load_dynamic<double>(name);
    REQUIRE(want.size() == n);
    double maxdiff = 0, maxref = 0;
    for (index_t k = 0; k < n; ++k) {
      maxdiff = std::max(maxdiff, std::abs(static_cast<double>(got[k]) - want.data[static_cast<std::size_t>(k)]));
      maxref = std::max(maxref, std::abs(want.data[static_cast<std::size_t>(k)]));
    }
    INFO(fixture, " ", name, ": max diff ", maxdiff, ", largest magnitude ", maxref);
    CHECK(maxdiff <= tol * std::max(maxref, 1.0));
    if (maxdiff / std::max(maxref, 1.0) > worst) {
      worst = maxdiff / std::max(maxref, 1.0);
      worst_name = name;
    }
  };
  const T l[3] = {static_cast<T>(losses.itc), static_cast<T>(losses.itm), static_cast<T>(losses.itg)};
  check("loss_itc", &l[0], 1);
  check("loss_itm", &l[1], 1);
  check("loss_itg", &l[2], 1);
  int n = 0;
  for_each_parameter(m.config(), m.g, [&](const std::string& name, auto& g) {
    check("grad." + name, g.data(), g.size());
    ++n;
  });
  int in_fixture = 0;
  for (const auto& name : expected.names())
    if (name.rfind("grad.", 0) == 0 && name != "grad.image_embeds") ++in_fixture;
  CHECK(n == in_fixture);
  std::printf("%-10s %-7s %-16s losses %.6f %.6f %.6f, %d gradients; worst |diff| / max(|ref|, 1) = %.2e (%s)\n",
              Be::name, sizeof(T) == 8 ? "double" : "float", fixture.c_str(), losses.itc, losses.itm, losses.itg, n,
              worst, worst_name.c_str());
}

}  // namespace

TEST_CASE("stage-1 golden: ITC, ITM and ITG losses and every gradient against PyTorch (LAVIS semantics)") {
  for (const std::string fixture : {"stage1_padded", "stage1_imageids"}) {
    SUBCASE(("reference double " + fixture).c_str()) {
      reference_backend be;
      run<double>(be, fixture, 2e-6);
    }
    SUBCASE(("reference float " + fixture).c_str()) {
      reference_backend be;
      run<float>(be, fixture, 1e-4);
    }
#if BLIP2_HAS_ONEDNN
    SUBCASE(("onednn float " + fixture).c_str()) {
      onednn_backend be;
      run<float>(be, fixture, 1e-4);
    }
#endif
  }
}

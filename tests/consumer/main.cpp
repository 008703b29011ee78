// blip2_consumer: the smallest outside program using blip2. It runs layer_norm_forward on the reference
// backend, then on every optional part the installed blip2 provides (oneDNN; Eigen and xtensor objects
// through the adaptors), and prints one checksum per run. It includes only <blip2/blip2.hpp>. All runs must agree; the exit code says so.
#include <cmath>
#include <cstdio>

// The umbrella header: it brings in the parts this build links (BLIP2_HAS_ONEDNN, the adaptors' headers).
#include <blip2/blip2.hpp>

constexpr blip2::index_t R = 4, C = 32;  // rows, channels

float input(blip2::index_t r, blip2::index_t c) {
  return 4.0f * blip2::uniform_float(2024, static_cast<std::uint64_t>(r * C + c)) - 2.0f;
}

// layer_norm_forward of the fixed input on backend be, written into out (any tensor of shape (R, C)).
template <class Backend, class Out, class In, class W, class B>
double layer_norm_checksum(Backend& be, Out&& out, In&& inp, W&& weight, B&& bias) {
  blip2::host_tensor<float, 1> mean({R}), rstd({R});
  blip2::layer_norm_forward(be, out, blip2::layer_norm_cache<float>{mean.view(), rstd.view()}, inp, weight, bias,
                            1e-5);
  auto o = blip2::view(out);
  double sum = 0;
  for (blip2::index_t r = 0; r < R; ++r)
    for (blip2::index_t c = 0; c < C; ++c) sum += (c + 1) * static_cast<double>(o(r, c));
  return sum;
}

int main() {
  blip2::host_tensor<float, 2> inp({R, C}), out({R, C});
  blip2::host_tensor<float, 1> weight({C}), bias({C});
  for (blip2::index_t r = 0; r < R; ++r)
    for (blip2::index_t c = 0; c < C; ++c) inp(r, c) = input(r, c);
  for (blip2::index_t c = 0; c < C; ++c) {
    weight(c) = 1.0f + 0.01f * static_cast<float>(c);
    bias(c) = 0.001f * static_cast<float>(c);
  }

  blip2::reference_backend ref;
  const double expected = layer_norm_checksum(ref, out, inp, weight, bias);
  std::printf("blip2_consumer: layer_norm_forward on %s: %.6f\n", blip2::reference_backend::name, expected);
  int failures = 0;
  auto report = [&](const char* what, double got) {
    const bool ok = std::fabs(got - expected) <= 1e-3 * (1.0 + std::fabs(expected));
    std::printf("blip2_consumer: layer_norm_forward on %s: %.6f%s\n", what, got, ok ? "" : "  MISMATCH");
    failures += !ok;
  };

#if defined(CONSUMER_WITH_ONEDNN)
  blip2::onednn_backend dnn;
  report(blip2::onednn_backend::name, layer_norm_checksum(dnn, out, inp, weight, bias));
#endif
#if defined(CONSUMER_WITH_EIGEN)
  {
    Eigen::MatrixXf x(R, C), y(R, C);  // column-major
    Eigen::VectorXf w(C), b(C);
    for (blip2::index_t r = 0; r < R; ++r)
      for (blip2::index_t c = 0; c < C; ++c) x(r, c) = input(r, c);
    for (blip2::index_t c = 0; c < C; ++c) {
      w(c) = weight(c);
      b(c) = bias(c);
    }
    report("reference, Eigen column-major matrices", layer_norm_checksum(ref, y, x, w, b));
  }
#endif
#if defined(CONSUMER_WITH_XTENSOR)
  {
    xt::xtensor<float, 2> x = xt::zeros<float>({R, C}), y = xt::zeros<float>({R, C});
    xt::xtensor<float, 1> w = xt::zeros<float>({C}), b = xt::zeros<float>({C});
    for (blip2::index_t r = 0; r < R; ++r)
      for (blip2::index_t c = 0; c < C; ++c) x(r, c) = input(r, c);
    for (blip2::index_t c = 0; c < C; ++c) {
      w(c) = weight(c);
      b(c) = bias(c);
    }
    report("reference, xtensor", layer_norm_checksum(ref, y, x, w, b));
  }
#endif
#if defined(CONSUMER_WITH_IMAGE)
  {
    // blip2::image links stb: a PNG signature with nothing after it reaches stbi_info and is refused.
    const std::uint8_t bad_png[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    bool refused = false;
    try {
      (void)blip2::io::decode_image(bad_png, "consumer.png");
    } catch (const blip2::format_error&) {
      refused = true;
    }
    const blip2::io::rgb_image grey{2, 2, std::vector<std::uint8_t>(12, 128)};
    const auto x = blip2::io::blip2_eval_transform(grey, 5);  // (3, 5, 5)
    const bool ok = refused && x.extent(0) == 3 && x.extent(2) == 5;
    std::printf("blip2_consumer: blip2::image decode refusal and eval transform%s\n", ok ? "" : "  MISMATCH");
    failures += !ok;
  }
#endif
  return failures == 0 ? 0 : 1;
}

// test_losses: the stage-1 objectives (loss/itc.hpp, loss/itm.hpp, loss/itg.hpp, loss/stage1_loss.hpp).
//
// - values by hand (B = 2 ITC) and against naive loops written here from LAVIS's formulas (every layout:
//   extra columns with a rank offset, image ids, the sequence-major ITG rows and the shift by one);
// - central finite differences in double (tests/harness/gradcheck.hpp: h = 1e-5,
//   |analytic - numeric| <= 1e-7 + 1e-5 |numeric|);
// - float against double, and the oneDNN backend against the reference;
// - the bad inputs, each with the error type it must raise.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <vector>

#if BLIP2_HAS_ONEDNN
#include "blip2/backend/onednn/onednn.hpp"
#endif
#include "blip2/backend/reference/reference_backend.hpp"
#include "blip2/loss/itc.hpp"
#include "blip2/loss/itg.hpp"
#include "blip2/loss/itm.hpp"
#include "blip2/loss/stage1_loss.hpp"
#include "harness/gradcheck.hpp"

using namespace blip2;
using blip2::testing::grad_case;
using blip2::testing::io;
using blip2::testing::run_gradcheck;

namespace {

// ---------------------------------------------------------------------------------------------------
// Naive references, straight from LAVIS's lines (double, batch-major, no views).
// ---------------------------------------------------------------------------------------------------

// F.cross_entropy(z, t, label_smoothing = eps) of one row
double ce_row(const std::vector<double>& z, index_t t, double eps) {
  double m = z[0];
  for (double v : z) m = std::max(m, v);
  double s = 0;
  for (double v : z) s += std::exp(v - m);
  const double lse = m + std::log(s);
  double mean = 0;
  for (double v : z) mean += (lse - v) / static_cast<double>(z.size());
  return (1 - eps) * (lse - z[static_cast<std::size_t>(t)]) + eps * mean;
}

// -sum_j q[j] log_softmax(z)[j]
double soft_ce_row(const std::vector<double>& z, const std::vector<double>& q) {
  double m = z[0];
  for (double v : z) m = std::max(m, v);
  double s = 0;
  for (double v : z) s += std::exp(v - m);
  const double lse = m + std::log(s);
  double r = 0;
  for (std::size_t j = 0; j < z.size(); ++j) r += q[j] * (lse - z[j]);
  return r;
}

// LAVIS's ITC for the local rows [off, off + B) of Ba pairs. sim_i2t reads images from img_r and texts from
// txt_c; sim_t2i reads texts from txt_r and images from img_c (the "row" side and the gathered "column"
// side; the same arrays unless a test detaches one side). img (Ba, Q, D), txt (Ba, D).
double naive_itc_split(const std::vector<double>& img_r, const std::vector<double>& txt_c, const std::vector<double>& txt_r,
                       const std::vector<double>& img_c, index_t Ba, index_t Q, index_t D, index_t B, index_t off,
                       double temp, const std::vector<index_t>* ids, double eps = 0.1) {
  auto s = [&](const std::vector<double>& img, const std::vector<double>& txt, index_t i, index_t j) {
    double best = -1e300;  // max_q image i . text j
    for (index_t q = 0; q < Q; ++q) {
      double d = 0;
      for (index_t k = 0; k < D; ++k) d += img[(i * Q + q) * D + k] * txt[j * D + k];
      best = std::max(best, d);
    }
    return best;
  };
  double li2t = 0, lt2i = 0;
  for (index_t b = 0; b < B; ++b) {
    std::vector<double> zi(Ba), zt(Ba), q(Ba);
    for (index_t j = 0; j < Ba; ++j) {
      zi[j] = s(img_r, txt_c, off + b, j) / temp;  // sim_i2t[b, j]
      zt[j] = s(img_c, txt_r, j, off + b) / temp;  // sim_t2i[b, j]
    }
    if (ids == nullptr) {
      li2t += ce_row(zi, off + b, eps);
      lt2i += ce_row(zt, off + b, eps);
    } else {
      double npos = 0;
      for (index_t j = 0; j < Ba; ++j) npos += (*ids)[j] == (*ids)[off + b] ? 1 : 0;
      for (index_t j = 0; j < Ba; ++j) q[j] = ((*ids)[j] == (*ids)[off + b] ? 1 / npos : 0.0) * 0.9 + 0.1 / Ba;
      li2t += soft_ce_row(zi, q);
      lt2i += soft_ce_row(zt, q);
    }
  }
  return (li2t / B + lt2i / B) / 2;
}

double naive_itc(const std::vector<double>& img_all, const std::vector<double>& txt_all, index_t Ba, index_t Q,
                 index_t D, index_t B, index_t off, double temp, const std::vector<index_t>* ids, double eps = 0.1) {
  return naive_itc_split(img_all, txt_all, txt_all, img_all, Ba, Q, D, B, off, temp, ids, eps);
}

std::vector<double> normals(std::size_t n, std::uint64_t seed, double sd = 1.0) {
  blip2::testing::rng r(seed);
  std::vector<double> v(n);
  for (auto& x : v) x = r.normal(sd);
  return v;
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// max |a - b| / (1e-6 + max |b|): one normalised error for a whole tensor
template <class A, class B>
double nerr(const std::vector<A>& a, const std::vector<B>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / (1e-6 + den);
}

// ---------------------------------------------------------------------------------------------------
// ITC
// ---------------------------------------------------------------------------------------------------

struct itc_problem {
  index_t B, Q, D, Bo, off;
  bool with_ids;
  std::vector<index_t> ids;  // (Ba)
};

// A gradcheck case for ITC: wrt the local features and temp; extras and ids as the problem says.
grad_case itc_grad_case(const itc_problem& p, std::shared_ptr<itc_cache<double>> cache) {
  grad_case gc;
  gc.desc = "itc(B=" + std::to_string(p.B) + ",Bo=" + std::to_string(p.Bo) + ",ids=" + std::to_string(p.with_ids) + ")";
  gc.init = [p](io<double>& x) {
    blip2::testing::rng r(99);
    x.make("img", {p.B, p.Q, p.D}, r.normals(0.6));
    x.make("txt", {p.B, p.D}, r.normals(0.6));
    x.make("temp", {}, [](index_t) { return 0.3; });
    x.make("ximg", {p.Bo, p.Q, p.D}, r.normals(0.6));
    x.make("xtxt", {p.Bo, p.D}, r.normals(0.6));
    x.make("loss", {1}, [](index_t) { return 0.0; });
    x.make_ints("ids", {p.B + p.Bo}, [&](index_t k) { return p.ids.empty() ? k : p.ids[static_cast<std::size_t>(k)]; });
  };
  gc.wrt = {"img", "txt", "temp"};
  gc.outputs = {"loss"};
  gc.forward = [p, cache](reference_backend& be, io<double>& x) {
    itc_options<double> opt;
    if (p.Bo > 0) opt.extra = {x.in<3>("ximg"), x.in<2>("xtxt"), p.off};
    if (p.with_ids) opt.image_ids = x.iin<1>("ids");
    itc_forward(be, x.out<1>("loss"), *cache, x.in<3>("img"), x.in<2>("txt"), x.in<0>("temp"), opt);
  };
  gc.backward = [cache](reference_backend& be, io<double>& x) {
    itc_backward(be, x.out<3>("dimg"), x.out<2>("dtxt"), x.out<0>("dtemp"), x.in<1>("dloss"), *cache);
  };
  return gc;
}

}  // namespace

TEST_CASE("itc: B = 2 by hand") {
  // Q = 1, D = 2: images (1, 0) and (0, 1), texts (1, 0) and (0.6, 0.8), temp 0.5.
  //   s = [[1, 0.6], [0, 0.8]]  ->  sim_i2t = s / 0.5 = [[2, 1.2], [0, 1.6]],  sim_t2i = its transpose
  //   CE with eps = 0.1, V = 2: row = 0.95 (lse - z_t) + 0.05 (lse - z_other)
  //   i2t row 0: lse = 2 + log(1 + e^-0.8) = 2.371101; 0.95 * 0.371101 + 0.05 * 1.171101 = 0.411101
  //   i2t row 1: lse = 1.6 + log(1 + e^-1.6) = 1.781499; 0.95 * 0.181499 + 0.05 * 1.781499 = 0.263901
  //   t2i row 0: z = [2, 0] -> 0.226928;  t2i row 1: z = [1.2, 1.6], target 1 -> 0.533015
  //   loss = ((0.411101 + 0.263901) / 2 + (0.226928 + 0.533015) / 2) / 2 = 0.358736
  reference_backend be;
  std::vector<double> img{1, 0, 0, 1}, txt{1, 0, 0.6, 0.8}, loss(1);
  double temp = 0.5;
  itc_cache<double> cache;
  itc_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 3>(img.data(), {2, 1, 2}),
              tensor_view<const double, 2>(txt.data(), {2, 2}), tensor_view<const double, 0>(&temp, {}));
  CHECK(cache.sim_i2t(0, 1) == doctest::Approx(1.2));
  CHECK(cache.sim_t2i(1, 0) == doctest::Approx(1.2));
  CHECK(cache.loss_i2t(0) == doctest::Approx(0.33750070341805827).epsilon(1e-12));
  CHECK(cache.loss_t2i(0) == doctest::Approx(0.3799716317214625).epsilon(1e-12));
  CHECK(loss[0] == doctest::Approx(0.35873616756976034).epsilon(1e-12));
  // the same pairs with distinct image ids take the soft-target branch and give the same loss
  std::vector<index_t> ids{7, 3};
  itc_options<double> opt;
  opt.image_ids = {ids.data(), {2}};
  itc_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 3>(img.data(), {2, 1, 2}),
              tensor_view<const double, 2>(txt.data(), {2, 2}), tensor_view<const double, 0>(&temp, {}), opt);
  CHECK(loss[0] == doctest::Approx(0.35873616756976034).epsilon(1e-12));
}

TEST_CASE("itc: matches LAVIS's formulas (extras with a rank offset, image ids)") {
  reference_backend be;
  const index_t B = 3, Q = 4, D = 5;
  for (index_t Bo : {0, 4})
    for (index_t off : {index_t{0}, Bo / 2, Bo})
      for (int ids_mode = 0; ids_mode < 3; ++ids_mode) {
        const index_t Ba = B + Bo;
        auto img_all = normals(static_cast<std::size_t>(Ba * Q * D), 5 + Bo + off);
        auto txt_all = normals(static_cast<std::size_t>(Ba * D), 17 + Bo + off);
        std::vector<index_t> ids(static_cast<std::size_t>(Ba));
        for (index_t j = 0; j < Ba; ++j) ids[j] = ids_mode == 1 ? 100 + j : j % 2;  // distinct, or duplicated
        // split the columns into the local block and the extras
        std::vector<double> img(img_all.begin() + off * Q * D, img_all.begin() + (off + B) * Q * D);
        std::vector<double> txt(txt_all.begin() + off * D, txt_all.begin() + (off + B) * D);
        std::vector<double> ximg(img_all.begin(), img_all.begin() + off * Q * D), xtxt(txt_all.begin(), txt_all.begin() + off * D);
        ximg.insert(ximg.end(), img_all.begin() + (off + B) * Q * D, img_all.end());
        xtxt.insert(xtxt.end(), txt_all.begin() + (off + B) * D, txt_all.end());
        const double temp = 0.07;
        itc_options<double> opt;
        if (Bo > 0) opt.extra = {{ximg.data(), {Bo, Q, D}}, {xtxt.data(), {Bo, D}}, off};
        if (ids_mode > 0) opt.image_ids = {ids.data(), {Ba}};
        std::vector<double> loss(1);
        itc_cache<double> cache;
        itc_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 3>(img.data(), {B, Q, D}),
                    tensor_view<const double, 2>(txt.data(), {B, D}), tensor_view<const double, 0>(&temp, {}), opt);
        const double want = naive_itc(img_all, txt_all, Ba, Q, D, B, off, temp, ids_mode > 0 ? &ids : nullptr);
        CAPTURE(Bo);
        CAPTURE(off);
        CAPTURE(ids_mode);
        CHECK(loss[0] == doctest::Approx(want).epsilon(1e-12));
        CHECK(cache.sim_i2t.extent(1) == Ba);
      }
}

TEST_CASE("itc: finite differences (temp, features; ids; extras)") {
  std::vector<itc_problem> problems = {
      {3, 2, 4, 0, 0, false, {}},
      {3, 2, 4, 0, 0, true, {5, 9, 5}},                 // images 0 and 2 are the same image
      {2, 3, 3, 3, 2, false, {}},                       // other ranks' columns, local block at column 2
      {2, 3, 3, 3, 1, true, {1, 4, 1, 4, 2}},           // both
      {1, 2, 3, 2, 1, false, {}},                       // one local pair, negatives only from other ranks
  };
  for (const auto& p : problems) {
    auto cache = std::make_shared<itc_cache<double>>();
    auto gc = itc_grad_case(p, cache);
    auto rep = run_gradcheck(gc);
    CAPTURE(gc.desc);
    CAPTURE(rep.why);
    CHECK(rep.ok);
  }
}

TEST_CASE("itc: detach_gathered_side gives LAVIS's distributed gradient (finite differences)") {
  // LAVIS under torch.distributed: image_feats_all / text_feat_all come from concat_all_gather (no
  // gradient), so image_feats move sim_i2t only and text_feat moves sim_t2i only. The naive loss with the
  // gathered side held fixed, differentiated by central differences, must match.
  reference_backend be;
  const index_t B = 2, Q = 3, D = 3;
  for (index_t Bo : {0, 2})
    for (bool with_ids : {false, true}) {
      const index_t off = Bo / 2, Ba = B + Bo;
      auto img_all = normals(static_cast<std::size_t>(Ba * Q * D), 71 + Bo, 0.6);
      auto txt_all = normals(static_cast<std::size_t>(Ba * D), 73 + Bo, 0.6);
      std::vector<index_t> ids{3, 8, 3, 9};
      ids.resize(static_cast<std::size_t>(Ba));
      std::vector<double> img(img_all.begin() + off * Q * D, img_all.begin() + (off + B) * Q * D);
      std::vector<double> txt(txt_all.begin() + off * D, txt_all.begin() + (off + B) * D);
      std::vector<double> ximg(img_all.begin(), img_all.begin() + off * Q * D), xtxt(txt_all.begin(), txt_all.begin() + off * D);
      ximg.insert(ximg.end(), img_all.begin() + (off + B) * Q * D, img_all.end());
      xtxt.insert(xtxt.end(), txt_all.begin() + (off + B) * D, txt_all.end());
      double temp = 0.3, dtemp = 0, dloss = 1;
      itc_options<double> opt;
      opt.detach_gathered_side = true;
      if (Bo > 0) opt.extra = {{ximg.data(), {Bo, Q, D}}, {xtxt.data(), {Bo, D}}, off};
      if (with_ids) opt.image_ids = {ids.data(), {Ba}};
      std::vector<double> loss(1), di(img.size()), dt(txt.size());
      itc_cache<double> cache;
      itc_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 3>(img.data(), {B, Q, D}),
                  tensor_view<const double, 2>(txt.data(), {B, D}), tensor_view<const double, 0>(&temp, {}), opt);
      itc_backward(be, tensor_view<double, 3>(di.data(), {B, Q, D}), tensor_view<double, 2>(dt.data(), {B, D}),
                   tensor_view<double, 0>(&dtemp, {}), tensor_view<const double, 1>(&dloss, {1}), cache);
      const auto* idp = with_ids ? &ids : nullptr;
      CHECK(loss[0] == doctest::Approx(naive_itc(img_all, txt_all, Ba, Q, D, B, off, temp, idp)).epsilon(1e-12));
      const double h = 1e-5;
      auto close = [](double a, double n) { return std::abs(a - n) <= 1e-7 + 1e-5 * std::abs(n); };
      for (index_t k = 0; k < B * Q * D; ++k) {  // images: only the row side (sim_i2t) moves
        auto p = img_all, m = img_all;
        p[off * Q * D + k] += h;
        m[off * Q * D + k] -= h;
        const double n = (naive_itc_split(p, txt_all, txt_all, img_all, Ba, Q, D, B, off, temp, idp) -
                          naive_itc_split(m, txt_all, txt_all, img_all, Ba, Q, D, B, off, temp, idp)) / (2 * h);
        CAPTURE(k);
        CHECK(close(di[k], n));
      }
      for (index_t k = 0; k < B * D; ++k) {  // texts: only the row side (sim_t2i) moves
        auto p = txt_all, m = txt_all;
        p[off * D + k] += h;
        m[off * D + k] -= h;
        const double n = (naive_itc_split(img_all, txt_all, p, img_all, Ba, Q, D, B, off, temp, idp) -
                          naive_itc_split(img_all, txt_all, m, img_all, Ba, Q, D, B, off, temp, idp)) / (2 * h);
        CAPTURE(k);
        CHECK(close(dt[k], n));
      }
      const double nt = (naive_itc(img_all, txt_all, Ba, Q, D, B, off, temp + h, idp) -
                         naive_itc(img_all, txt_all, Ba, Q, D, B, off, temp - h, idp)) / (2 * h);
      CHECK(close(dtemp, nt));  // temp is not gathered: its gradient is the full one
    }
}

TEST_CASE("itc: accumulate adds to what is there; extras get no gradient path") {
  reference_backend be;
  const index_t B = 2, Q = 2, D = 3;
  auto img = normals(B * Q * D, 1), txt = normals(B * D, 2);
  double temp = 0.2, dtemp = 0, dloss = 1;
  std::vector<double> loss(1);
  itc_cache<double> cache;
  itc_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 3>(img.data(), {B, Q, D}),
              tensor_view<const double, 2>(txt.data(), {B, D}), tensor_view<const double, 0>(&temp, {}));
  std::vector<double> di(B * Q * D, 0), dt(B * D, 0), di2(B * Q * D, 0.5), dt2(B * D, -0.25);
  itc_backward(be, tensor_view<double, 3>(di.data(), {B, Q, D}), tensor_view<double, 2>(dt.data(), {B, D}),
               tensor_view<double, 0>(&dtemp, {}), tensor_view<const double, 1>(&dloss, {1}), cache);
  const double dtemp1 = dtemp;
  itc_backward(be, tensor_view<double, 3>(di2.data(), {B, Q, D}), tensor_view<double, 2>(dt2.data(), {B, D}),
               tensor_view<double, 0>(&dtemp, {}), tensor_view<const double, 1>(&dloss, {1}), cache, grad_write::accumulate);
  for (std::size_t k = 0; k < di.size(); ++k) CHECK(di2[k] == doctest::Approx(di[k] + 0.5));
  for (std::size_t k = 0; k < dt.size(); ++k) CHECK(dt2[k] == doctest::Approx(dt[k] - 0.25));
  CHECK(dtemp == doctest::Approx(2 * dtemp1));  // a parameter gradient: always +=
}

TEST_CASE("itc: float agrees with double, oneDNN with the reference") {
  const index_t B = 5, Q = 4, D = 8, Bo = 3, off = 1;
  auto img = normals(B * Q * D, 3, 0.4), txt = normals(B * D, 4, 0.4), ximg = normals(Bo * Q * D, 5, 0.4),
       xtxt = normals(Bo * D, 6, 0.4);
  std::vector<index_t> ids{1, 2, 3, 1, 5, 6, 7, 2};
  for (bool with_ids : {false, true}) {
    auto run = [&](auto& be, auto zero) {
      using T = decltype(zero);
      auto i = cast<T>(img), t = cast<T>(txt), xi = cast<T>(ximg), xt = cast<T>(xtxt);
      T temp = T(0.1), dtemp = 0, dloss = 1;
      std::vector<T> loss(1), di(i.size()), dt(t.size());
      itc_cache<T> cache;
      itc_options<T> opt;
      opt.extra = {{xi.data(), {Bo, Q, D}}, {xt.data(), {Bo, D}}, off};
      if (with_ids) opt.image_ids = {ids.data(), {B + Bo}};
      itc_forward(be, tensor_view<T, 1>(loss.data(), {1}), cache, tensor_view<const T, 3>(i.data(), {B, Q, D}),
                  tensor_view<const T, 2>(t.data(), {B, D}), tensor_view<const T, 0>(&temp, {}), opt);
      itc_backward(be, tensor_view<T, 3>(di.data(), {B, Q, D}), tensor_view<T, 2>(dt.data(), {B, D}),
                   tensor_view<T, 0>(&dtemp, {}), tensor_view<const T, 1>(&dloss, {1}), cache);
      std::vector<double> all{static_cast<double>(loss[0]), static_cast<double>(dtemp)};
      all.insert(all.end(), di.begin(), di.end());
      all.insert(all.end(), dt.begin(), dt.end());
      return all;
    };
    reference_backend ref;
    const auto d = run(ref, 0.0);
    const auto f = run(ref, 0.0f);
    CAPTURE(with_ids);
    CHECK(nerr(f, d) < 1e-5);
#if BLIP2_HAS_ONEDNN
    onednn_backend dnn;
    const auto o = run(dnn, 0.0f);
    CHECK(nerr(o, d) < 1e-5);
    CHECK(nerr(o, f) < 1e-5);
#endif
  }
}

TEST_CASE("itc: bad inputs") {
  reference_backend be;
  const index_t B = 2, Q = 2, D = 3;
  auto img = normals(B * Q * D, 1), txt = normals(B * D, 2), ximg = normals(3 * Q * D, 3), xtxt = normals(3 * D, 4);
  std::vector<double> loss(1);
  std::vector<index_t> ids{1, 2, 3};
  itc_cache<double> cache;
  auto fwd = [&](double temp, const itc_options<double>& opt, index_t text_rows) {
    itc_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 3>(img.data(), {B, Q, D}),
                tensor_view<const double, 2>(txt.data(), {text_rows, D}), tensor_view<const double, 0>(&temp, {}), opt);
  };
  CHECK_THROWS_AS(fwd(0.0, {}, B), value_error);                       // temp = 0: the logits are sim / temp
  CHECK_THROWS_AS(fwd(std::nan(""), {}, B), value_error);
  CHECK_THROWS_AS(fwd(0.1, {}, 1), shape_error);                    // one text for two images
  itc_options<double> bad_ids;
  bad_ids.image_ids = {ids.data(), {3}};                            // 3 ids for 2 columns
  CHECK_THROWS_AS(fwd(0.1, bad_ids, B), shape_error);
  itc_options<double> bad_off;
  bad_off.extra = {{ximg.data(), {3, Q, D}}, {xtxt.data(), {3, D}}, 4};  // offset past the 3 extras
  CHECK_THROWS_AS(fwd(0.1, bad_off, B), value_error);
  itc_options<double> bad_extra;
  bad_extra.extra = {{ximg.data(), {3, Q, D}}, {xtxt.data(), {2, D}}, 0};  // 3 extra images, 2 extra texts
  CHECK_THROWS_AS(fwd(0.1, bad_extra, B), shape_error);
  itc_options<double> bad_eps;
  bad_eps.label_smoothing = 1.5;
  CHECK_THROWS_AS(fwd(0.1, bad_eps, B), value_error);
  itc_cache<double> fresh;
  double dtemp = 0, dloss = 1;
  std::vector<double> di(B * Q * D), dt(B * D);
  CHECK_THROWS_AS(itc_backward(be, tensor_view<double, 3>(di.data(), {B, Q, D}), tensor_view<double, 2>(dt.data(), {B, D}),
                               tensor_view<double, 0>(&dtemp, {}), tensor_view<const double, 1>(&dloss, {1}), fresh),
                  value_error);  // backward before forward
}

// ---------------------------------------------------------------------------------------------------
// ITM
// ---------------------------------------------------------------------------------------------------

TEST_CASE("itm: the 3B pair layout and labels") {
  const index_t B = 3, off = 6;
  std::vector<index_t> neg_image{7, 0, 2}, neg_text{11, 8, 1}, ii(9), ti(9);
  itm_pair_layout(tensor_view<const index_t, 1>(neg_image.data(), {B}), tensor_view<const index_t, 1>(neg_text.data(), {B}),
                  tensor_view<index_t, 1>(ii.data(), {9}), tensor_view<index_t, 1>(ti.data(), {9}), off);
  // LAVIS: image_embeds_all = [pos, neg, pos], text_ids_all = [pos, pos, neg]
  CHECK(ii == std::vector<index_t>{6, 7, 8, 7, 0, 2, 6, 7, 8});
  CHECK(ti == std::vector<index_t>{6, 7, 8, 6, 7, 8, 11, 8, 1});
  std::vector<index_t> short_out(8);
  CHECK_THROWS_AS(itm_pair_layout(tensor_view<const index_t, 1>(neg_image.data(), {B}),
                                  tensor_view<const index_t, 1>(neg_text.data(), {B}),
                                  tensor_view<index_t, 1>(short_out.data(), {8}), tensor_view<index_t, 1>(ti.data(), {9})),
                  shape_error);

  reference_backend be;
  std::vector<double> logits{0.1, 0.3, -0.2, 0.4, 0.0, 0.0, 1.0, -1.0, 0.5, 0.5, 0.2, -0.7, 0.3, 0.3, -0.4, 0.9, 2.0, 0.1},
      loss(1);
  itm_cache<double> cache;
  itm_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 2>(logits.data(), {9, 2}));
  double want = 0;
  for (index_t r = 0; r < 9; ++r) want += ce_row({logits[2 * r], logits[2 * r + 1]}, r < 3 ? 1 : 0, 0.0) / 9;
  CHECK(loss[0] == doctest::Approx(want).epsilon(1e-12));
  for (index_t r = 0; r < 9; ++r) CHECK(cache.labels(r) == (r < 3 ? 1 : 0));
}

TEST_CASE("itm: finite differences wrt the logits; float, double and oneDNN agree") {
  auto cache = std::make_shared<itm_cache<double>>();
  grad_case gc;
  gc.init = [](io<double>& x) {
    blip2::testing::rng r(5);
    x.make("logits", {12, 2}, r.normals(1.5));
    x.make("loss", {1}, [](index_t) { return 0.0; });
  };
  gc.wrt = {"logits"};
  gc.outputs = {"loss"};
  gc.forward = [cache](reference_backend& be, io<double>& x) { itm_forward(be, x.out<1>("loss"), *cache, x.in<2>("logits")); };
  gc.backward = [cache](reference_backend& be, io<double>& x) {
    itm_backward(be, x.out<2>("dlogits"), x.in<1>("dloss"), x.in<2>("logits"), *cache);
  };
  auto rep = run_gradcheck(gc);
  CAPTURE(rep.why);
  CHECK(rep.ok);

  auto z = normals(30, 8, 2.0);
  auto run = [&](auto& be, auto zero) {
    using T = decltype(zero);
    auto zz = cast<T>(z);
    std::vector<T> loss(1), dz(zz.size());
    T dloss = 1;
    itm_cache<T> c;
    itm_forward(be, tensor_view<T, 1>(loss.data(), {1}), c, tensor_view<const T, 2>(zz.data(), {15, 2}));
    itm_backward(be, tensor_view<T, 2>(dz.data(), {15, 2}), tensor_view<const T, 1>(&dloss, {1}),
                 tensor_view<const T, 2>(zz.data(), {15, 2}), c);
    std::vector<double> all{static_cast<double>(loss[0])};
    all.insert(all.end(), dz.begin(), dz.end());
    return all;
  };
  reference_backend ref;
  const auto d = run(ref, 0.0);
  CHECK(nerr(run(ref, 0.0f), d) < 1e-6);
#if BLIP2_HAS_ONEDNN
  onednn_backend dnn;
  CHECK(nerr(run(dnn, 0.0f), d) < 1e-6);
#endif
}

TEST_CASE("itm: bad inputs") {
  reference_backend be;
  std::vector<double> z(12), loss(1);
  itm_cache<double> cache;
  CHECK_THROWS_AS(itm_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 2>(z.data(), {4, 2})),
                  shape_error);  // not 3B rows
  CHECK_THROWS_AS(itm_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 2>(z.data(), {3, 4})),
                  shape_error);  // not 2 classes
  CHECK_THROWS_AS(itm_forward(be, tensor_view<double, 1>(loss.data(), {1}), cache, tensor_view<const double, 2>(z.data(), {0, 2})),
                  shape_error);  // no pairs
}

// ---------------------------------------------------------------------------------------------------
// ITG
// ---------------------------------------------------------------------------------------------------

namespace {

struct itg_sizes {
  index_t B = 2, T = 4, C = 6, V = 9;
};

// Buffers: rows (T B, C), tw (C, C), tb, nw, nb (C), bias (V), emb (V, C), labels (B, T) with pads.
void itg_init(io<double>& x, const itg_sizes& s, std::uint64_t seed) {
  blip2::testing::rng r(seed);
  x.make("rows", {s.T * s.B, s.C}, r.normals(1.0));
  x.make("tw", {s.C, s.C}, r.normals(0.5));
  x.make("tb", {s.C}, r.normals(0.2));
  x.make("nw", {s.C}, [&](index_t) { return 1.0 + r.normal(0.2); });
  x.make("nb", {s.C}, r.normals(0.2));
  x.make("bias", {s.V}, r.normals(0.3));
  x.make("emb", {s.V, s.C}, r.normals(0.5));
  x.make("loss", {1}, [](index_t) { return 0.0; });
  // input ids: [CLS]=1 then words, the second sentence padded (pad id 0) after 2 tokens
  x.make_ints("ids", {s.B, s.T}, [&](index_t k) {
    const index_t b = k / s.T, t = k % s.T;
    if (t == 0) return index_t{1};
    if (b == 1 && t >= 2) return index_t{0};
    return index_t{2 + (3 * k) % (s.V - 3)};
  });
  x.make_ints("dec", {s.B, s.T}, [](index_t) { return index_t{0}; });
  x.make_ints("labels", {s.B, s.T}, [](index_t) { return index_t{0}; });
  itg_decoder_inputs(x.iin<2>("ids"), s.V - 1, index_t{0}, x.iout<2>("dec"), x.iout<2>("labels"));
}

lm_head_weights<double> head_of(io<double>& x, const std::string& p = "") {
  return {{x.out<2>(p + "tw"), x.out<1>(p + "tb")}, {x.out<1>(p + "nw"), x.out<1>(p + "nb")}, x.out<1>(p + "bias")};
}

// The ITG loss by hand, batch-major: position t of sentence b is row t B + b of the sequence-major rows.
double naive_itg(io<double>& x, const itg_sizes& s, double eps_ln) {
  auto rows = x.in<2>("rows");
  auto tw = x.in<2>("tw"), emb = x.in<2>("emb");
  auto tb = x.in<1>("tb"), nw = x.in<1>("nw"), nb = x.in<1>("nb"), bias = x.in<1>("bias");
  auto labels = x.iin<2>("labels");
  double total = 0;
  index_t count = 0;
  for (index_t b = 0; b < s.B; ++b)
    for (index_t t = 0; t + 1 < s.T; ++t) {
      const index_t label = labels(b, t + 1);  // HF: prediction_scores[:, :-1] against labels[:, 1:]
      if (label == -100) continue;
      std::vector<double> h(s.C), z(s.V);
      for (index_t i = 0; i < s.C; ++i) {
        double a = tb(i);
        for (index_t k = 0; k < s.C; ++k) a += tw(i, k) * rows(t * s.B + b, k);
        h[i] = 0.5 * a * (1 + std::erf(a / std::sqrt(2.0)));
      }
      double mean = 0, var = 0;
      for (double v : h) mean += v / s.C;
      for (double v : h) var += (v - mean) * (v - mean) / s.C;
      for (index_t i = 0; i < s.C; ++i) h[i] = (h[i] - mean) / std::sqrt(var + eps_ln) * nw(i) + nb(i);
      for (index_t v = 0; v < s.V; ++v) {
        z[v] = bias(v);
        for (index_t i = 0; i < s.C; ++i) z[v] += h[i] * emb(v, i);
      }
      total += ce_row(z, label, 0.1);
      ++count;
    }
  return total / count;
}

}  // namespace

TEST_CASE("itg: decoder inputs and labels as LAVIS builds them") {
  std::vector<index_t> ids{101, 7, 8, 0, 101, 9, 0, 0}, dec(8), lab(8);
  itg_decoder_inputs(tensor_view<const index_t, 2>(ids.data(), {2, 4}), 30522, index_t{0},
                     tensor_view<index_t, 2>(dec.data(), {2, 4}), tensor_view<index_t, 2>(lab.data(), {2, 4}));
  CHECK(dec == std::vector<index_t>{30522, 7, 8, 0, 30522, 9, 0, 0});
  CHECK(lab == std::vector<index_t>{30522, 7, 8, -100, 30522, 9, -100, -100});
  // no padding id: nothing is ignored
  itg_decoder_inputs(tensor_view<const index_t, 2>(ids.data(), {2, 4}), 5, std::nullopt,
                     tensor_view<index_t, 2>(dec.data(), {2, 4}), tensor_view<index_t, 2>(lab.data(), {2, 4}));
  CHECK(lab == std::vector<index_t>{5, 7, 8, 0, 5, 9, 0, 0});
}

TEST_CASE("itg: sequence-major rows, shift by one, ignored pads: the loss by hand") {
  reference_backend be;
  itg_sizes s;
  io<double> x;
  itg_init(x, s, 21);
  itg_cache<double> cache;
  itg_forward(be, x.out<1>("loss"), cache, head_of(x), x.in<2>("emb"), x.in<2>("rows"), x.iin<2>("labels"), 1e-12);
  CHECK(cache.count(0) == 3 + 1);  // sentence 0: 3 predicted tokens; sentence 1: only "t=1" (the rest pads)
  CHECK(x.fbuf("loss").data[0] == doctest::Approx(naive_itg(x, s, 1e-12)).epsilon(1e-12));
}

TEST_CASE("itg: finite differences wrt text rows, LM head, word embeddings and bias") {
  itg_sizes s;
  auto cache = std::make_shared<itg_cache<double>>();
  grad_case gc;
  gc.init = [s](io<double>& x) { itg_init(x, s, 33); };
  gc.wrt = {"rows", "tw", "tb", "nw", "nb", "bias", "emb"};
  gc.outputs = {"loss"};
  gc.forward = [cache](reference_backend& be, io<double>& x) {
    itg_forward(be, x.out<1>("loss"), *cache, head_of(x), x.in<2>("emb"), x.in<2>("rows"), x.iin<2>("labels"), 1e-12);
  };
  gc.backward = [cache](reference_backend& be, io<double>& x) {
    auto dhead = head_of(x, "d");
    itg_backward(be, x.out<2>("drows"), dhead, x.out<2>("demb"), x.in<1>("dloss"), *cache, head_of(x), x.in<2>("emb"));
  };
  auto rep = run_gradcheck(gc);
  CAPTURE(rep.why);
  CHECK(rep.ok);
}

TEST_CASE("itg: the last position's rows get no gradient; accumulate adds") {
  reference_backend be;
  itg_sizes s;
  io<double> x;
  itg_init(x, s, 44);
  for (const char* n : {"drows", "dtw", "dtb", "dnw", "dnb", "dbias", "demb"}) {
    auto shape = x.fbuf(std::string(n).substr(1)).shape;
    x.make(n, shape, [](index_t) { return 0.0; });
  }
  x.make("dloss", {1}, [](index_t) { return 1.0; });
  itg_cache<double> cache;
  itg_forward(be, x.out<1>("loss"), cache, head_of(x), x.in<2>("emb"), x.in<2>("rows"), x.iin<2>("labels"), 1e-12);
  auto dhead = head_of(x, "d");
  itg_backward(be, x.out<2>("drows"), dhead, x.out<2>("demb"), x.in<1>("dloss"), cache, head_of(x), x.in<2>("emb"));
  auto dr = x.in<2>("drows");
  for (index_t b = 0; b < s.B; ++b)
    for (index_t c = 0; c < s.C; ++c) CHECK(dr((s.T - 1) * s.B + b, c) == 0.0);
  const auto first = x.fbuf("drows").data;
  const auto emb1 = x.fbuf("demb").data;
  itg_backward(be, x.out<2>("drows"), dhead, x.out<2>("demb"), x.in<1>("dloss"), cache, head_of(x), x.in<2>("emb"),
               grad_write::accumulate);
  for (index_t k = 0; k < x.fbuf("drows").size(); ++k) CHECK(x.fbuf("drows").data[k] == doctest::Approx(2 * first[k]));
  for (index_t k = 0; k < x.fbuf("demb").size(); ++k) CHECK(x.fbuf("demb").data[k] == doctest::Approx(2 * emb1[k]));
}

TEST_CASE("itg: float agrees with double, oneDNN with the reference") {
  itg_sizes s{3, 5, 16, 40};
  io<double> xd;
  itg_init(xd, s, 55);
  auto run = [&](auto& be, auto zero) {
    using T = decltype(zero);
    io<T> x = blip2::testing::convert<T>(xd);
    for (const char* n : {"drows", "dtw", "dtb", "dnw", "dnb", "dbias", "demb"})
      x.make(n, x.fbuf(std::string(n).substr(1)).shape, [](index_t) { return 0.0; });
    x.make("dloss", {1}, [](index_t) { return 1.0; });
    itg_cache<T> cache;
    lm_head_weights<T> head{{x.template out<2>("tw"), x.template out<1>("tb")}, {x.template out<1>("nw"), x.template out<1>("nb")},
                            x.template out<1>("bias")};
    lm_head_weights<T> dhead{{x.template out<2>("dtw"), x.template out<1>("dtb")},
                             {x.template out<1>("dnw"), x.template out<1>("dnb")}, x.template out<1>("dbias")};
    itg_forward(be, x.template out<1>("loss"), cache, head, x.template in<2>("emb"), x.template in<2>("rows"),
                x.template iin<2>("labels"), 1e-12);
    itg_backward(be, x.template out<2>("drows"), dhead, x.template out<2>("demb"), x.template in<1>("dloss"), cache, head,
                 x.template in<2>("emb"));
    std::vector<double> all;
    for (const char* n : {"loss", "drows", "dtw", "dtb", "dnw", "dnb", "dbias", "demb"}) {
      auto& b = x.fbuf(n);
      all.insert(all.end(), b.data.begin(), b.data.begin() + b.size());
    }
    return all;
  };
  reference_backend ref;
  const auto d = run(ref, 0.0);
  CHECK(nerr(run(ref, 0.0f), d) < 1e-5);
#if BLIP2_HAS_ONEDNN
  onednn_backend dnn;
  CHECK(nerr(run(dnn, 0.0f), d) < 1e-5);
#endif
}

TEST_CASE("itg: bad inputs") {
  reference_backend be;
  itg_sizes s;
  io<double> x;
  itg_init(x, s, 66);
  itg_cache<double> cache;
  // T = 1: nothing to predict
  x.make_ints("one", {s.B, 1}, [](index_t) { return index_t{3}; });
  x.make("rows1", {s.B, s.C}, [](index_t) { return 0.0; });
  CHECK_THROWS_AS(itg_forward(be, x.out<1>("loss"), cache, head_of(x), x.in<2>("emb"), x.in<2>("rows1"), x.iin<2>("one"), 1e-12),
                  shape_error);
  // rows that are not (T B, C)
  CHECK_THROWS_AS(itg_forward(be, x.out<1>("loss"), cache, head_of(x), x.in<2>("emb"), x.in<2>("rows1"), x.iin<2>("labels"), 1e-12),
                  shape_error);
  // a label outside the vocabulary
  x.ibuf("labels").data[1] = s.V;
  CHECK_THROWS_AS(itg_forward(be, x.out<1>("loss"), cache, head_of(x), x.in<2>("emb"), x.in<2>("rows"), x.iin<2>("labels"), 1e-12),
                  value_error);
  itg_cache<double> fresh;
  auto dhead = head_of(x);
  CHECK_THROWS_AS(itg_backward(be, x.out<2>("rows"), dhead, x.out<2>("emb"), x.in<1>("loss"), fresh, head_of(x), x.in<2>("emb")),
                  value_error);  // backward before forward
}

// ---------------------------------------------------------------------------------------------------
// Stage-1 total
// ---------------------------------------------------------------------------------------------------

TEST_CASE("stage1: weighted total, switched-off terms, gradients") {
  stage1_loss_weights w;
  CHECK(stage1_total(w, 1.0, 2.0, 3.0) == doctest::Approx(6.0));  // LAVIS: loss_itc + loss_itm + loss_lm
  w.itm = 0;                                                        // ablation: no ITM
  CHECK(stage1_total(w, 1.0, std::nan(""), 3.0) == doctest::Approx(4.0));
  w.itg = 0.5;
  CHECK(stage1_total(w, 1.0f, 2.0f, 4.0f) == doctest::Approx(3.0));
  auto g = stage1_backward(w, 2.0);
  CHECK(g.itc == 2.0);
  CHECK(g.itm == 0.0);
  CHECK(g.itg == 1.0);
  w.itc = -1;
  CHECK_THROWS_AS(stage1_total(w, 1.0, 1.0, 1.0), value_error);
  w.itc = std::nan("");
  CHECK_THROWS_AS(stage1_backward(w), value_error);
}

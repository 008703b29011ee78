// adamw_update kernel of the reference backend: the element rule of optim/adamw_rule.hpp over the views
// (any strides), elements split over the OpenMP threads (independent: no order to keep).
#pragma once
#include <type_traits>

#include "blip2/backend/reference/base.hpp"
#include "blip2/core/check.hpp"
#include "blip2/optim/adamw_rule.hpp"

namespace blip2 {

template <>
struct kernel<reference_backend, op::adamw_update> {
  template <class T>
  static void run(reference_backend&, tensor_view<T, 1> p, tensor_view<T, 1> m, tensor_view<T, 1> v,
                  tensor_view<const T, 1> g, const adamw_step_constants& k) {
    const index_t n = p.extent(0);
    if constexpr (std::is_same_v<T, float>) {
      const adamw_float_constants kf(k);
      BLIP2_OMP_FOR
      for (index_t i = 0; i < n; ++i) adamw_update_element(p(i), m(i), v(i), g(i), kf);
    } else {
      BLIP2_OMP_FOR
      for (index_t i = 0; i < n; ++i) adamw_update_element(p(i), m(i), v(i), g(i), k);
    }
  }
};

}  // namespace blip2

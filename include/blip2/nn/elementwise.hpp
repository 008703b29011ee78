// blip2/nn/elementwise.hpp: the argument checks every elementwise activation shares (gelu, relu): any
// tensor, seen as R rows (all leading dimensions, flattened) by C (the last one).
#pragma once
#include <string_view>
#include <tuple>

#include "blip2/backend/backend.hpp"
#include "blip2/core/check.hpp"

namespace blip2::detail {

// (out, inp) as (R, C) views in Be's memory, after checking ranks, element types and shapes
template <class Be, class Out, class In>
auto activation_forward_args(std::string_view op, Out&& out, In&& inp) {
  auto ov = view(out);
  auto iv = view(inp);
  static_assert(decltype(ov)::rank == decltype(iv)::rank, "activation forward: out and inp must have the same rank");
  static_assert(same_value_type_v<decltype(ov), decltype(iv)>, "activation forward: out and inp differ in type");
  check_shape(op, "out", ov, iv.extents());
  return std::tuple{arg_rows<Be>(ov), as_const(arg_rows<Be>(iv))};  // (R, C), (R, C)
}

// (dinp, dout, inp) as (R, C) views in Be's memory, after the same checks
template <class Be, class DInp, class DOut, class In>
auto activation_backward_args(std::string_view op, DInp&& dinp, DOut&& dout, In&& inp) {
  auto div = view(dinp);
  auto dov = view(dout);
  auto iv = view(inp);
  static_assert(decltype(div)::rank == decltype(iv)::rank && decltype(dov)::rank == decltype(iv)::rank,
                "activation backward: dinp, dout and inp must have the same rank");
  static_assert(same_value_type_v<decltype(div), decltype(iv)> && same_value_type_v<decltype(dov), decltype(iv)>,
                "activation backward: dinp, dout and inp differ in type");
  check_shape(op, "dinp", div, iv.extents());
  check_shape(op, "dout", dov, iv.extents());
  return std::tuple{arg_rows<Be>(div), as_const(arg_rows<Be>(dov)), as_const(arg_rows<Be>(iv))};
}

}  // namespace blip2::detail

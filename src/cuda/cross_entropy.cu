// src/cuda/cross_entropy.cu: softmax cross-entropy with label smoothing and an ignore index.
//   forward:  lse and row_loss, one warp per row when V <= 1024 (8 rows per 256-thread block), else one
//             block per row (rows past the grid in a grid-stride loop); then one block sums the counted
//             rows' losses and counts them (fixed order: deterministic) into loss and count.
//   backward: one thread per element of dlogits (grid-stride); dloss and count are read on the device.
// A target outside [0, V) that is not ignore_index (the public op cannot check device targets) is never
// used as an index: its row's loss is NaN (so is the mean loss: the row counts) and so are its gradients.
#include "blip2/backend/cuda/cross_entropy.hpp"
#include "common.cuh"
#include "row_team.cuh"

namespace blip2::cuda_detail {
namespace {


__device__ inline bool is_bad_target(index_t t, index_t V, index_t ignore_index) {
  return t != ignore_index && (t < 0 || t >= V);
}

template <bool Warp>
__global__ void rows_kernel(dview<float, 1> row_loss, dview<float, 1> lse, dview<const float, 2> logits,
                            dview<const index_t, 1> targets, float smoothing, index_t ignore_index) {
  __shared__ float shared[32];
  const row_team<Warp> t;
  const index_t R = logits.e[0], V = logits.e[1];
  for (index_t r = t.first; r < R; r += t.step) {
    // The reference's max starts at logits(r, 0) and then skips NaN (z > m is false): it is NaN when the
    // first logit is, else the largest non-NaN logit, which is what fmaxf from -inf finds.
    float mx = -INFINITY;
    for (index_t c = t.lane; c < V; c += t.width) mx = fmaxf(mx, logits(r, c));
    mx = t.max(mx, shared);
    const float z0 = logits(r, 0);
    const float m = isnan(z0) ? z0 : mx;
    // stable log-sum-exp: m + log sum exp(z - m); the sum of the logits for the smoothing term
    float s = 0.0f, sum_z = 0.0f;
    for (index_t c = t.lane; c < V; c += t.width) {
      const float z = logits(r, c);
      s += expf(z - m);
      sum_z += z;
    }
    s = t.sum(s, shared);
    sum_z = t.sum(sum_z, shared);
    if (t.lane == 0) {
      const float l = isinf(m) ? m : m + logf(s);  // a row of -inf (or with +inf) has lse = m
      lse(r) = l;
      const index_t tg = targets(r);
      float loss;
      if (tg == ignore_index) {
        loss = 0.0f;
      } else if (is_bad_target(tg, V, ignore_index)) {
        loss = NAN;
      } else {
        // (1 - eps) (lse - z[t]) + eps mean_c (lse - z[c]); eps == 0 skips the smoothing term, so an -inf
        // logit elsewhere in the row does not make the loss NaN
        const float nll = l - logits(r, tg);
        loss = smoothing == 0.0f ? nll
                                 : (1.0f - smoothing) * nll + smoothing * (l - sum_z / static_cast<float>(V));
      }
      row_loss(r) = loss;
    }
  }
}

__device__ inline long long warp_sum_ll(long long x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// One block: loss = sum of the counted rows' losses / their count (0 when none), count = their count.
__global__ void mean_kernel(dview<float, 1> loss, dview<index_t, 1> count, dview<const float, 1> row_loss,
                            dview<const index_t, 1> targets, index_t ignore_index) {
  __shared__ float shared[32];
  __shared__ long long shared_n[32];
  const index_t R = targets.e[0];
  float s = 0.0f;
  long long n = 0;
  for (index_t r = threadIdx.x; r < R; r += blockDim.x)
    if (targets(r) != ignore_index) {
      s += row_loss(r);
      ++n;
    }
  s = block_sum(s, shared);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  n = warp_sum_ll(n);
  if (lane == 0) shared_n[warp] = n;
  __syncthreads();
  n = lane < warps ? shared_n[lane] : 0;
  n = warp_sum_ll(n);
  if (threadIdx.x == 0) {
    count(0) = n;
    loss(0) = n > 0 ? s / static_cast<float>(n) : 0.0f;
  }
}

__global__ void backward_kernel(dview<float, 2> dlogits, dview<const float, 1> dloss, dview<const float, 2> logits,
                                dview<const index_t, 1> targets, dview<const float, 1> lse,
                                dview<const index_t, 1> count, float smoothing, index_t ignore_index,
                                bool accumulate) {
  const index_t R = logits.e[0], V = logits.e[1], total = R * V;
  // forward: loss = sum_r row_loss[r] / count; drow_loss[r] = dloss / count for counted rows
  const index_t n = count(0);
  const float g = n > 0 ? dloss(0) / static_cast<float>(n) : 0.0f;
  const float off = smoothing / static_cast<float>(V);  // the smoothed target's mass on every class
  const float on = 1.0f - smoothing;                     // and the extra mass on the target class
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < total; i += index_t(gridDim.x) * blockDim.x) {
    const index_t r = i / V, c = i % V;
    const index_t t = targets(r);
    if (t == ignore_index) {
      // forward: row_loss[r] = 0 (ignored); no gradient
      if (!accumulate) dlogits(r, c) = 0.0f;
      continue;
    }
    // dz[c] = drow_loss (softmax[c] - q[c]), q = (1 - eps) onehot(t) + eps / V, softmax[c] = exp(z[c] - lse)
    const float q = c == t ? on + off : off;
    const float grad = is_bad_target(t, V, ignore_index) ? NAN : g * (expf(logits(r, c) - lse(r)) - q);
    dlogits(r, c) = (accumulate ? dlogits(r, c) : 0.0f) + grad;  // assign never reads dlogits
  }
}

}  // namespace

void cross_entropy_forward(cuda_backend& be, tensor_view<float, 1, cuda_space> loss,
                           tensor_view<float, 1, cuda_space> row_loss, tensor_view<float, 1, cuda_space> lse,
                           tensor_view<index_t, 1, cuda_space> count, tensor_view<const float, 2, cuda_space> logits,
                           tensor_view<const index_t, 1, cuda_space> targets, float smoothing, index_t ignore_index) {
  const index_t R = logits.extent(0), V = logits.extent(1);
  cudaStream_t s = stream_of(be);
  if (R > 0 && V > 0) {  // the public op rejects V == 0 with rows
    const row_launch p = plan_rows(R, V);
    if (p.warp)
      rows_kernel<true><<<p.blocks, p.threads, 0, s>>>(dv(row_loss), dv(lse), dv(logits), dv(targets), smoothing,
                                                       ignore_index);
    else
      rows_kernel<false><<<p.blocks, p.threads, 0, s>>>(dv(row_loss), dv(lse), dv(logits), dv(targets), smoothing,
                                                        ignore_index);
    check_launch("cross_entropy_forward (rows)");
  }
  // always: with no rows, loss = 0 and count = 0 are still written
  mean_kernel<<<1, 1024, 0, s>>>(dv(loss), dv(count), dv(tensor_view<const float, 1, cuda_space>(row_loss)),
                                 dv(targets), ignore_index);
  check_launch("cross_entropy_forward (mean)");
}

void cross_entropy_backward(cuda_backend& be, tensor_view<float, 2, cuda_space> dlogits,
                            tensor_view<const float, 1, cuda_space> dloss, tensor_view<const float, 2, cuda_space> logits,
                            tensor_view<const index_t, 1, cuda_space> targets, tensor_view<const float, 1, cuda_space> lse,
                            tensor_view<const index_t, 1, cuda_space> count, float smoothing, index_t ignore_index,
                            grad_write mode) {
  const index_t n = logits.size();
  if (n == 0) return;
  const unsigned blocks = grid_for(n);
  backward_kernel<<<blocks, 256, 0, stream_of(be)>>>(dv(dlogits), dv(dloss), dv(logits), dv(targets), dv(lse),
                                                     dv(count), smoothing, ignore_index,
                                                     mode == grad_write::accumulate);
  check_launch("cross_entropy_backward");
}

}  // namespace blip2::cuda_detail

// The cross-entropy's pass over one chunk of logits for seq2seq/training/chunked_loss.py: each row's loss and, in
// place, its gradient, one row at a time while the row (V values) is still in cache. The formulas are
// chunked_loss.py's; this file only computes them.
//
//   softmax_cross_entropy_(logits (C,V)!, targets (C,), smoothing ε) -> (loss (C,), column_sums (V,)):
//     for each row z with target y, m = max_v z_v:
//       log_norm = m + log Σ_v exp(z_v − m)       loss = (1−ε)(log_norm − z_y) + ε(log_norm − mean_v z_v)
//       z ← softmax(z) − ε/V − (1−ε) onehot(y)    (∂loss/∂z)
//     column_sums = Σ over rows of the new z (the bias's gradient, before the 1/N of the mean)
//
// Three passes over a row (max and sum; exp in place and its total; scale, shift and the column sums) against the
// eight over the whole (C,V) tensor of the operators it replaces (softmax into a new tensor, two amax, gather,
// mean, sub_, scatter_add_, and the product with a row of ones).
#include "vec_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <tuple>

namespace seq2seq_kernels {
namespace {

using at::vec::Vectorized;

template <typename scalar_t>
void rows(scalar_t* logits, const int64_t* targets, int64_t C, int64_t V, scalar_t smoothing, scalar_t* loss,
          scalar_t* partial_sums /* (threads, V) */) {
  using Vec = Vectorized<scalar_t>;
  const scalar_t lowest = -std::numeric_limits<scalar_t>::infinity();
  const scalar_t hit = scalar_t(1) - smoothing, spread = smoothing / scalar_t(V);
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    scalar_t* sums = partial_sums + at::get_thread_num() * V;
    for (int64_t i = begin; i < end; ++i) {
      scalar_t* z = logits + i * V;
      const int64_t y = targets[i];
      TORCH_CHECK(y >= 0 && y < V, "softmax_cross_entropy_: target ", y, " outside the vocabulary of ", V);
      // pass 1: the largest logit and the logits' sum
      Vec vmax(lowest), vsum(scalar_t(0));
      int64_t v = 0;
      for (; v + Vec::size() <= V; v += Vec::size()) {
        const Vec x = Vec::loadu(z + v);
        vmax = at::vec::maximum(vmax, x);
        vsum = vsum + x;
      }
      scalar_t m = at::vec::vec_reduce_all<scalar_t>([](Vec a, Vec b) { return at::vec::maximum(a, b); }, vmax);
      scalar_t sum = at::vec::vec_reduce_all<scalar_t>([](Vec a, Vec b) { return a + b; }, vsum);
      for (; v < V; ++v) {
        m = std::max(m, z[v]);
        sum += z[v];
      }
      const scalar_t target_logit = z[y];
      // pass 2: exp(z − m) in place, and its total
      const Vec shift(m);
      Vec vtotal(scalar_t(0));
      for (v = 0; v + Vec::size() <= V; v += Vec::size()) {
        const Vec e = (Vec::loadu(z + v) - shift).exp_u20();
        e.store(z + v);
        vtotal = vtotal + e;
      }
      scalar_t total = at::vec::vec_reduce_all<scalar_t>([](Vec a, Vec b) { return a + b; }, vtotal);
      for (; v < V; ++v) {
        z[v] = std::exp(z[v] - m);
        total += z[v];
      }
      const scalar_t log_norm = m + std::log(total);
      loss[i] = hit * (log_norm - target_logit) + smoothing * (log_norm - sum / scalar_t(V));
      // pass 3: softmax − ε/V, and the column sums
      const scalar_t inverse = scalar_t(1) / total;
      const Vec scale(inverse), minus(-spread);
      for (v = 0; v + Vec::size() <= V; v += Vec::size()) {
        const Vec g = at::vec::fmadd(Vec::loadu(z + v), scale, minus);
        g.store(z + v);
        (Vec::loadu(sums + v) + g).store(sums + v);
      }
      for (; v < V; ++v) {
        z[v] = z[v] * inverse - spread;
        sums[v] += z[v];
      }
      z[y] -= hit;
      sums[y] -= hit;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> softmax_cross_entropy_(at::Tensor logits, const at::Tensor& targets,
                                                          double smoothing) {
  TORCH_CHECK(logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == logits.size(0),
              "softmax_cross_entropy_: logits (C,V) and targets (C,)");
  TORCH_CHECK(logits.is_contiguous() && logits.device().is_cpu() && targets.device().is_cpu(),
              "softmax_cross_entropy_: contiguous CPU logits, CPU targets");
  TORCH_CHECK(targets.scalar_type() == at::kLong, "softmax_cross_entropy_: int64 targets");
  const int64_t C = logits.size(0), V = logits.size(1);
  const at::Tensor ids = targets.contiguous();
  at::Tensor loss = at::empty({C}, logits.options());
  at::Tensor partial_sums = at::zeros({at::get_num_threads(), V}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "softmax_cross_entropy_", [&] {
    rows<scalar_t>(logits.data_ptr<scalar_t>(), ids.data_ptr<int64_t>(), C, V, static_cast<scalar_t>(smoothing),
                   loss.data_ptr<scalar_t>(), partial_sums.data_ptr<scalar_t>());
  });
  return {loss, partial_sums.sum(0)};
}

}  // namespace
}  // namespace seq2seq_kernels

TORCH_LIBRARY_FRAGMENT(seq2seq_kernels, m) {
  m.def("softmax_cross_entropy_(Tensor(a!) logits, Tensor targets, float smoothing) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(seq2seq_kernels, CPU, m) {
  m.impl("softmax_cross_entropy_", &seq2seq_kernels::softmax_cross_entropy_);
}

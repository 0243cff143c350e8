// Bahdanau's additive attention score in its sigmoid form, forward and backward, one pass over the keys each.
// The formulas and their derivation are in seq2seq/models/attention_kernel.py; this file only computes them.
//
//   additive_score(keys (B,S,A), query (B,A), v (A)) -> e (B,S)      e_bs = 2 Σ_a v_a σ(keys_bsa + 2 query_ba)
//   additive_score_backward(keys, query, v, grad (B,S), keys_grad (B,S,A)) -> (v_rows (B,A), query_rows (B,A)):
//     for every (b, s) with grad_bs ≠ 0, with g = σ(keys_bs + 2 query_b) and σ' = g (1 − g):
//       v_rows_b += grad_bs g        query_rows_b += grad_bs σ'        keys_grad_bs += grad_bs σ'
//   (query's rows may be strided: a slice of a wider product)
#include "additive_score.h"
#include "vec_math.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

namespace seq2seq_kernels {
namespace {

using at::vec::Vectorized;

void check(const at::Tensor& keys, const at::Tensor& query, const at::Tensor& v) {
  TORCH_CHECK(keys.dim() == 3 && query.dim() == 2 && v.dim() == 1, "additive_score: keys (B,S,A), query (B,A), v (A)");
  TORCH_CHECK(keys.size(0) == query.size(0) && keys.size(2) == query.size(1) && keys.size(2) == v.size(0),
              "additive_score: sizes do not match");
  TORCH_CHECK(keys.is_contiguous() && query.stride(1) == 1 && v.is_contiguous(),
              "additive_score: contiguous keys and v, query's rows packed");
  TORCH_CHECK(keys.device().is_cpu() && query.device().is_cpu() && v.device().is_cpu(), "additive_score: CPU tensors");
  TORCH_CHECK(keys.scalar_type() == query.scalar_type() && keys.scalar_type() == v.scalar_type(),
              "additive_score: one dtype");
}

}  // namespace

at::Tensor scores(const at::Tensor& keys, const at::Tensor& query, const at::Tensor& v) {
  check(keys, query, v);
  const int64_t B = keys.size(0), S = keys.size(1), A = keys.size(2);
  at::Tensor out = at::empty({B, S}, keys.options());
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "additive_score", [&] {
    using Vec = Vectorized<scalar_t>;
    const scalar_t* k = keys.data_ptr<scalar_t>();
    const scalar_t* q = query.data_ptr<scalar_t>();
    const int64_t q_stride = query.stride(0);
    const scalar_t* w = v.data_ptr<scalar_t>();
    scalar_t* e = out.data_ptr<scalar_t>();
    const Vec two(scalar_t(2));
    at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* row = k + i * A;
        const scalar_t* row_q = q + (i / S) * q_stride;
        Vec sum(scalar_t(0));
        int64_t a = 0;
        for (; a + Vec::size() <= A; a += Vec::size()) {
          sum = at::vec::fmadd(sigmoid(at::vec::fmadd(two, Vec::loadu(row_q + a), Vec::loadu(row + a))),
                               Vec::loadu(w + a), sum);
        }
        scalar_t total = at::vec::vec_reduce_all<scalar_t>([](Vec x, Vec y) { return x + y; }, sum);
        for (; a < A; ++a) {
          total += w[a] * scalar_sigmoid(row[a] + scalar_t(2) * row_q[a]);
        }
        e[i] = scalar_t(2) * total;
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> scores_backward(const at::Tensor& keys, const at::Tensor& query,
                                                   const at::Tensor& v, const at::Tensor& grad,
                                                   at::Tensor keys_grad) {
  check(keys, query, v);
  const int64_t B = keys.size(0), S = keys.size(1), A = keys.size(2);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == S && grad.is_contiguous(),
              "additive_score: grad (B,S)");
  TORCH_CHECK(keys_grad.sizes() == keys.sizes() && keys_grad.is_contiguous(), "additive_score: keys_grad (B,S,A)");
  TORCH_CHECK(grad.scalar_type() == keys.scalar_type() && keys_grad.scalar_type() == keys.scalar_type(),
              "additive_score: one dtype");
  at::Tensor v_rows = at::zeros({B, A}, keys.options());
  at::Tensor query_rows = at::zeros({B, A}, keys.options());
  AT_DISPATCH_FLOATING_TYPES(keys.scalar_type(), "additive_score_backward", [&] {
    using Vec = Vectorized<scalar_t>;
    const scalar_t* k = keys.data_ptr<scalar_t>();
    const scalar_t* q = query.data_ptr<scalar_t>();
    const int64_t q_stride = query.stride(0);
    const Vec two(scalar_t(2));
    const scalar_t* gs = grad.data_ptr<scalar_t>();
    scalar_t* kg = keys_grad.data_ptr<scalar_t>();
    scalar_t* vr = v_rows.data_ptr<scalar_t>();
    scalar_t* qr = query_rows.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* row_q = q + b * q_stride;
        scalar_t* v_row = vr + b * A;
        scalar_t* q_row = qr + b * A;
        for (int64_t s = 0; s < S; ++s) {
          const scalar_t g = gs[b * S + s];
          if (g == scalar_t(0)) continue;  // padding (α = 0) and positions without gradient: nothing to add
          const scalar_t* row = k + (b * S + s) * A;
          scalar_t* out = kg + (b * S + s) * A;
          const Vec gv(g);
          int64_t a = 0;
          for (; a + Vec::size() <= A; a += Vec::size()) {
            const Vec sig = sigmoid(at::vec::fmadd(two, Vec::loadu(row_q + a), Vec::loadu(row + a)));
            const Vec slope = (sig - sig * sig) * gv;
            at::vec::fmadd(sig, gv, Vec::loadu(v_row + a)).store(v_row + a);
            (Vec::loadu(q_row + a) + slope).store(q_row + a);
            (Vec::loadu(out + a) + slope).store(out + a);
          }
          for (; a < A; ++a) {
            const scalar_t sig = scalar_sigmoid(row[a] + scalar_t(2) * row_q[a]);
            const scalar_t slope = (sig - sig * sig) * g;
            v_row[a] += sig * g;
            q_row[a] += slope;
            out[a] += slope;
          }
        }
      }
    });
  });
  return {v_rows, query_rows};
}

}  // namespace seq2seq_kernels

TORCH_LIBRARY_FRAGMENT(seq2seq_kernels, m) {
  m.def("additive_score(Tensor keys, Tensor query, Tensor v) -> Tensor");
  m.def("additive_score_backward(Tensor keys, Tensor query, Tensor v, Tensor grad, Tensor(a!) keys_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(seq2seq_kernels, CPU, m) {
  m.impl("additive_score", &seq2seq_kernels::scores);
  m.impl("additive_score_backward", &seq2seq_kernels::scores_backward);
}

// The additive score's pass over the keys (additive_score.cpp), also called by the fused decoder step.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace seq2seq_kernels {

// e (B,S) = 2 Σ_a v_a σ(keys + 2 query): keys (B,S,A) contiguous, query (B,A) with packed rows, v (A)
at::Tensor scores(const at::Tensor& keys, const at::Tensor& query, const at::Tensor& v);

// (v_rows (B,A), query_rows (B,A)) for grad = ∂L/∂(g v) (B,S); adds grad σ' to keys_grad (B,S,A) in place
std::tuple<at::Tensor, at::Tensor> scores_backward(const at::Tensor& keys, const at::Tensor& query,
                                                   const at::Tensor& v, const at::Tensor& grad,
                                                   at::Tensor keys_grad);

}  // namespace seq2seq_kernels

// σ on PyTorch's vectors and on the scalars after the last whole vector, shared by the kernels.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cmath>

namespace seq2seq_kernels {

// σ(x) = 1 / (1 + e^-x); in float32 exp_u20 is the exponential PyTorch's own softmax uses
template <typename T>
inline at::vec::Vectorized<T> sigmoid(const at::vec::Vectorized<T>& x) {
  using Vec = at::vec::Vectorized<T>;
  return Vec(T(1)) / (Vec(T(1)) + x.neg().exp_u20());
}

template <typename T>
inline T scalar_sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

}  // namespace seq2seq_kernels

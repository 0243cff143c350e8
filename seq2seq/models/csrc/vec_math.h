// σ on PyTorch's vectors and on the scalars after the last whole vector, and the GRU's gate derivatives, shared by
// the kernels.
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

// The GRU's gate derivatives (nn.GRUCell's equations: n = tanh(g_x^n + r ⊙ from_n), h' = n + z ⊙ (h − n)) for
// grad = ∂L/∂h', shared by the encoder's and the decoder's compiled loops: ∂n before tanh, ∂r and ∂z before σ
template <typename T>
struct GateGradients {
  at::vec::Vectorized<T> r, z, n;
};

template <typename T>
inline GateGradients<T> gate_gradients(const at::vec::Vectorized<T>& grad, const at::vec::Vectorized<T>& r,
                                       const at::vec::Vectorized<T>& z, const at::vec::Vectorized<T>& n,
                                       const at::vec::Vectorized<T>& from_n, const at::vec::Vectorized<T>& previous) {
  using Vec = at::vec::Vectorized<T>;
  const Vec one(T(1));
  const Vec grad_n = (grad - grad * z) * (one - n * n);  // through (1 − z) ⊙ · and tanh
  return {grad_n * from_n * (one - r) * r,             // through r ⊙ from_n and σ
          grad * (previous - n) * (one - z) * z,        // through z ⊙ (h − n) and σ
          grad_n};
}

// Stores them for the input product, [∂r, ∂z, ∂n] at `input`, and for the hidden product W_h h + b_h, whose
// n-block is read through r ⊙ ·, [∂r, ∂z, ∂n ⊙ r] at each of `hidden`: H-wide gate blocks, the vector at column j
template <typename T, typename... Hidden>
inline void store_gate_gradients(const GateGradients<T>& g, const at::vec::Vectorized<T>& r, int64_t H, int64_t j,
                                 T* input, Hidden*... hidden) {
  g.r.store(input + j);
  g.z.store(input + H + j);
  g.n.store(input + 2 * H + j);
  const at::vec::Vectorized<T> n_through_r = g.n * r;
  ((g.r.store(hidden + j), g.z.store(hidden + H + j), n_through_r.store(hidden + 2 * H + j)), ...);
}

}  // namespace seq2seq_kernels

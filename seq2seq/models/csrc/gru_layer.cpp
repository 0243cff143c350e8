// The encoder's GRU layer loop (seq2seq/models/gru_kernel.py's _GRULayer), forward and backward, as two operators:
// each step is the same batched product W_h h (bmm) followed by one vectorised pass for b_h, the gates, the new
// state and the padding mask, where the Python loop ran about six ATen operators a step forward and twelve backward,
// each costing more in dispatch than its few thousand elements of work. The equations and names are gru_kernel.py's.
//
//   gru_layer(projected (D,S,B,3H), mask (S,B), w_hh_t (D,H,3H), b_hh (D,1,3H))
//     -> (states (D,S,B,H), from_h (S,D,B,3H): σ(r), σ(z) and W_hn h + b_hn, n (S,D,B,H))
//   gru_layer_backward(grad_states (D,S,B,H), states, mask, w_hh (D,3H,H), from_h, n)
//     -> (∂L/∂(W_i x + b_i) (D,S,B,3H), ∂L/∂(W_h h + b_h) (D,S,B,3H))
#include "vec_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <cmath>

namespace seq2seq_kernels {
namespace {

using at::Tensor;
using at::vec::Vectorized;

void check(const Tensor& states_like, const Tensor& mask, const Tensor& weight) {
  TORCH_CHECK(states_like.dim() == 4 && mask.dim() == 2 && weight.dim() == 3, "gru_layer: (D,S,B,·), mask (S,B)");
  TORCH_CHECK(mask.size(0) == states_like.size(1) && mask.size(1) == states_like.size(2), "gru_layer: mask (S,B)");
  TORCH_CHECK(states_like.device().is_cpu() && mask.is_contiguous() && weight.is_contiguous(),
              "gru_layer: CPU tensors, contiguous mask and weight");
  TORCH_CHECK(states_like.scalar_type() == mask.scalar_type() && weight.scalar_type() == mask.scalar_type(),
              "gru_layer: one dtype");
}

std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& projected_in, const Tensor& mask, const Tensor& w_hh_t,
                                           const Tensor& b_hh) {
  check(projected_in, mask, w_hh_t);
  const Tensor projected = projected_in.contiguous();
  const int64_t D = projected.size(0), S = projected.size(1), B = projected.size(2), H = w_hh_t.size(1);
  TORCH_CHECK(projected.size(3) == 3 * H && w_hh_t.size(2) == 3 * H, "gru_layer: projected (D,S,B,3H)");
  Tensor states = at::empty({D, S, B, H}, projected.options());
  Tensor from_h = at::empty({S, D, B, 3 * H}, projected.options());
  Tensor n_all = at::empty({S, D, B, H}, projected.options());
  const Tensor b_hh_packed = b_hh.contiguous();  // (D,1,3H)
  TORCH_CHECK(b_hh_packed.numel() == D * 3 * H, "gru_layer: b_hh (D,1,3H)");
  // the state as the next product reads it, packed (a step's slice of states is strided: bmm would copy it); h_0 = 0
  Tensor previous = at::zeros({D, B, H}, projected.options()), current = at::empty_like(previous);
  AT_DISPATCH_FLOATING_TYPES(projected.scalar_type(), "gru_layer", [&] {
    using Vec = Vectorized<scalar_t>;
    const int64_t V = Vec::size();
    for (int64_t t = 0; t < S; ++t) {
      Tensor step_from_h = from_h.select(0, t);
      at::bmm_out(step_from_h, previous, w_hh_t);  // W_h h (D,B,3H); + b_h below
      const scalar_t* px_all = projected.data_ptr<scalar_t>();
      const scalar_t* bias = b_hh_packed.data_ptr<scalar_t>();
      scalar_t* f_all = step_from_h.data_ptr<scalar_t>();
      scalar_t* out_all = states.data_ptr<scalar_t>();
      scalar_t* n_step = n_all.data_ptr<scalar_t>() + t * D * B * H;
      const scalar_t* prev_all = previous.data_ptr<scalar_t>();
      scalar_t* next_all = current.data_ptr<scalar_t>();
      const scalar_t* m_row = mask.data_ptr<scalar_t>() + t * B;
      at::parallel_for(0, D * B, 8, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t d = row / B, b = row % B;
          const scalar_t* bh = bias + d * 3 * H;
          const scalar_t* px = px_all + ((d * S + t) * B + b) * 3 * H;
          scalar_t* f = f_all + row * 3 * H;
          const scalar_t* hp = prev_all + row * H;
          scalar_t* out = out_all + ((d * S + t) * B + b) * H;
          scalar_t* next = next_all + row * H;
          scalar_t* nv = n_step + row * H;
          const bool real = m_row[b] != scalar_t(0);  // padding keeps the previous state
          int64_t j = 0;
          for (; j + V <= H; j += V) {
            const Vec r = sigmoid(Vec::loadu(f + j) + Vec::loadu(bh + j) + Vec::loadu(px + j));
            const Vec z = sigmoid(Vec::loadu(f + H + j) + Vec::loadu(bh + H + j) + Vec::loadu(px + H + j));
            const Vec from_n = Vec::loadu(f + 2 * H + j) + Vec::loadu(bh + 2 * H + j);
            const Vec n = at::vec::fmadd(r, from_n, Vec::loadu(px + 2 * H + j)).tanh();
            from_n.store(f + 2 * H + j);
            const Vec prev = Vec::loadu(hp + j);
            r.store(f + j);
            z.store(f + H + j);
            n.store(nv + j);
            const Vec h = real ? at::vec::fmadd(z, prev - n, n) : prev;
            h.store(out + j);
            h.store(next + j);
          }
          for (; j < H; ++j) {
            const scalar_t r = scalar_sigmoid(f[j] + bh[j] + px[j]);
            const scalar_t z = scalar_sigmoid(f[H + j] + bh[H + j] + px[H + j]);
            f[2 * H + j] += bh[2 * H + j];
            const scalar_t n = std::tanh(px[2 * H + j] + r * f[2 * H + j]);
            f[j] = r;
            f[H + j] = z;
            nv[j] = n;
            out[j] = next[j] = real ? n + z * (hp[j] - n) : hp[j];
          }
        }
      });
      std::swap(previous, current);
    }
  });
  return {states, from_h, n_all};
}

std::tuple<Tensor, Tensor> backward(const Tensor& grad_states_in, const Tensor& states, const Tensor& mask,
                                    const Tensor& w_hh, const Tensor& from_h, const Tensor& n_all) {
  check(states, mask, w_hh);
  const Tensor grad_states = grad_states_in.contiguous();
  const int64_t D = states.size(0), S = states.size(1), B = states.size(2), H = states.size(3);
  TORCH_CHECK(states.is_contiguous() && from_h.is_contiguous() && n_all.is_contiguous(),
              "gru_layer_backward: the forward's contiguous results");
  Tensor grad_x = at::empty({D, S, B, 3 * H}, states.options());
  Tensor grad_from_h = at::empty({D, S, B, 3 * H}, states.options());
  Tensor grad_h = at::zeros({D, B, H}, states.options());  // ∂L/∂h_t from step t + 1
  Tensor next = at::empty({D, B, H}, states.options());
  Tensor zeros = at::zeros({D, B, H}, states.options());
  Tensor step_grad = at::empty({D, B, 3 * H}, states.options());  // the step's ∂(W_h h + b_h), packed for bmm
  AT_DISPATCH_FLOATING_TYPES(states.scalar_type(), "gru_layer_backward", [&] {
    using Vec = Vectorized<scalar_t>;
    const int64_t V = Vec::size();
    for (int64_t t = S - 1; t >= 0; --t) {
      const scalar_t* gs_all = grad_states.data_ptr<scalar_t>();
      const scalar_t* st_all = states.data_ptr<scalar_t>();
      const scalar_t* f_step = from_h.data_ptr<scalar_t>() + t * D * B * 3 * H;
      const scalar_t* n_step = n_all.data_ptr<scalar_t>() + t * D * B * H;
      const scalar_t* gh_all = grad_h.data_ptr<scalar_t>();
      const scalar_t* zero = zeros.data_ptr<scalar_t>();
      const scalar_t* m_row = mask.data_ptr<scalar_t>() + t * B;
      scalar_t* gx_all = grad_x.data_ptr<scalar_t>();
      scalar_t* gf_all = grad_from_h.data_ptr<scalar_t>();
      scalar_t* dir_all = next.data_ptr<scalar_t>();  // ∂L/∂h_{t-1}'s direct share; the product is added below
      scalar_t* sg_all = step_grad.data_ptr<scalar_t>();
      at::parallel_for(0, D * B, 8, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          const int64_t d = row / B, b = row % B;
          const int64_t at_t = (d * S + t) * B + b;
          const scalar_t* gs = gs_all + at_t * H;
          const scalar_t* gh = gh_all + row * H;
          const scalar_t* hp = t > 0 ? st_all + (at_t - B) * H : zero + row * H;
          const scalar_t* f = f_step + row * 3 * H;  // σ(r), σ(z), W_hn h + b_hn
          const scalar_t* nv = n_step + row * H;
          scalar_t* gx = gx_all + at_t * 3 * H;
          scalar_t* gf = gf_all + at_t * 3 * H;
          scalar_t* dir = dir_all + row * H;
          scalar_t* sg = sg_all + row * 3 * H;
          const scalar_t m = m_row[b];  // h = h_prev + m (h_new − h_prev): padding passes its gradient on
          const Vec mv(m);
          int64_t j = 0;
          for (; j + V <= H; j += V) {
            const Vec g = Vec::loadu(gh + j) + Vec::loadu(gs + j);
            const Vec r = Vec::loadu(f + j), z = Vec::loadu(f + H + j), n = Vec::loadu(nv + j);
            const Vec g_new = g * mv;
            (at::vec::fmadd(g_new, z, g - g_new)).store(dir + j);
            store_gate_gradients(gate_gradients(g_new, r, z, n, Vec::loadu(f + 2 * H + j), Vec::loadu(hp + j)), r, H,
                                 j, gx, gf, sg);
          }
          for (; j < H; ++j) {
            const scalar_t g = gh[j] + gs[j];
            const scalar_t r = f[j], z = f[H + j], n = nv[j];
            const scalar_t g_new = g * m;
            dir[j] = (g - g_new) + g_new * z;
            const scalar_t g_n = (g_new - g_new * z) * (scalar_t(1) - n * n);
            const scalar_t g_r = g_n * f[2 * H + j] * (scalar_t(1) - r) * r;
            const scalar_t g_z = g_new * (hp[j] - n) * (scalar_t(1) - z) * z;
            gx[j] = gf[j] = sg[j] = g_r;
            gx[H + j] = gf[H + j] = sg[H + j] = g_z;
            gx[2 * H + j] = g_n;
            gf[2 * H + j] = sg[2 * H + j] = g_n * r;
          }
        }
      });
      next.baddbmm_(step_grad, w_hh);  // + ∂L/∂(W_h h) W_h
      std::swap(grad_h, next);
    }
  });
  return {grad_x, grad_from_h};
}

}  // namespace
}  // namespace seq2seq_kernels

TORCH_LIBRARY_FRAGMENT(seq2seq_kernels, m) {
  m.def("gru_layer(Tensor projected, Tensor mask, Tensor w_hh_t, Tensor b_hh) -> (Tensor, Tensor, Tensor)");
  m.def(
      "gru_layer_backward(Tensor grad_states, Tensor states, Tensor mask, Tensor w_hh, Tensor from_h, Tensor n) "
      "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(seq2seq_kernels, CPU, m) {
  m.impl("gru_layer", &seq2seq_kernels::forward);
  m.impl("gru_layer_backward", &seq2seq_kernels::backward);
}

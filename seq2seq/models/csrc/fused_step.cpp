// The decoder's whole teacher-forced loop of fused steps (seq2seq/models/fused_step.py) as two operators, its forward
// (fused_loop) and its written-out backward (fused_loop_backward), called once per loop from C++ instead of ~50 small
// operators and an autograd node per step from Python. A step's products and attention read are ATen's (oneDNN's
// linear, bmm, softmax, the additive score of additive_score.cpp); its GRU gates, forward and backward, are one
// vectorised pass each over the step's (B, H) rows, where the operators took seven and eleven; each step writes its
// results into its slot of the stacked tensors the backward reads. The maths and the names are fused_step.py's.
#include "additive_score.h"

#include "vec_math.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <vector>

namespace seq2seq_kernels {
namespace {

using at::Tensor;
using at::vec::Vectorized;

// columns [begin, end) of a (B, N) tensor, as a view (narrow: cheaper than indexing with slices)
Tensor cols(const Tensor& t, int64_t begin, int64_t end) { return t.narrow(1, begin, end - begin); }
Tensor cols(const Tensor& t, int64_t begin) { return t.narrow(1, begin, t.size(1) - begin); }

// x (B, K) times w (K, N) (plus a bias (N,)): through oneDNN's linear (w as its (N, K) transpose), or at::addmm /
// at::mm, as onednn.addmm / onednn.mm with pad_rows=False
Tensor product(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, bool onednn) {
  if (onednn) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                         .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                                       c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>();
    return op.call(x, w.t(), bias, "none", c10::List<std::optional<at::Scalar>>(), c10::string_view(""));
  }
  return bias ? at::addmm(*bias, x, w) : at::mm(x, w);
}

// The GRU's gates of one step in one vectorised pass over its rows, where the operators took seven (two adds, σ,
// addcmul, tanh, lerp, and a copy into [s_t; c_t]), for rows b of (B, H) with g_x = x W_x + pre:
//   r, z = σ(g_h^{r,z} + g_x^{r,z}) (stored over g_h^{r,z}: the backward reads them there)
//   n = tanh(g_x^n + r ⊙ g_h^n)      s_t = n + z ⊙ (s_{t-1} − n)  (into s_out and, where defined, s_next)
void gates_forward(Tensor gates_h, const Tensor& gates_x, const Tensor& pre, const Tensor& hidden, Tensor n_out,
                   Tensor s_out, std::optional<Tensor> s_next) {
  const int64_t B = hidden.size(0), H = hidden.size(1);
  AT_DISPATCH_FLOATING_TYPES(hidden.scalar_type(), "fused_loop_gates", [&] {
    using Vec = Vectorized<scalar_t>;
    const int64_t V = Vec::size();
    for (int64_t b = 0; b < B; ++b) {
      scalar_t* gh = gates_h.data_ptr<scalar_t>() + b * gates_h.stride(0);
      const scalar_t* gx = gates_x.data_ptr<scalar_t>() + b * gates_x.stride(0);
      const scalar_t* px = pre.data_ptr<scalar_t>() + b * pre.stride(0);
      const scalar_t* hp = hidden.data_ptr<scalar_t>() + b * hidden.stride(0);
      scalar_t* nv = n_out.data_ptr<scalar_t>() + b * n_out.stride(0);
      scalar_t* out = s_out.data_ptr<scalar_t>() + b * s_out.stride(0);
      scalar_t* next = s_next ? s_next->data_ptr<scalar_t>() + b * s_next->stride(0) : nullptr;
      int64_t j = 0;
      for (; j + V <= H; j += V) {
        const Vec r = sigmoid(Vec::loadu(gh + j) + (Vec::loadu(gx + j) + Vec::loadu(px + j)));
        const Vec z = sigmoid(Vec::loadu(gh + H + j) + (Vec::loadu(gx + H + j) + Vec::loadu(px + H + j)));
        const Vec n =
            at::vec::fmadd(r, Vec::loadu(gh + 2 * H + j), Vec::loadu(gx + 2 * H + j) + Vec::loadu(px + 2 * H + j))
                .tanh();
        const Vec h = at::vec::fmadd(z, Vec::loadu(hp + j) - n, n);
        r.store(gh + j);
        z.store(gh + H + j);
        n.store(nv + j);
        h.store(out + j);
        if (next) h.store(next + j);
      }
      for (; j < H; ++j) {
        const scalar_t r = scalar_sigmoid(gh[j] + (gx[j] + px[j]));
        const scalar_t z = scalar_sigmoid(gh[H + j] + (gx[H + j] + px[H + j]));
        const scalar_t n = std::tanh((gx[2 * H + j] + px[2 * H + j]) + r * gh[2 * H + j]);
        gh[j] = r;
        gh[H + j] = z;
        nv[j] = n;
        out[j] = n + z * (hp[j] - n);
        if (next) next[j] = out[j];
      }
    }
  });
}

// gru_kernel.gate_gradients and the state's direct share in one pass over the rows (B, H), where the operators took
// eleven, for grad = ∂L/∂s_t = ∂[s_t; c_t]^s + ∂s_t from step t + 1:
//   ∂n = grad (1 − z)(1 − n²)    ∂r = ∂n ⊙ g_h^n r(1 − r)    ∂z = grad ⊙ (s_{t-1} − n) z(1 − z)
//   grad_x = [∂r, ∂z, ∂n]    grad_from_h = [∂r, ∂z, ∂n ⊙ r]    direct = grad ⊙ z (∂s_{t-1} but for W_h's share)
void gates_backward(const Tensor& grad_s, const Tensor& grad_next, const Tensor& previous, const Tensor& gates_h,
                    const Tensor& n_in, Tensor grad_x, Tensor grad_from_h, Tensor direct) {
  const int64_t B = previous.size(0), H = previous.size(1);
  AT_DISPATCH_FLOATING_TYPES(previous.scalar_type(), "fused_loop_gates_backward", [&] {
    using Vec = Vectorized<scalar_t>;
    const int64_t V = Vec::size();
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t* gs = grad_s.data_ptr<scalar_t>() + b * grad_s.stride(0);
      const scalar_t* gn = grad_next.data_ptr<scalar_t>() + b * grad_next.stride(0);
      const scalar_t* hp = previous.data_ptr<scalar_t>() + b * previous.stride(0);
      const scalar_t* gh = gates_h.data_ptr<scalar_t>() + b * gates_h.stride(0);
      const scalar_t* nv = n_in.data_ptr<scalar_t>() + b * n_in.stride(0);
      scalar_t* gx = grad_x.data_ptr<scalar_t>() + b * grad_x.stride(0);
      scalar_t* gf = grad_from_h.data_ptr<scalar_t>() + b * grad_from_h.stride(0);
      scalar_t* dv = direct.data_ptr<scalar_t>() + b * direct.stride(0);
      int64_t j = 0;
      for (; j + V <= H; j += V) {
        const Vec grad = Vec::loadu(gs + j) + Vec::loadu(gn + j);
        const Vec r = Vec::loadu(gh + j), z = Vec::loadu(gh + H + j), n = Vec::loadu(nv + j);
        store_gate_gradients(gate_gradients(grad, r, z, n, Vec::loadu(gh + 2 * H + j), Vec::loadu(hp + j)), r, H, j,
                             gx, gf);
        (grad * z).store(dv + j);
      }
      for (; j < H; ++j) {
        const scalar_t grad = gs[j] + gn[j];
        const scalar_t r = gh[j], z = gh[H + j], n = nv[j];
        const scalar_t grad_n = grad * (1 - z) * (1 - n * n);
        gx[j] = gf[j] = grad_n * gh[2 * H + j] * (r - r * r);
        gx[H + j] = gf[H + j] = grad * (hp[j] - n) * (z - z * z);
        gx[2 * H + j] = grad_n;
        gf[2 * H + j] = grad_n * r;
        dv[j] = grad * z;
      }
    }
  });
}

// The whole teacher-forced loop: step t = 0 … T−1 on pre (T,B,3H) from s_0, h̃_0 (None without input feeding).
// (h̃ (T,B,H), α (T,B,S), and what the backward reads, stacked over steps: the steps' s_{t-1} (T,B,H), [g_h; q]
// (T,B,3H+A) with σ(r), σ(z) in its first 2H columns, n (T,B,H), the inputs of W_x (T,B,H+D or D) and of W_c
// (T,B,H+D)). Each step's results are written into its slot of these, not stacked afterwards.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> loop(
    const Tensor& pre_in, const Tensor& hidden0, const std::optional<Tensor>& attentional0, const Tensor& b_h,
    const Tensor& b_out, const Tensor& w_h, const Tensor& w_x, const Tensor& w_out, const Tensor& keys,
    const Tensor& values, const Tensor& v, const Tensor& invalid, bool onednn) {
  const Tensor pre = pre_in.contiguous();
  const int64_t steps = pre.size(0), batch = hidden0.size(0), size = hidden0.size(1), gates = 3 * size;
  const int64_t memory = values.size(2), rest_size = attentional0 ? size + memory : memory;
  const auto options = pre.options();
  Tensor outs = at::empty({steps, batch, size}, options), weights = at::empty({steps, batch, keys.size(1)}, options);
  Tensor hiddens = at::empty({steps, batch, size}, options), ns = at::empty({steps, batch, size}, options);
  Tensor rests = at::empty({steps, batch, rest_size}, options);
  Tensor features = at::empty({steps, batch, size + memory}, options);
  std::vector<Tensor> projected(steps);
  const double lowest = -std::numeric_limits<double>::infinity();
  if (steps > 0) hiddens.select(0, 0).copy_(hidden0);
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor hidden = hiddens.select(0, t), rest = rests.select(0, t), feats = features.select(0, t);
    Tensor proj = product(hidden, w_h, b_h, onednn);  // (B, 3H + A)
    Tensor scores = seq2seq_kernels::scores(keys, cols(proj, gates), v);
    Tensor alpha = weights.select(0, t);
    at::_softmax_out(alpha, scores.masked_fill_(invalid, lowest), 1, false);
    Tensor context = at::bmm(alpha.unsqueeze(1), values).squeeze(1);  // (B, D)
    if (attentional0) {
      cols(rest, 0, size).copy_(t == 0 ? *attentional0 : outs.select(0, t - 1));
      cols(rest, size).copy_(context);
    } else {
      rest.copy_(context);
    }
    gates_forward(proj, product(rest, w_x, std::nullopt, onednn), pre.select(0, t), hidden, ns.select(0, t),
                  cols(feats, 0, size), t + 1 < steps ? std::optional<Tensor>(hiddens.select(0, t + 1)) : std::nullopt);
    cols(feats, size).copy_(context);
    Tensor out = outs.select(0, t);
    at::tanh_out(out, product(feats, w_out, b_out, onednn));
    projected[t] = proj;
  }
  return {outs, weights, hiddens, at::stack(projected), ns, rests, features};
}

// The loop's backward, step T−1 down to 0: (∂pre (T,B,3H), ∂s_0, ∂h̃_0 (empty without input feeding),
// ∂[g_h; q] (T,B,3H+A), ∂a (T,B,H), ∂v (1,A), ∂c (T,B,D)); the keys' running sum goes into keys_grad
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> loop_backward(
    const Tensor& grad_outs, const Tensor& grad_weights, const Tensor& hiddens, const Tensor& projected,
    const Tensor& ns, const Tensor& outs, const Tensor& weights, const Tensor& w_h, const Tensor& w_x,
    const Tensor& w_out, const Tensor& keys, const Tensor& values, const Tensor& v, Tensor keys_grad, bool feeding,
    bool onednn) {
  const int64_t steps = outs.size(0), batch = outs.size(1), size = outs.size(2), gates = 3 * size;
  const int64_t memory = values.size(2);
  const auto options = outs.options();
  Tensor grad_pre = at::empty({steps, batch, gates}, options);
  Tensor grad_hs = at::empty({steps, batch, projected.size(2)}, options);
  Tensor grad_as = at::empty({steps, batch, size}, options), grad_contexts = at::empty({steps, batch, memory}, options);
  Tensor grad_hidden = at::zeros({batch, size}, options);  // ∂s_t from step t + 1
  Tensor grad_attentional;                                  // ∂h̃_t from step t + 1 (input feeding)
  Tensor direct = at::empty({batch, size}, options);
  Tensor grad_v_rows = at::zeros({batch, v.size(0)}, options);  // Σ_t of each row's ∂v
  const Tensor twice_v = v * 2;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const Tensor proj = projected.select(0, t), alpha = weights.select(0, t);
    Tensor grad_out = grad_outs.select(0, t);
    if (feeding && grad_attentional.defined()) grad_out = grad_out + grad_attentional;
    Tensor grad_a = grad_as.select(0, t), grad_x = grad_pre.select(0, t), grad_h = grad_hs.select(0, t);
    at::tanh_backward_out(grad_a, grad_out, outs.select(0, t));
    Tensor grad_features = product(grad_a, w_out.t(), std::nullopt, onednn);  // ∂[s_t; c_t]
    gates_backward(cols(grad_features, 0, size), grad_hidden, hiddens.select(0, t), proj, ns.select(0, t), grad_x,
                   cols(grad_h, 0, gates), direct);
    Tensor grad_rest = product(grad_x, w_x.t(), std::nullopt, onednn);
    if (feeding) grad_attentional = cols(grad_rest, 0, size);
    Tensor grad_context = grad_contexts.select(0, t);
    at::add_out(grad_context, cols(grad_features, size), cols(grad_rest, grad_rest.size(1) - memory));
    // the attention read's backward (step_attention.read_backward with the kernel); ∂e = 2 ∂L/∂(gv)
    Tensor grad_alpha = at::baddbmm(grad_weights.select(0, t).unsqueeze(1), grad_context.unsqueeze(1),
                                    values.transpose(1, 2))
                            .squeeze(1);
    Tensor grad_scores = at::_softmax_backward_data(grad_alpha, alpha, 1, alpha.scalar_type()).mul_(2);
    auto [v_rows, query_rows] = seq2seq_kernels::scores_backward(keys, cols(proj, gates), v, grad_scores, keys_grad);
    Tensor grad_query = cols(grad_h, gates);
    at::mul_out(grad_query, query_rows, twice_v);
    grad_v_rows.add_(v_rows);
    grad_hidden = product(grad_h, w_h.t(), std::nullopt, onednn).add_(direct);
  }
  if (!feeding || !grad_attentional.defined()) grad_attentional = at::empty({0}, options);
  return {grad_pre, grad_hidden, grad_attentional, grad_hs, grad_as, grad_v_rows.sum(0).unsqueeze(0), grad_contexts};
}

}  // namespace
}  // namespace seq2seq_kernels

TORCH_LIBRARY_FRAGMENT(seq2seq_kernels, m) {
  m.def(
      "fused_loop(Tensor pre, Tensor hidden, Tensor? attentional, Tensor b_h, Tensor b_out, Tensor w_h, Tensor w_x, "
      "Tensor w_out, Tensor keys, Tensor values, Tensor v, Tensor invalid, bool onednn) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "fused_loop_backward(Tensor grad_outs, Tensor grad_weights, Tensor hiddens, Tensor projected, Tensor n, "
      "Tensor outs, Tensor weights, Tensor w_h, Tensor w_x, Tensor w_out, Tensor keys, Tensor values, Tensor v, "
      "Tensor(a!) keys_grad, bool feeding, bool onednn) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(seq2seq_kernels, CPU, m) {
  m.impl("fused_loop", &seq2seq_kernels::loop);
  m.impl("fused_loop_backward", &seq2seq_kernels::loop_backward);
}

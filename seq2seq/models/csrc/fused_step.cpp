// The fused decoder step of seq2seq/models/fused_step.py, its forward and its written-out backward, and the
// whole teacher-forced loop of them as two operators (fused_loop, fused_loop_backward): the same ATen operators in
// the same order as the Python _Step (so the same results), called from C++ instead of Python, which spent more
// time dispatching a step's ~50 small operators and its autograd node than the step's elementwise work. The maths
// and the names are fused_step.py's; the attention scores are additive_score.cpp's.
#include "additive_score.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <vector>

namespace seq2seq_kernels {
namespace {

using at::Tensor;

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

// add (B, N) + x w
Tensor add_product(const Tensor& add, const Tensor& x, const Tensor& w, bool onednn) {
  return onednn ? product(x, w, std::nullopt, true).add_(add) : at::addmm(add, x, w);
}

// gru_kernel.gate_gradients: ∂L/∂(W_i x + b_i) into grad_x, ∂L/∂(W_h h + b_h) into grad_from_h (both (B, 3H))
void gate_gradients(const Tensor& grad, const Tensor& previous, const Tensor& rz, const Tensor& n,
                    const Tensor& from_h, Tensor grad_x, Tensor grad_from_h) {
  const int64_t h = grad.size(1);
  Tensor tanh_grad = at::addcmul(grad, grad, cols(rz, h, 2 * h), -1);
  Tensor grad_n = cols(grad_x, 2 * h, 3 * h);
  at::tanh_backward_out(grad_n, tanh_grad, n);
  Tensor grad_h_r = cols(grad_from_h, 0, h);
  at::mul_out(grad_h_r, grad_n, cols(from_h, 2 * h, 3 * h));
  Tensor grad_h_z = cols(grad_from_h, h, 2 * h);
  at::mul_out(grad_h_z, grad, previous - n);
  Tensor grad_x_rz = cols(grad_x, 0, 2 * h);
  at::sigmoid_backward_out(grad_x_rz, cols(grad_from_h, 0, 2 * h), rz);
  cols(grad_from_h, 0, 2 * h).copy_(grad_x_rz);
  Tensor grad_h_n = cols(grad_from_h, 2 * h, 3 * h);
  at::mul_out(grad_h_n, grad_n, cols(rz, 0, h));
}

// (s_t, h̃_t, α_t, [g_h; q] with σ of r, z in place, rz, n, the input [h̃_{t-1}; c_t] or c_t, [s_t; c_t])
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> step(
    const Tensor& pre, const Tensor& hidden, const std::optional<Tensor>& attentional, const Tensor& b_h,
    const Tensor& b_out, const Tensor& w_h, const Tensor& w_x, const Tensor& w_out, const Tensor& keys,
    const Tensor& values, const Tensor& v, const Tensor& invalid, bool onednn) {
  const int64_t size = hidden.size(1), gates = 3 * size;
  Tensor projected = product(hidden, w_h, b_h, onednn);  // (B, 3H + A)
  Tensor gates_h = cols(projected, 0, gates);
  Tensor query = cols(projected, gates);
  Tensor scores = seq2seq_kernels::scores(keys, query, v);
  Tensor weights = at::softmax(scores.masked_fill(invalid, -std::numeric_limits<double>::infinity()), -1);
  Tensor context = at::bmm(weights.unsqueeze(1), values).squeeze(1);
  Tensor rest = attentional ? at::cat({*attentional, context}, 1) : context;
  Tensor gates_x = add_product(pre, rest, w_x, onednn);  // (B, 3H)
  Tensor rz = cols(gates_h, 0, 2 * size).add_(cols(gates_x, 0, 2 * size)).sigmoid_();
  Tensor n = at::addcmul(cols(gates_x, 2 * size), cols(rz, 0, size), cols(gates_h, 2 * size, gates)).tanh_();
  Tensor new_hidden = at::lerp(n, hidden, cols(rz, size));
  Tensor features = at::cat({new_hidden, context}, 1);
  Tensor out = product(features, w_out, b_out, onednn).tanh_();
  return {new_hidden, out, weights, projected, rz, n, rest, features};
}

// (∂(W_ie y + b_ih), ∂s_{t-1}, ∂h̃_{t-1} (empty without input feeding), ∂[g_h; q], ∂a, ∂v (1, A), ∂c_t)
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> step_backward(
    const Tensor& grad_hidden, const Tensor& grad_out, const Tensor& grad_weights, const Tensor& hidden,
    const Tensor& rz, const Tensor& n, const Tensor& gates_h, const Tensor& out, const Tensor& w_h, const Tensor& w_x,
    const Tensor& w_out, const Tensor& keys, const Tensor& query, const Tensor& weights, const Tensor& values,
    const Tensor& v, Tensor keys_grad, bool feeding, bool onednn) {
  const int64_t size = hidden.size(1);
  Tensor grad_a = at::tanh_backward(grad_out, out);  // (B, H)
  Tensor grad_features = product(grad_a, w_out.t(), std::nullopt, onednn);  // ∂[s_t; c_t]
  Tensor grad_new = cols(grad_features, 0, size).add_(grad_hidden);
  Tensor grad_context = cols(grad_features, size);
  Tensor grad_x = at::empty({rz.size(0), 3 * size}, rz.options());
  Tensor grad_h = at::empty({grad_x.size(0), w_h.size(1)}, grad_x.options());  // (B, 3H + A)
  gate_gradients(grad_new, hidden, rz, n, gates_h, grad_x, cols(grad_h, 0, 3 * size));
  Tensor grad_rest = product(grad_x, w_x.t(), std::nullopt, onednn);
  Tensor grad_attentional = feeding ? cols(grad_rest, 0, size) : at::empty({0}, grad_x.options());
  grad_context = grad_context + cols(grad_rest, grad_rest.size(1) - grad_context.size(1));
  // the attention read's backward (step_attention.read_backward with the kernel)
  Tensor grad_alpha = at::baddbmm(grad_weights.unsqueeze(1), grad_context.unsqueeze(1), values.transpose(1, 2))
                          .squeeze(1);
  Tensor grad_scores = weights * (grad_alpha - (weights * grad_alpha).sum(1, true)) * 2;
  auto [v_rows, query_rows] = seq2seq_kernels::scores_backward(keys, query, v, grad_scores, keys_grad);
  cols(grad_h, 3 * size).copy_(query_rows.mul_(v).mul_(2));
  Tensor grad_previous = add_product(grad_new * cols(rz, size, 2 * size), grad_h, w_h.t(), onednn);
  return {grad_x, grad_previous, grad_attentional, grad_h, grad_a, v_rows.sum(0).unsqueeze(0), grad_context};
}

// The whole teacher-forced loop: step t = 0 … T−1 on pre (T,B,3H) from s_0, h̃_0 (None without input feeding).
// (h̃ (T,B,H), α (T,B,S), and what the backward reads, stacked over steps: the steps' s_{t-1} (T,B,H), [g_h; q]
// (T,B,3H+A), n (T,B,H), the inputs of W_x (T,B,H+D or D) and of W_c (T,B,H+D))
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> loop(
    const Tensor& pre, const Tensor& hidden0, const std::optional<Tensor>& attentional0, const Tensor& b_h,
    const Tensor& b_out, const Tensor& w_h, const Tensor& w_x, const Tensor& w_out, const Tensor& keys,
    const Tensor& values, const Tensor& v, const Tensor& invalid, bool onednn) {
  const int64_t steps = pre.size(0);
  std::vector<Tensor> outs, weights, hiddens, projected, ns, rests, features;
  Tensor hidden = hidden0;
  std::optional<Tensor> attentional = attentional0;
  for (int64_t t = 0; t < steps; ++t) {
    auto [new_hidden, out, alpha, proj, rz, n, rest, feats] =
        step(pre.select(0, t), hidden, attentional, b_h, b_out, w_h, w_x, w_out, keys, values, v, invalid, onednn);
    hiddens.push_back(hidden);
    outs.push_back(out);
    weights.push_back(alpha);
    projected.push_back(proj);  // (σ(r, z) in its first 2H columns: rz is a view of it)
    ns.push_back(n);
    rests.push_back(rest);
    features.push_back(feats);
    hidden = new_hidden;
    if (attentional) attentional = out;
  }
  return {at::stack(outs), at::stack(weights), at::stack(hiddens), at::stack(projected), at::stack(ns),
          at::stack(rests), at::stack(features)};
}

// The loop's backward, step T−1 down to 0: (∂pre (T,B,3H), ∂s_0, ∂h̃_0 (empty without input feeding),
// ∂[g_h; q] (T,B,3H+A), ∂a (T,B,H), ∂v (1,A), ∂c (T,B,D)); the keys' running sum goes into keys_grad
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> loop_backward(
    const Tensor& grad_outs, const Tensor& grad_weights, const Tensor& hiddens, const Tensor& projected,
    const Tensor& ns, const Tensor& outs, const Tensor& weights, const Tensor& w_h, const Tensor& w_x,
    const Tensor& w_out, const Tensor& keys, const Tensor& values, const Tensor& v, Tensor keys_grad, bool feeding,
    bool onednn) {
  const int64_t steps = outs.size(0), size = outs.size(2);
  std::vector<Tensor> grad_pre(steps), grad_hs(steps), grad_as(steps), grad_contexts(steps);
  Tensor grad_hidden = at::zeros_like(outs.select(0, 0));  // ∂s_t from step t + 1
  Tensor grad_attentional;                                  // ∂h̃_t from step t + 1 (input feeding)
  Tensor grad_v = at::zeros({1, v.size(0)}, v.options());
  for (int64_t t = steps - 1; t >= 0; --t) {
    Tensor grad_out = grad_outs.select(0, t);
    if (feeding && grad_attentional.defined()) grad_out = grad_out + grad_attentional;
    const Tensor proj = projected.select(0, t);
    auto [grad_x, grad_previous, grad_att, grad_h, grad_a, grad_energy, grad_context] = step_backward(
        grad_hidden, grad_out, grad_weights.select(0, t), hiddens.select(0, t), cols(proj, 0, 2 * size),
        ns.select(0, t), cols(proj, 0, 3 * size), outs.select(0, t), w_h, w_x, w_out, keys, cols(proj, 3 * size),
        weights.select(0, t), values, v, keys_grad, feeding, onednn);
    grad_pre[t] = grad_x;
    grad_hs[t] = grad_h;
    grad_as[t] = grad_a;
    grad_contexts[t] = grad_context;
    grad_v.add_(grad_energy);
    grad_hidden = grad_previous;
    grad_attentional = grad_att;
  }
  if (!feeding) grad_attentional = at::empty({0}, outs.options());
  return {at::stack(grad_pre), grad_hidden, grad_attentional, at::stack(grad_hs), at::stack(grad_as), grad_v,
          at::stack(grad_contexts)};
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

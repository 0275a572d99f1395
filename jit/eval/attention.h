#pragma once
// Attention for kiln's library steps (Note [Attention without per-shape plans]).
#include <optional>

#include <ATen/ATen.h>

namespace kiln::jit {

// Same result as at::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, scale), without
// cuDNN's per-shape plan builds when a mask is given.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, bool causal,
                     std::optional<double> scale);

}  // namespace kiln::jit

#include "jit/eval/attention.h"

#include <limits>
#include <tuple>

#include <fmt/format.h>

#include "src/support/log.h"

namespace kiln::jit {

// Note [Attention without per-shape plans]
// With an attention mask, LibTorch 2.11 on Hopper hands scaled_dot_product_attention to cuDNN
// first (flash attention takes no mask), and cuDNN builds an execution plan for every new
// (batch, heads, sequence) shape: tens of milliseconds each (kiln-mixed-bench on an H200, a
// stream of 300 encoder calls with varying batch and sequence: about 50 ms a call, eager and
// kiln alike). kiln exists to serve changing shapes, so for masked attention on CUDA it calls the
// memory-efficient kernel itself, which has no per-shape setup, preparing the mask the way the
// SDPA dispatcher does for that kernel: expanded to [B, H, Sq, Sk], last dim padded to a
// multiple of 16 and sliced back (padded before broadcasting, so a mask shared across heads is
// copied once, not once per head). Anything else goes to the dispatcher unchanged.
namespace {

constexpr int64_t kMaskAlignment = 16;

bool efficientAttentionApplies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& mask) {
  const auto dt = q.scalar_type();
  if (!q.is_cuda() || q.dim() != 4 || k.dim() != 4 || v.dim() != 4) return false;
  if (dt != at::kHalf && dt != at::kBFloat16 && dt != at::kFloat) return false;
  if (k.scalar_type() != dt || v.scalar_type() != dt || mask.scalar_type() != dt) return false;
  if (k.device() != q.device() || v.device() != q.device() || mask.device() != q.device())
    return false;
  if (q.size(0) != k.size(0) || q.size(0) != v.size(0) || q.size(1) != k.size(1) ||
      q.size(1) != v.size(1) || k.size(2) != v.size(2) || q.size(3) != k.size(3))
    return false;
  // 16-byte aligned head dims with unit stride; at least one query and key.
  const int64_t align = dt == at::kFloat ? 4 : 8;
  if (q.size(3) % align != 0 || v.size(3) % align != 0) return false;
  if (q.stride(3) != 1 || k.stride(3) != 1 || v.stride(3) != 1) return false;
  if (q.size(2) == 0 || k.size(2) == 0 || q.size(0) == 0 || q.size(1) == 0) return false;
  if (mask.dim() > 4) return false;
  const std::vector<int64_t> want = {q.size(0), q.size(1), q.size(2), k.size(2)};
  return at::is_expandable_to(mask.sizes(), want);
}

at::Tensor alignedMask(const at::Tensor& mask, at::IntArrayRef shape) {
  at::Tensor m = mask.expand(shape);
  if (m.stride(3) == 1 && m.size(3) % kMaskAlignment == 0 && m.stride(2) % kMaskAlignment == 0)
    return m;
  // Keep broadcast dims at size 1 while padding, then broadcast again.
  for (int64_t d = 0; d < 3; ++d)
    if (m.stride(d) == 0 && m.size(d) > 1) m = m.narrow(d, 0, 1);
  const int64_t sk = m.size(3);
  const int64_t pad = (kMaskAlignment - sk % kMaskAlignment) % kMaskAlignment;
  m = at::constant_pad_nd(m, {0, pad}, 0).narrow(3, 0, sk);
  return m.expand(shape);
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, bool causal,
                     std::optional<double> scale) {
  if (mask.has_value() && mask->defined() && !causal && q.is_cuda()) {
    // A boolean mask keeps where true: the additive form the kernel takes (as the dispatcher).
    at::Tensor m = *mask;
    if (m.scalar_type() == at::kBool)
      m = at::where(m, at::zeros({}, q.options()),
                    at::full({}, -std::numeric_limits<double>::infinity(), q.options()));
    if (efficientAttentionApplies(q, k, v, m)) {
      const std::vector<int64_t> shape = {q.size(0), q.size(1), q.size(2), k.size(2)};
      try {
        return std::get<0>(at::_scaled_dot_product_efficient_attention(
            q, k, v, alignedMask(m, shape), /*compute_log_sumexp=*/false, /*dropout_p=*/0.0,
            /*is_causal=*/false, scale));
      } catch (const c10::Error& e) {
        // A layout the kernel rejects (an unaligned view, say): the dispatcher decides.
        logOnce(LogLevel::kInfo, "attention.efficient",
                fmt::format("kiln: memory-efficient attention declined ({}); using "
                            "scaled_dot_product_attention",
                            e.what_without_backtrace()));
      }
    }
  }
  return at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, causal, scale);
}

}  // namespace kiln::jit

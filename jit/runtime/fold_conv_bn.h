#pragma once
// Folding eval-mode batchnorm into the preceding convolution's weights.
//
// Note [Folding batchnorm into convolutions]
// Capture decomposes eval-mode batch_norm into pointwise ops on [C, 1, 1]-reshaped params (Note
// [Eval batch_norm decomposition] in jit/capture/lower.cpp):
//   %y = conv2d(%x, %w[, %b])
//   %m = reshape(%bn.running_mean)    %v = reshape(%bn.running_var)    (each [C] -> [C, 1, 1])
//   %i = rsqrt(add(%v, %eps))
//   %o = add(mul(mul(sub(%y, %m), %i), reshape(%bn.weight)), reshape(%bn.bias))
// A kernel for that recomputes rsqrt and loads four per-channel params per element. Since the
// affine part is per output channel, it folds into the conv:
//   scale  = rsqrt(var + eps) * bn.weight               [C]
//   W'     = W * scale (per output channel: W's dim 0, also for grouped/depthwise convs)
//   shift' = ((b or 0) - mean) * scale + bn.bias        [C, 1, 1]
//   %o     = add(conv2d(%x, W'), shift')
// computed in float32 from the module's tensors and cast to the IR dtypes. The add stays a
// pointwise op, so it fuses with the relu/residual that follows into one kernel.
//
// The match is strict: exactly the op sequence and operand order capture emits (bn.weight and
// bn.bias each optional), every operand of the affine part a [C] param reshaped to [C, 1, 1] (or a
// rank-0 constant for eps), the conv weight (and bias) params, one dtype throughout, and every
// intermediate from the conv output to the last op read only by the next op of the chain (the
// conv is replaced, so another reader of its output would see the folded result). Anything else
// is left as it is, and so is a pattern whose tensors are not plain dense tensors on one device
// (inference tensors carry no version counter: see below).
//
// It runs in Program::build before the passes, not as a pass in src/: it needs the param tensors.
// W' and shift' are new params appended to CapturedGraph::params, named after their sources with
// an '@', which no module attribute name contains ("conv1.weight@bn1.folded",
// "conv1.bias@bn1.folded"). The module's tensors are never written.
//
// Note [Folded params are snapshots]
// Params are bound by reference (Note [Params by reference] in capture.h): a weight updated in
// place after optimize() is seen by the next call. W' and shift' are computed from the sources
// once, so each fold records its sources' version counters and data pointers. Plan::run calls
// FoldedParams::refresh() first: when a source changed (an in-place op bumps the version;
// module.to() or set_data swaps the data pointer), the fold is recomputed into the same W' and
// shift' tensors, which every plan of the program binds, and the new stamps are published only
// then. So a stale fold is never used, and an updated model runs at full speed again at once. The
// check costs two loads per source tensor per call; a refresh (rare) synchronizes the device
// before and after on CUDA, so kernels already queued are not raced and kernels queued by other
// threads on other streams see the new values.
// Not detected: writes that bypass the version counter, i.e. through `tensor.data()` (Python's
// `.data`, a new version counter) or raw pointers, and in-place writes into inference tensors,
// which have no version counter (a module loaded under InferenceMode has only those; it is folded
// all the same, as merged and retyped weights are: Note [Derived params are snapshots]). Such a
// write after the first call leaves W' and shift' as they were; a new data pointer is still seen.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "jit/capture/capture.h"

namespace kiln {
class Session;
}  // namespace kiln

namespace kiln::jit {

class DerivedPool;   // jit/runtime/derived_params.h
class LoadedKernel;  // jit/runtime/kernel_launcher.h

// One conv whose batchnorm was folded into it.
struct ConvBnFold {
  // The module's tensors it was computed from (never written). Undefined when absent.
  at::Tensor convWeight, convBias, mean, var, bnWeight, bnBias;
  double eps = 0;
  // kiln's own tensors, bound as the params `weightName` and `shiftName`.
  std::string weightName, shiftName;
  at::ScalarType dtype = at::kFloat;  // of W' and shift' (the IR dtype of the conv and the chain)
  // W''s layout: channels-last when the program's convs run so (Note [Channels-last convolutions]).
  at::MemoryFormat weightFormat = at::MemoryFormat::Contiguous;
  at::Tensor weight;                  // W': [C_out, C_in / groups, kh, kw]
  at::Tensor shift;                   // shift': [C, 1, 1]
};

// The folds of one Program (Note [Folded params are snapshots]). Thread-safe.
class FoldedParams {
 public:
  // Folds on CUDA use kiln's fold kernel (Note [Fold kernel] in codegen/emit_cuda.h), with
  // Options::foldKernel (KILN_FOLD_KERNEL), when `session`'s kernel cache has it for its target
  // arch (else it compiles in the background for the next build); without a session, an arch or a driver, for dtypes the kernel lacks, before
  // the kernel is cached, or when it fails to compile, ATen computes them. With an arch but no
  // driver, the kernels are compiled into the cache for a GPU process (Note [Fold kernels compiled
  // ahead] in fold_conv_bn.cpp).
  explicit FoldedParams(std::vector<ConvBnFold> folds, const Session* session = nullptr);
  FoldedParams(const FoldedParams&) = delete;
  FoldedParams& operator=(const FoldedParams&) = delete;

  const std::vector<ConvBnFold>& folds() const { return folds_; }
  // Some source changed since its fold was computed. Cheap: no lock, no allocation.
  bool stale() const;
  // Recomputes the stale folds in place (W' and shift' keep their TensorImpls). Returns how many.
  int refresh() const;
  // "conv1.weight@bn1.folded + conv1.bias@bn1.folded, ..." for logs and tests.
  std::string toString() const;
  // How many folds kiln's fold kernel computes (the rest ATen does).
  size_t kernelFolds() const;

 private:
  struct Stamp {  // what a source was when its fold was last computed
    std::atomic<int64_t> version{0};
    std::atomic<const void*> data{nullptr};
  };
  struct Reading {
    int64_t version;
    const void* data;
  };
  bool foldStale(size_t f) const;
  std::vector<Reading> read(size_t f) const;
  void publish(size_t f, const std::vector<Reading>& readings) const;

  // The fold kernel for fold f, or null: ATen computes it.
  LoadedKernel* kernelFor(size_t f) const { return kernels_[f].get(); }

  std::vector<ConvBnFold> folds_;
  std::vector<std::shared_ptr<LoadedKernel>> kernels_;  // per fold; shared by folds alike
  std::vector<const at::Tensor*> sources_;  // the defined sources of every fold, fold by fold
  std::vector<size_t> firstSource_;    // fold f's sources: [firstSource_[f], firstSource_[f+1])
  mutable std::vector<Stamp> stamps_;  // index as sources_
  mutable std::mutex refreshMutex_;
};

// Writes `src` into `dst`'s TensorImpl, which every plan of the program binds (Note [Folded params
// are snapshots]); set_data only when the source moved to another device or changed size.
void overwriteSnapshot(const at::Tensor& dst, const at::Tensor& src);

// Rewrites `captured.graph` in place (Note [Folding batchnorm into convolutions]), appends the new
// params to captured.params/paramNames and removes the dead batchnorm ops. Returns the folds
// made, or null when there were none. W' is stored in `weightFormat`. With `pool`, the same folds
// of the same module tensors made for another Program of the module are taken from it (Note
// [Derived params shared by families] in derived_params.h).
std::shared_ptr<const FoldedParams> foldConvBatchNorm(
    CapturedGraph& captured, at::MemoryFormat weightFormat = at::MemoryFormat::Contiguous,
    const Session* session = nullptr, DerivedPool* pool = nullptr);

}  // namespace kiln::jit

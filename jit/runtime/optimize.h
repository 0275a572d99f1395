#pragma once
// kiln's front door:
//   auto fast = kiln::jit::optimize(module);   // torch::jit::Module, or a torch::nn::Module holder
//   auto out  = fast.forward({x, mask});        // same results as module.forward, faster
//
// Note [Guards and plans]
// forward() computes a guard signature of its inputs: per input dtype, device, rank, and every
// static dim's size; dynamic dims (Options::dynamicDims) contribute their power-of-two bucket. A
// signature seen before runs its plan: no capture, no compile. A new signature captures (traces the
// module on these inputs), partitions, compiles every fusion group in parallel, and caches the plan
// (at most Options::maxPlans per module, least recently used evicted). Kernels take the exact sizes
// at run time, so every shape inside a bucket shares one plan. Many threads may call forward() on
// one OptimizedModule at once; a plan is built once even when several threads miss together.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>

#include "jit/capture/capture.h"

namespace torch::jit {
struct Module;
}

namespace kiln {
class Session;
}

namespace kiln::jit {

struct Options {
  // Input dims that vary between calls (batch, sequence): symbolic in the IR, bucketed in guards.
  std::vector<DynamicDim> dynamicDims;
  // Names of the forward() inputs, in order; used in errors and by dynamicDims.
  std::vector<std::string> inputNames;
  // The session (options, caches, tuner) to use; null: Session::defaultSession().
  Session* session = nullptr;
};

struct ModuleStats {
  uint64_t calls = 0;
  uint64_t planHits = 0;
  uint64_t planMisses = 0;  // captures + compiles
  uint64_t plansAlive = 0;
  uint64_t plansEvicted = 0;
  uint64_t kernelsCompiled = 0;  // by NVRTC in this process
  uint64_t kernelsCached = 0;    // loaded from the kernel cache (memory or disk)
  uint64_t kernelLaunches = 0;
  uint64_t groupFallbacks = 0;  // fusion groups run through ATen
  double compileSeconds = 0;
  std::string toString() const;
};

class OptimizedModule {
 public:
  // Same calling convention as the module's forward: tensors in, IValue out (a tensor, or a
  // tuple/list of tensors). UserError for non-tensor inputs, naming the input.
  c10::IValue forward(const std::vector<c10::IValue>& inputs) const;
  // The partition of the most recently used plan: groups, kernels, eager leftovers.
  std::string explain() const;
  ModuleStats stats() const;

  struct Impl;
  explicit OptimizedModule(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

OptimizedModule optimize(const torch::jit::Module& module, const Options& options = {});

// C++ frontend modules: `forward` calls the module (see capture.h's ForwardFn).
OptimizedModule optimize(std::shared_ptr<torch::nn::Module> module, ForwardFn forward,
                         const Options& options = {});

// Convenience for holders whose forward takes one tensor: optimize(torch::nn::Linear(...)).
template <typename Holder>
  requires requires(Holder h, at::Tensor t) {
    h.ptr();
    h->forward(t);
  }
OptimizedModule optimize(Holder holder, const Options& options = {}) {
  ForwardFn fn = [holder](const std::vector<c10::IValue>& in) mutable -> c10::IValue {
    return holder->forward(in.at(0).toTensor());
  };
  return optimize(std::static_pointer_cast<torch::nn::Module>(holder.ptr()), std::move(fn),
                  options);
}

}  // namespace kiln::jit

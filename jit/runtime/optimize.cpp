#include "jit/runtime/optimize.h"

#include <bit>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>

#include <fmt/format.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/nn/module.h>

#include "jit/runtime/plan.h"
#include "jit/runtime/session.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

std::string ModuleStats::toString() const {
  return fmt::format(
      "calls {}, plan hits {}, misses {}, plans alive {} (evicted {}), kernels compiled {} and "
      "cached {} in {:.2f} s, launches {}, groups run eagerly {}",
      calls, planHits, planMisses, plansAlive, plansEvicted, kernelsCompiled, kernelsCached,
      compileSeconds,
      kernelLaunches, groupFallbacks);
}

struct OptimizedModule::Impl {
  std::optional<torch::jit::Module> scripted;
  std::shared_ptr<torch::nn::Module> nnModule;
  ForwardFn nnForward;
  Options options;
  Session* session = nullptr;

  struct Entry {
    std::shared_ptr<Plan> plan;
    std::list<std::string>::iterator lru;
  };
  mutable std::shared_mutex mutex;  // guards plans, lru, lastPlan
  mutable std::mutex buildMutex;    // one capture+compile at a time per module
  mutable std::map<std::string, Entry> plans;
  mutable std::list<std::string> lru;  // front = most recently used
  mutable std::shared_ptr<Plan> lastPlan;
  mutable std::atomic<uint64_t> calls{0}, hits{0}, misses{0}, evicted{0}, kernelsCompiled{0},
      kernelsCached{0};
  mutable std::atomic<uint64_t> compileMicros{0};
  // Launch/fallback counters of evicted plans, so stats() stays monotonic.
  mutable std::atomic<uint64_t> retiredLaunches{0}, retiredFallbacks{0};

  std::vector<bool> dynamicMask(size_t input, int64_t rank) const {
    std::vector<bool> mask(static_cast<size_t>(rank), false);
    std::string name = input < options.inputNames.size() ? options.inputNames[input]
                                                         : fmt::format("input{}", input);
    for (const DynamicDim& d : options.dynamicDims) {
      if (d.input != name) continue;
      int64_t dim = d.dim < 0 ? d.dim + rank : d.dim;
      if (dim >= 0 && dim < rank) mask[static_cast<size_t>(dim)] = true;
    }
    return mask;
  }

  // Note [Guards and plans] in optimize.h.
  std::string signature(const std::vector<at::Tensor>& inputs) const {
    std::string sig;
    sig.reserve(inputs.size() * 48);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const at::Tensor& t = inputs[i];
      std::vector<bool> dyn = dynamicMask(i, t.dim());
      fmt::format_to(std::back_inserter(sig), "{}:{}:{}:{}", static_cast<int>(t.scalar_type()),
                     static_cast<int>(t.device().type()), t.device().index(), t.dim());
      for (int64_t d = 0; d < t.dim(); ++d) {
        int64_t size = t.size(d);
        if (dyn[static_cast<size_t>(d)])
          fmt::format_to(std::back_inserter(sig), ",b{}", bucketEdge(size));
        else
          fmt::format_to(std::back_inserter(sig), ",{}", size);
      }
      sig.push_back(';');
    }
    return sig;
  }

  CapturedGraph captureFor(const std::vector<c10::IValue>& inputs,
                           const std::vector<at::Tensor>& tensors) const {
    CaptureOptions copt;
    // A dynamic dim of size 0 or 1 is its own bucket (bucketEdge) and is captured as a static dim:
    // sizes 0 and 1 change broadcasting, so they cannot stand for a symbol.
    for (const DynamicDim& d : options.dynamicDims) {
      bool small = false;
      for (size_t i = 0; i < tensors.size(); ++i) {
        std::string name = i < options.inputNames.size() ? options.inputNames[i]
                                                         : fmt::format("input{}", i);
        int64_t rank = tensors[i].dim();
        int64_t dim = d.dim < 0 ? d.dim + rank : d.dim;
        if (name == d.input && dim >= 0 && dim < rank && tensors[i].size(dim) < 2) small = true;
      }
      if (!small) copt.dynamicDims.push_back(d);
    }
    copt.inputNames = options.inputNames;
    if (scripted) {
      torch::jit::Module m = *scripted;  // a handle to the same module object
      return capture(m, inputs, copt);
    }
    return capture(nnModule, nnForward, inputs, copt);
  }

  std::shared_ptr<Plan> planFor(const std::vector<c10::IValue>& ivalues,
                                const std::vector<at::Tensor>& tensors) const {
    std::string sig = signature(tensors);
    {
      std::shared_lock<std::shared_mutex> lock(mutex);
      auto it = plans.find(sig);
      if (it != plans.end() && it->second.lru == lru.begin()) {
        hits.fetch_add(1, std::memory_order_relaxed);
        return it->second.plan;
      }
    }
    {
      std::unique_lock<std::shared_mutex> lock(mutex);
      auto it = plans.find(sig);
      if (it != plans.end()) {
        lru.splice(lru.begin(), lru, it->second.lru);
        lastPlan = it->second.plan;
        hits.fetch_add(1, std::memory_order_relaxed);
        return it->second.plan;
      }
    }
    std::lock_guard<std::mutex> build(buildMutex);
    {
      std::shared_lock<std::shared_mutex> lock(mutex);
      auto it = plans.find(sig);
      if (it != plans.end()) {
        hits.fetch_add(1, std::memory_order_relaxed);
        return it->second.plan;
      }
    }
    misses.fetch_add(1, std::memory_order_relaxed);
    std::optional<std::string> arch = session->targetArch();
    std::shared_ptr<Plan> plan = Plan::build(captureFor(ivalues, tensors), arch.value_or(""), *session);
    kernelsCompiled.fetch_add(static_cast<uint64_t>(plan->buildInfo().kernelsCompiled));
    kernelsCached.fetch_add(static_cast<uint64_t>(plan->buildInfo().kernelsCached));
    compileMicros.fetch_add(static_cast<uint64_t>(plan->buildInfo().compileSeconds * 1e6));
    KILN_LOG_INFO("kiln: new plan for {}: {} kernels compiled, {} groups without a kernel", sig,
                  plan->buildInfo().kernelsCompiled, plan->buildInfo().groupsWithoutKernel);
    std::unique_lock<std::shared_mutex> lock(mutex);
    lru.push_front(sig);
    plans[sig] = Entry{plan, lru.begin()};
    lastPlan = plan;
    while (static_cast<int>(plans.size()) > session->options().maxPlans) {
      auto victim = plans.find(lru.back());
      retiredLaunches += victim->second.plan->stats().kernelLaunches.load();
      retiredFallbacks += victim->second.plan->stats().groupFallbacks.load();
      plans.erase(victim);
      lru.pop_back();
      evicted.fetch_add(1, std::memory_order_relaxed);
    }
    return plan;
  }

  c10::IValue eagerForward(const std::vector<c10::IValue>& inputs) const {
    if (scripted) {
      torch::jit::Module m = *scripted;
      return m.forward(inputs);
    }
    return nnForward(inputs);
  }
};

c10::IValue OptimizedModule::forward(const std::vector<c10::IValue>& inputs) const {
  Impl& impl = *impl_;
  impl.calls.fetch_add(1, std::memory_order_relaxed);
  if (impl.session->options().disable) return impl.eagerForward(inputs);
  std::vector<at::Tensor> tensors;
  tensors.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const c10::IValue& v = inputs[i];
    std::string name = i < impl.options.inputNames.size() ? impl.options.inputNames[i]
                                                          : fmt::format("input{}", i);
    KILN_USER_CHECK(v.isTensor(), "input {} (\"{}\"): expected a tensor, got {}", i, name,
                    v.tagKind());
    KILN_USER_CHECK(v.toTensor().defined(), "input {} (\"{}\"): expected a tensor, got an "
                    "undefined tensor", i, name);
    tensors.push_back(v.toTensor());
  }
  std::shared_ptr<Plan> plan = impl.planFor(inputs, tensors);
  std::vector<at::Tensor> outs = plan->run(tensors);
  const OutputStructure& structure = plan->captured().outputs;
  switch (structure.kind) {
    case OutputStructure::Kind::kTensor:
      KILN_CHECK(outs.size() == 1, "single-tensor module produced {} outputs", outs.size());
      return outs.front();
    case OutputStructure::Kind::kTuple: {
      std::vector<c10::IValue> elems(outs.begin(), outs.end());
      return c10::ivalue::Tuple::create(std::move(elems));
    }
    case OutputStructure::Kind::kList:
      return c10::List<at::Tensor>(outs);
  }
  KILN_CHECK(false, "unknown output structure");
}

std::string OptimizedModule::explain() const {
  std::shared_ptr<Plan> plan;
  {
    std::shared_lock<std::shared_mutex> lock(impl_->mutex);
    plan = impl_->lastPlan;
  }
  std::string head = stats().toString() + "\n";
  if (plan == nullptr) return head + "no plan yet: call forward() first\n";
  return head + plan->explain();
}

ModuleStats OptimizedModule::stats() const {
  const Impl& impl = *impl_;
  ModuleStats s;
  s.calls = impl.calls.load();
  s.planHits = impl.hits.load();
  s.planMisses = impl.misses.load();
  s.plansEvicted = impl.evicted.load();
  s.kernelsCompiled = impl.kernelsCompiled.load();
  s.kernelsCached = impl.kernelsCached.load();
  s.compileSeconds = static_cast<double>(impl.compileMicros.load()) / 1e6;
  s.kernelLaunches = impl.retiredLaunches.load();
  s.groupFallbacks = impl.retiredFallbacks.load();
  std::shared_lock<std::shared_mutex> lock(impl.mutex);
  s.plansAlive = impl.plans.size();
  for (const auto& [sig, e] : impl.plans) {
    s.kernelLaunches += e.plan->stats().kernelLaunches.load();
    s.groupFallbacks += e.plan->stats().groupFallbacks.load();
  }
  return s;
}

namespace {
Session* resolveSession(const Options& options) {
  return options.session != nullptr ? options.session : &Session::defaultSession();
}
}  // namespace

OptimizedModule optimize(const torch::jit::Module& module, const Options& options) {
  auto impl = std::make_shared<OptimizedModule::Impl>();
  impl->scripted = module;
  impl->options = options;
  impl->session = resolveSession(options);
  return OptimizedModule(std::move(impl));
}

OptimizedModule optimize(std::shared_ptr<torch::nn::Module> module, ForwardFn forward,
                         const Options& options) {
  KILN_USER_CHECK(module != nullptr, "optimize: module is null");
  KILN_USER_CHECK(forward != nullptr, "optimize: forward function is empty");
  auto impl = std::make_shared<OptimizedModule::Impl>();
  impl->nnModule = std::move(module);
  impl->nnForward = std::move(forward);
  impl->options = options;
  impl->session = resolveSession(options);
  return OptimizedModule(std::move(impl));
}

}  // namespace kiln::jit

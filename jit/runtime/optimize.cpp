#include "jit/runtime/optimize.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/core/GradMode.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/SmallVector.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/nn/module.h>
#include <nlohmann/json.hpp>

#include "jit/runtime/buckets.h"
#include "jit/runtime/capture_cache.h"
#include "jit/runtime/conv_layout.h"
#include "jit/runtime/derived_params.h"
#include "jit/runtime/library_prewarm.h"
#include "jit/runtime/plan.h"
#include "jit/runtime/profiler_range.h"
#include "jit/runtime/session.h"
#include "jit/tuner/tuner.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

std::string ModuleStats::toString() const {
  return fmt::format(
      "calls {}, plan hits {}, misses {}, captures {} (+{} from the capture cache), plans alive {} "
      "in {} families (evicted {}), "
      "kernels compiled {} ({} in the background) and cached {} in {:.2f} s, plans served by "
      "generic kernels {}, swaps {}, background jobs pending {}, launches {}, groups run "
      "eagerly {}, CUDA graphs captured {} and replayed {}, tuning jobs {} ({} variants tried, {} "
      "kernels replaced), eager fallbacks {} ({} calls run by the module), {} calls run by the "
      "module because it was faster, {:.1f} MiB of weights held in another form",
      calls, planHits, planMisses, captures, capturesCached, plansAlive, familiesAlive,
      plansEvicted, kernelsCompiled, backgroundCompiles, kernelsCached, compileSeconds,
      plansServedGeneric, swaps, backgroundPending, kernelLaunches, groupFallbacks, graphCaptures,
      graphReplays, tuningJobs, variantsTried, kernelsTuned, eagerFallbacks, eagerCalls,
      moduleFasterCalls, static_cast<double>(derivedParamBytes) / (1 << 20));
}

namespace {

using Json = nlohmann::ordered_json;

// Pretty-printed; bytes that are not UTF-8 (paths, messages) become U+FFFD instead of throwing.
std::string dumpJson(const Json& j) {
  return j.dump(2, ' ', false, Json::error_handler_t::replace);
}

Json statsJson(const ModuleStats& s) {
  return {{"calls", s.calls},
          {"planHits", s.planHits},
          {"planMisses", s.planMisses},
          {"captures", s.captures},
          {"capturesCached", s.capturesCached},
          {"plansAlive", s.plansAlive},
          {"familiesAlive", s.familiesAlive},
          {"plansEvicted", s.plansEvicted},
          {"kernelsCompiled", s.kernelsCompiled},
          {"backgroundCompiles", s.backgroundCompiles},
          {"kernelsCached", s.kernelsCached},
          {"plansServedGeneric", s.plansServedGeneric},
          {"swaps", s.swaps},
          {"backgroundPending", s.backgroundPending},
          {"kernelLaunches", s.kernelLaunches},
          {"groupFallbacks", s.groupFallbacks},
          {"graphCaptures", s.graphCaptures},
          {"graphReplays", s.graphReplays},
          {"eagerFallbacks", s.eagerFallbacks},
          {"eagerCalls", s.eagerCalls},
          {"moduleFasterCalls", s.moduleFasterCalls},
          {"derivedParamBytes", s.derivedParamBytes},
          {"compileSeconds", s.compileSeconds},
          {"tuningJobs", s.tuningJobs},
          {"variantsTried", s.variantsTried},
          {"kernelsTuned", s.kernelsTuned},
          {"tuning", s.tuning}};
}

}  // namespace

std::string ModuleStats::toJson() const {
  return dumpJson(statsJson(*this));
}

namespace {

// What background jobs of a module share with it (Note [Background compiles] in session.h): they
// hold this, never the module.
struct ModuleShared {
  std::atomic<bool> alive{true};  // false once the module is gone: jobs stop compiling
  std::atomic<uint64_t> kernelsCompiled{0}, kernelsCached{0}, backgroundCompiles{0}, swaps{0},
      pending{0}, compileMicros{0}, tuningJobs{0}, variantsTried{0}, kernelsTuned{0};
  mutable std::mutex tuningMutex;
  std::vector<std::string> tuningLines;  // the tuner's per-kernel outcomes, for explain()
  void record(const TuneReport& r) {
    tuningJobs.fetch_add(1);
    variantsTried.fetch_add(static_cast<uint64_t>(r.variantsTried));
    kernelsTuned.fetch_add(static_cast<uint64_t>(r.replaced));
    std::lock_guard<std::mutex> lock(tuningMutex);
    tuningLines.insert(tuningLines.end(), r.lines.begin(), r.lines.end());
  }
  void record(const CompileReport& r, bool background) {
    kernelsCompiled.fetch_add(static_cast<uint64_t>(r.compiled));
    kernelsCached.fetch_add(static_cast<uint64_t>(r.cached));
    if (background) backgroundCompiles.fetch_add(static_cast<uint64_t>(r.compiled));
    compileMicros.fetch_add(static_cast<uint64_t>(r.seconds * 1e6));
  }
};

// Plans of one guard family share its Program (Note [Guards and plans]).
struct Family {
  std::shared_ptr<const Program> program;
  std::vector<std::vector<int64_t>> symbolEdges;  // bucket policy per symbol id (empty: pow2)
  // Ready generic kernels, or null. Written once (foreground or background), read by later misses.
  std::atomic<std::shared_ptr<const KernelSet>> generic;
  std::atomic<bool> genericScheduled{false};
  int plans = 0;  // plans of this family in the module's map (under the module's mutex)
};

}  // namespace

// A copy of a call's inputs for a background job (the caller owns its tensors): cloned on the
// caller's stream; wait() holds the job's thread until the copies are made.
struct InputCopies {
  std::vector<at::Tensor> tensors;
  std::shared_ptr<at::cuda::CUDAEvent> made;  // for CUDA inputs

  explicit InputCopies(const std::vector<at::Tensor>& inputs) {
    for (const at::Tensor& t : inputs) tensors.push_back(t.clone());
    if (!tensors.empty() && tensors.front().is_cuda()) {
      made = std::make_shared<at::cuda::CUDAEvent>();
      made->record(at::cuda::getCurrentCUDAStream(tensors.front().device().index()));
    }
  }
  void wait() const {
    if (made != nullptr) made->synchronize();
  }
};

struct OptimizedModule::Impl {
  std::optional<torch::jit::Module> scripted;
  std::shared_ptr<torch::nn::Module> nnModule;
  ForwardFn nnForward;
  Options options;
  Session* session = nullptr;
  // Note [Precision]: the dtype float32 is retyped to, and explain()'s line about it.
  std::optional<ir::DType> precisionTo;
  std::string precisionLine;
  std::optional<QuantSettings> quantize;       // fp8/int8: Note [Quantized linears]
  std::vector<std::vector<int64_t>> dimEdges;  // bucket policy per options.dynamicDims entry
  std::shared_ptr<ModuleShared> shared = std::make_shared<ModuleShared>();
  // Note [Derived params shared by families]
  std::shared_ptr<DerivedPool> derived = std::make_shared<DerivedPool>();

  struct Entry {
    std::shared_ptr<Plan> plan;
    std::shared_ptr<Family> family;
    std::list<std::string>::iterator lru;
  };
  mutable std::shared_mutex mutex;  // guards plans, families, lru, lastPlan
  mutable std::mutex buildMutex;    // one capture+compile at a time per module
  mutable std::map<std::string, Entry> plans;
  mutable std::map<std::string, std::shared_ptr<Family>> families;
  mutable std::list<std::string> lru;  // front = most recently used
  mutable std::shared_ptr<Plan> lastPlan;
  mutable std::atomic<uint64_t> calls{0}, hits{0}, misses{0}, captures{0}, capturesCached{0},
      evicted{0}, servedGeneric{0};
  // Launch/fallback/swap counters of evicted plans, so stats() stays monotonic.
  mutable std::atomic<uint64_t> retiredLaunches{0}, retiredFallbacks{0}, retiredCaptures{0},
      retiredReplays{0};
  // Note [Never worse than eager]: families and signatures that run the module itself, with why
  // (under `mutex`), and the calls served so.
  mutable std::map<std::string, std::string> eagerFamilies, eagerSignatures;
  mutable std::atomic<uint64_t> eagerCalls{0};
  // Note [Plan against the module]: calls the module served because it was faster.
  mutable std::atomic<uint64_t> moduleFasterCalls{0};

  // Note [Call fast path]
  // Every call used to format its guard signature (a string, one fmt call per dim) and look it
  // up in `plans` under the shared lock. A service mostly repeats the sizes of its last call, so
  // the last hit is remembered with the exact dtypes, devices and sizes it was for: a call whose
  // inputs match all of them has the same signature, so it takes that plan without making the
  // string. `tablesEpoch` counts every change to plans, lru, eagerSignatures and eagerFamilies
  // (under `mutex`); an entry made under another epoch is not used, so an evicted plan, or a
  // signature that has since given up, never serves from here. Strides are not compared: the
  // signature does not have them either.
  struct FastEntry {
    struct Input {
      at::ScalarType dtype;
      at::Device device;
      c10::SmallVector<int64_t, 6> sizes;
    };
    c10::SmallVector<Input, 4> inputs;
    std::string sig;
    std::shared_ptr<Plan> plan;
    uint64_t epoch = 0;
  };
  mutable std::atomic<uint64_t> tablesEpoch{0};
  mutable std::atomic<std::shared_ptr<const FastEntry>> fast;

  std::shared_ptr<const FastEntry> fastEntryFor(const std::vector<at::Tensor>& tensors) const {
    std::shared_ptr<const FastEntry> e = fast.load(std::memory_order_acquire);
    if (e == nullptr || e->epoch != tablesEpoch.load(std::memory_order_acquire) ||
        e->inputs.size() != tensors.size())
      return nullptr;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const FastEntry::Input& in = e->inputs[i];
      const at::Tensor& t = tensors[i];
      if (t.scalar_type() != in.dtype || t.device() != in.device ||
          t.sizes() != c10::IntArrayRef(in.sizes))
        return nullptr;
    }
    hits.fetch_add(1, std::memory_order_relaxed);
    return e;
  }

  // Remembers `plan` for these inputs; `epoch` was read before the lookup that found it.
  void rememberFast(const std::vector<at::Tensor>& tensors, const std::string& sig,
                    std::shared_ptr<Plan> plan, uint64_t epoch) const {
    auto e = std::make_shared<FastEntry>();
    for (const at::Tensor& t : tensors)
      e->inputs.push_back({t.scalar_type(), t.device(),
                           c10::SmallVector<int64_t, 6>(t.sizes().begin(), t.sizes().end())});
    e->sig = sig;
    e->plan = std::move(plan);
    e->epoch = epoch;
    fast.store(std::move(e), std::memory_order_release);
  }

  // Records that `key` (a family or a signature) runs eagerly; logs the first time.
  void giveUp(std::map<std::string, std::string>& table, const std::string& key,
              const std::string& what, const std::string& why, bool log = true) const {
    {
      std::unique_lock<std::shared_mutex> lock(mutex);
      if (!table.emplace(key, why).second) return;
      tablesEpoch.fetch_add(1, std::memory_order_acq_rel);
      if (!log) return;
    }
    KILN_LOG_WARN("kiln: {} {} runs eagerly (as the module itself): {}", what, key, why);
  }
  // The reason `sig` runs eagerly, or null (a shared lock).
  std::optional<std::string> eagerReason(const std::string& sig) const {
    std::shared_lock<std::shared_mutex> lock(mutex);
    auto it = eagerSignatures.find(sig);
    if (it == eagerSignatures.end()) return std::nullopt;
    return it->second;
  }

  ~Impl() { shared->alive.store(false); }

  std::string inputName(size_t i) const {
    return i < options.inputNames.size() ? options.inputNames[i] : fmt::format("input{}", i);
  }

  // Per dim of input `input`: the index into options.dynamicDims of the dim's DynamicDim, or -1.
  c10::SmallVector<int, 8> dynamicIndex(size_t input, int64_t rank) const {
    c10::SmallVector<int, 8> index(static_cast<size_t>(rank), -1);
    // Every call computes a signature: no string made for a named input.
    std::string unnamed;
    if (input >= options.inputNames.size()) unnamed = inputName(input);
    const std::string& name =
        input < options.inputNames.size() ? options.inputNames[input] : unnamed;
    for (size_t k = 0; k < options.dynamicDims.size(); ++k) {
      const DynamicDim& d = options.dynamicDims[k];
      if (d.input != name) continue;
      int64_t dim = d.dim < 0 ? d.dim + rank : d.dim;
      if (dim >= 0 && dim < rank && index[static_cast<size_t>(dim)] < 0)
        index[static_cast<size_t>(dim)] = static_cast<int>(k);
    }
    return index;
  }

  // Note [Guards and plans] in optimize.h. The guard signature of these inputs, or with `family`
  // their guard family's (the buckets of dims >= 2 left out). Every call computes the first;
  // the second only a miss needs.
  std::string signature(const std::vector<at::Tensor>& inputs, bool family = false) const {
    std::string key;
    key.reserve(inputs.size() * 48);
    auto out = std::back_inserter(key);
    for (size_t i = 0; i < inputs.size(); ++i) {
      const at::Tensor& t = inputs[i];
      const c10::SmallVector<int, 8> dyn = dynamicIndex(i, t.dim());
      fmt::format_to(out, "{}:{}:{}:{}", static_cast<int>(t.scalar_type()),
                     static_cast<int>(t.device().type()), t.device().index(), t.dim());
      for (int64_t d = 0; d < t.dim(); ++d) {
        int64_t size = t.size(d);
        int k = dyn[static_cast<size_t>(d)];
        if (k < 0) {
          fmt::format_to(out, ",{}", size);
        } else if (size < 2) {  // captured static: its own family
          fmt::format_to(out, ",={}", size);
        } else if (family) {
          key += ",d";
        } else {
          int64_t edge = bucketEdge(size, dimEdges[static_cast<size_t>(k)]);
          if (edge == kOverflowBucket)
            key += ",b+";
          else
            fmt::format_to(out, ",b{}", edge);
        }
      }
      key.push_back(';');
    }
    return key;
  }

  // Indices of the dynamic dims that capture makes symbolic for these inputs: a dynamic dim of
  // size 0 or 1 is its own bucket and is captured as a static dim (sizes 0 and 1 change
  // broadcasting, so they cannot stand for a symbol).
  std::vector<size_t> symbolicDims(const std::vector<at::Tensor>& tensors) const {
    std::vector<size_t> out;
    for (size_t k = 0; k < options.dynamicDims.size(); ++k) {
      const DynamicDim& d = options.dynamicDims[k];
      bool small = false;
      for (size_t i = 0; i < tensors.size(); ++i) {
        int64_t rank = tensors[i].dim();
        int64_t dim = d.dim < 0 ? d.dim + rank : d.dim;
        if (inputName(i) == d.input && dim >= 0 && dim < rank && tensors[i].size(dim) < 2)
          small = true;
      }
      if (!small) out.push_back(k);
    }
    return out;
  }

  // Note [Tracing records one path] in capture.h: a scripted forward with control flow would be
  // captured along the example's path only. Such a module runs eagerly (Note [Never worse than
  // eager]) unless every branch condition and trip count is a constant.
  void checkControlFlow() const {
    if (!scripted) return;
    if (std::optional<std::string> why = controlFlowIn(*scripted)) throw Unsupported(*why);
  }

  // TorchScript modules go through the capture cache (Note [Capture cache]).
  CapturedGraph captureFor(const std::vector<c10::IValue>& inputs,
                           const std::vector<at::Tensor>& tensors, const std::string& family,
                           bool* fromCache) const {
    CaptureOptions copt;
    for (size_t k : symbolicDims(tensors)) copt.dynamicDims.push_back(options.dynamicDims[k]);
    copt.inputNames = options.inputNames;
    copt.retypeTo = options.retypeTo;
    if (!copt.retypeTo && precisionTo) {  // Note [Precision]
      copt.retypeTo = precisionTo;
      copt.castAtBoundary = true;
    }
    *fromCache = false;
    // Note [Probe sizes for capture]: capture at the probe sizes, else at the call's own. The
    // probe is made only when tracing: a capture from the cache needs none, and on a GPU its
    // first ATen ops cost tens of milliseconds of kernel loading (Note [First call breakdown]).
    auto captureAt = [&](auto&& doCapture) {
      const std::vector<c10::IValue> probe = probeInputs(tensors, copt.dynamicDims);
      if (!probe.empty()) {
        try {
          return doCapture(probe);
        } catch (const UserError&) {
          throw;
        } catch (const std::exception& e) {
          KILN_LOG_DEBUG("kiln: capture at probe sizes failed ({}); capturing at the call's sizes",
                         e.what());
        }
      }
      // A copy: a module that writes into its inputs must not write the caller's tensors during
      // the capture too (Note [Modules that write their inputs] in capture.cpp).
      std::vector<c10::IValue> copies;
      for (const c10::IValue& v : inputs)
        copies.push_back(v.isTensor() ? c10::IValue(v.toTensor().clone()) : v);
      return doCapture(copies);
    };
    if (scripted) {
      torch::jit::Module m = *scripted;  // a handle to the same module object
      return cachedCapture(
          session->kernelCache(), m, family, copt,
          [&] {
            return captureAt(
                [&](const std::vector<c10::IValue>& in) { return capture(m, in, copt); });
          },
          fromCache);
    }
    return captureAt(
        [&](const std::vector<c10::IValue>& in) { return capture(nnModule, nnForward, in, copt); });
  }

  // Note [Probe sizes for capture]
  // Capture recovers symbolic sizes from concrete ones, so a first call whose dynamic sizes
  // coincide (batch 8 and seq 8) or equal a constant of the model (batch 8 and 8 query heads per
  // KV head) can be read the wrong way. The first call's inputs are therefore resized along their
  // dynamic dims to small distinct primes (3, 5, 7, ...) by repeating or dropping rows, which
  // keeps every value one the module has seen (token ids, mask bits), and captured there. Primes
  // equal to a static size of an input are skipped (batch 3 beside a static dim of 3 coincide
  // too). If the module rejects those sizes, capture uses the call's own. Empty when the probe
  // would be the call itself (no dynamic dims, or sizes already the primes): capture then runs
  // once, not twice.
  std::vector<c10::IValue> probeInputs(const std::vector<at::Tensor>& tensors,
                                       const std::vector<DynamicDim>& dims) const {
    static constexpr int64_t kPrimes[] = {3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47};
    std::map<std::string, int64_t> bySymbol;
    std::vector<at::Tensor> out = tensors;
    // The static sizes of the inputs: a probe size equal to one (batch 3 beside a static dim of
    // 3) would let capture read a size computed from that dim as the symbol.
    // (dynamicIndex reads options.dynamicDims, which `dims` is drawn from; the dims it adds are of
    // size 0 or 1, never a prime.)
    std::set<int64_t> staticSizes;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const c10::SmallVector<int, 8> dyn = dynamicIndex(i, tensors[i].dim());
      for (int64_t k = 0; k < tensors[i].dim(); ++k)
        if (dyn[static_cast<size_t>(k)] < 0) staticSizes.insert(tensors[i].size(k));
    }
    size_t next = 0;
    bool resized = false;
    for (const DynamicDim& d : dims) {
      int64_t target = 0;
      if (!d.symbol.empty() && bySymbol.count(d.symbol)) {
        target = bySymbol.at(d.symbol);
      } else {
        while (next < std::size(kPrimes) && staticSizes.count(kPrimes[next])) ++next;
        if (next >= std::size(kPrimes)) return {};
        target = kPrimes[next++];
        if (!d.symbol.empty()) bySymbol[d.symbol] = target;
      }
      for (size_t i = 0; i < out.size(); ++i) {
        if (inputName(i) != d.input) continue;
        at::Tensor& t = out[i];
        const int64_t dim = d.dim < 0 ? d.dim + t.dim() : d.dim;
        if (dim < 0 || dim >= t.dim() || t.size(dim) == target) continue;
        at::Tensor rows =
            at::arange(target, at::TensorOptions().dtype(at::kLong)).remainder(t.size(dim));
        t = t.index_select(dim, rows.to(t.device()));
        resized = true;
      }
    }
    if (!resized) return {};
    return std::vector<c10::IValue>(out.begin(), out.end());
  }

  // The bucket policy of each graph symbol, assigned the way capture assigns symbol ids: one per
  // symbolic DynamicDim in order, dims naming the same symbol sharing one.
  std::vector<std::vector<int64_t>> symbolEdgesFor(const std::vector<at::Tensor>& tensors,
                                                   int numSymbols) const {
    std::vector<std::vector<int64_t>> edges;
    std::map<std::string, size_t> byName;
    for (size_t k : symbolicDims(tensors)) {
      const DynamicDim& d = options.dynamicDims[k];
      if (!d.symbol.empty() && byName.count(d.symbol)) continue;
      if (!d.symbol.empty()) byName[d.symbol] = edges.size();
      edges.push_back(dimEdges[k]);
    }
    if (static_cast<int>(edges.size()) != numSymbols)
      logOnce(LogLevel::kDebug, "optimize.symbols",
              fmt::format("kiln: graph has {} symbols for {} dynamic dims; extra symbols use "
                          "power-of-two buckets",
                          numSymbols, edges.size()));
    edges.resize(static_cast<size_t>(numSymbols));
    return edges;
  }

  // The family's generic kernels when ready (in memory, or all in the kernel cache), else null.
  std::shared_ptr<const KernelSet> readyGeneric(Family& fam, const std::string& arch) const {
    if (auto g = fam.generic.load()) return g;
    auto set = emitKernels(fam.program->graph(), fam.program->groups(),
                           genericBucket(fam.symbolEdges.size()), arch, tuningRecords(*session));
    loadCachedKernels(*set, arch, *session);
    if (set->pending()) return nullptr;
    fam.generic.store(set);
    return set;
  }

  // Queues `job` on the session's background arena, counted in ModuleStats::backgroundPending
  // until it ends (Note [Background compiles] in session.h: jobs hold only shared state).
  void inBackground(std::function<void()> job) const {
    std::shared_ptr<ModuleShared> sh = shared;
    sh->pending.fetch_add(1);
    session->runInBackground([sh, job = std::move(job)] {
      struct Done {
        ModuleShared& s;
        ~Done() { s.pending.fetch_sub(1); }
      } done{*sh};
      job();
    });
  }

  void scheduleGeneric(const std::shared_ptr<Family>& fam, const std::string& arch) const {
    // A family without symbols has one bucket: its kernels are already the generic ones.
    if (!session->options().backgroundCompile || arch.empty() || fam->symbolEdges.empty() ||
        fam->generic.load() != nullptr)
      return;
    if (fam->genericScheduled.exchange(true)) return;
    std::shared_ptr<ModuleShared> sh = shared;
    Session* sess = session;
    inBackground([sh, fam, arch, sess] {
      if (!sh->alive.load()) return;
      auto set = emitKernels(fam->program->graph(), fam->program->groups(),
                             genericBucket(fam->symbolEdges.size()), arch, tuningRecords(*sess));
      loadCachedKernels(*set, arch, *sess);
      CompileReport r = compileKernels(*set, arch, *sess, /*background=*/true, &sh->alive);
      sh->record(r, /*background=*/true);
      if (r.cancelled) {
        fam->genericScheduled.store(false);
        return;
      }
      fam->generic.store(std::move(set));
    });
  }

  void scheduleSpecialization(std::shared_ptr<Plan> plan, std::shared_ptr<KernelSet> spec,
                              std::shared_ptr<const KernelSet> generic,
                              const std::string& arch) const {
    std::shared_ptr<ModuleShared> sh = shared;
    Session* sess = session;
    inBackground([sh, plan, spec, generic, arch, sess] {
      if (!sh->alive.load()) return;
      CompileReport r = compileKernels(*spec, arch, *sess, /*background=*/true, &sh->alive);
      sh->record(r, /*background=*/true);
      if (r.cancelled) return;
      // A kernel that failed to specialize keeps its generic version rather than going eager.
      for (size_t k = 0; k < spec->kernels.size(); ++k)
        if (spec->kernels[k].state == KernelState::kFailed &&
            generic->kernels[k].state == KernelState::kReady)
          spec->kernels[k] = generic->kernels[k];
      plan->swapKernels(spec);
      sh->swaps.fetch_add(1);
    });
  }

  // A plan for `bucket` over the family's program (Note [Guards and plans]).
  std::shared_ptr<Plan> buildPlan(const std::shared_ptr<Family>& fam,
                                  const codegen::BucketInfo& bucket, const std::string& arch,
                                  PlanBuildInfo info,
                                  std::chrono::steady_clock::time_point k0) const {
    // Note [First call breakdown]: the kernels' share of the build, up to Plan::create.
    auto kernelsDone = [&info, k0] {
      info.kernelsSeconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - k0).count();
      return info;
    };
    std::shared_ptr<KernelSet> spec = emitKernels(fam->program->graph(), fam->program->groups(),
                                                  bucket, arch, tuningRecords(*session));
    std::shared_ptr<const KernelSet> generic = spec->generic ? fam->generic.load() : nullptr;
    if (spec->generic && generic != nullptr) {  // overflow bucket: the generic kernels themselves
      return Plan::create(fam->program, generic, kernelsDone(), *session);
    }
    const int cachedNow = loadCachedKernels(*spec, arch, *session);
    const bool allCached = !spec->pending();
    info.kernelsCached = cachedNow;
    shared->kernelsCached.fetch_add(static_cast<uint64_t>(cachedNow));
    if (!allCached && !spec->generic && session->options().backgroundCompile) {
      generic = readyGeneric(*fam, arch);
      if (generic != nullptr && generic->covers(*spec)) {
        info.servedGeneric = true;
        servedGeneric.fetch_add(1);
        auto plan = Plan::create(fam->program, generic, kernelsDone(), *session);
        scheduleSpecialization(plan, spec, generic, arch);
        KILN_LOG_INFO("kiln: bucket {} served by generic kernels, specializing in the background",
                      spec->bucket);
        return plan;
      }
    }
    if (!allCached) {
      CompileReport r = compileKernels(*spec, arch, *session, /*background=*/false);
      shared->record(r, /*background=*/false);
      info.kernelsCompiled = r.compiled;
      info.kernelsCached += r.cached;
      info.compileSeconds = r.seconds;
    }
    for (const KernelStep& k : spec->kernels)
      if (k.kernel == nullptr) ++info.groupsWithoutKernel;
    if (spec->generic && !spec->pending())
      fam->generic.store(spec);
    else
      scheduleGeneric(fam, arch);
    return Plan::create(fam->program, spec, kernelsDone(), *session);
  }

  // The plan for `sig` (these inputs' signature), built on a miss; null when the signature runs
  // eagerly (Note [Never worse than eager]; eagerReason(sig) says why).
  std::shared_ptr<Plan> planFor(const std::vector<c10::IValue>& ivalues,
                                const std::vector<at::Tensor>& tensors,
                                const std::string& sig) const {
    return planFor(ivalues, tensors, tensors, sig);
  }

  // Same, capturing a new guard family on `examples` (of the family of `tensors`, whose sizes the
  // plan is for; Note [Preparing plans ahead]).
  std::shared_ptr<Plan> planFor(const std::vector<c10::IValue>& examples,
                                const std::vector<at::Tensor>& exampleTensors,
                                const std::vector<at::Tensor>& tensors,
                                const std::string& sig) const {
    {
      std::shared_lock<std::shared_mutex> lock(mutex);
      // A plan that failed while running stays in `plans` but its signature runs eagerly.
      if (!eagerSignatures.empty() && eagerSignatures.count(sig)) return nullptr;
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
        tablesEpoch.fetch_add(1, std::memory_order_acq_rel);  // the lru changes
        lru.splice(lru.begin(), lru, it->second.lru);
        lastPlan = it->second.plan;
        hits.fetch_add(1, std::memory_order_relaxed);
        return it->second.plan;
      }
    }
    std::lock_guard<std::mutex> build(buildMutex);
    std::shared_ptr<Family> fam;
    const std::string familyKey = signature(tensors, /*family=*/true);
    {
      std::shared_lock<std::shared_mutex> lock(mutex);
      auto it = plans.find(sig);
      if (it != plans.end()) {
        hits.fetch_add(1, std::memory_order_relaxed);
        return it->second.plan;
      }
      if (auto f = families.find(familyKey); f != families.end()) fam = f->second;
    }
    misses.fetch_add(1, std::memory_order_relaxed);
    const auto b0 = std::chrono::steady_clock::now();
    PlanBuildInfo info;
    if (fam == nullptr) {
      {
        std::shared_lock<std::shared_mutex> lock(mutex);
        if (auto it = eagerFamilies.find(familyKey); it != eagerFamilies.end()) {
          lock.unlock();
          giveUp(eagerSignatures, sig, "signature", it->second, /*log=*/false);
          return nullptr;
        }
      }
      auto c0 = std::chrono::steady_clock::now();
      try {
        checkControlFlow();
        bool fromCache = false;
        CapturedGraph captured = captureFor(examples, exampleTensors, familyKey, &fromCache);
        (fromCache ? capturesCached : captures).fetch_add(1, std::memory_order_relaxed);
        info.captureFromCache = fromCache;
        const auto p0 = std::chrono::steady_clock::now();
        info.captureSeconds = std::chrono::duration<double>(p0 - c0).count();
        // Note [Library prewarm]: the libraries' one-time loads overlap the passes and first steps.
        for (const at::Tensor& t : exampleTensors)
          if (t.is_cuda() && session->options().libraryPrewarm) {
            prewarmLibraries(
                *session, *captured.graph, t.device(),
                chooseConvLayout(captured, session->options().convLayout).channelsLast);
            break;
          }
        fam = std::make_shared<Family>();
        fam->program =
            Program::build(std::move(captured), *session, quantize ? &*quantize : nullptr, derived);
        fam->symbolEdges = symbolEdgesFor(tensors, fam->program->graph().numSymbols());
        info.passesSeconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
      } catch (const UserError&) {
        throw;
      } catch (const std::exception& e) {
        if (session->options().strict) throw;
        giveUp(eagerFamilies, familyKey, "guard family", e.what());
        giveUp(eagerSignatures, sig, "signature", e.what(), /*log=*/false);
        return nullptr;
      }
    }
    // The bucket of each symbol for this call; binding also checks the inputs against the graph.
    std::vector<int64_t> symbols = bindSymbols(fam->program->graph(), tensors);
    std::vector<int64_t> edges(symbols.size());
    for (size_t s = 0; s < symbols.size(); ++s)
      edges[s] = bucketEdge(symbols[s], fam->symbolEdges[s]);
    std::optional<std::string> arch = session->targetArch();
    std::shared_ptr<Plan> plan;
    try {
      plan = buildPlan(fam, bucketInfoForEdges(edges), arch.value_or(""), info,
                       std::chrono::steady_clock::now());
    } catch (const UserError&) {
      throw;
    } catch (const std::exception& e) {
      if (session->options().strict) throw;
      giveUp(eagerSignatures, sig, "signature", e.what());
      return nullptr;
    }
    KILN_LOG_INFO(
        "kiln: new plan for {} in {:.1f} ms ({} {:.1f} ms, passes {:.1f} ms, kernels {:.1f} ms): "
        "{} kernels compiled, {} cached, {}",
        sig,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - b0).count(),
        info.captureSeconds > 0 ? "capture" : "no capture", info.captureSeconds * 1e3,
        info.passesSeconds * 1e3, plan->buildInfo().kernelsSeconds * 1e3,
        plan->buildInfo().kernelsCompiled, plan->buildInfo().kernelsCached,
        plan->buildInfo().servedGeneric ? "served by generic kernels for now" : "bucket kernels");
    std::unique_lock<std::shared_mutex> lock(mutex);
    tablesEpoch.fetch_add(1, std::memory_order_acq_rel);
    lru.push_front(sig);
    plans[sig] = Entry{plan, fam, lru.begin()};
    families[familyKey] = fam;
    ++fam->plans;
    lastPlan = plan;
    while (static_cast<int>(plans.size()) > session->options().maxPlans) {
      auto victim = plans.find(lru.back());
      retiredLaunches += victim->second.plan->stats().kernelLaunches.load();
      retiredFallbacks += victim->second.plan->stats().groupFallbacks.load();
      if (const GraphReplay* gr = victim->second.plan->graphs()) {
        retiredCaptures += gr->captures();
        retiredReplays += gr->replays();
      }
      std::shared_ptr<Family> vf = victim->second.family;
      plans.erase(victim);
      lru.pop_back();
      if (--vf->plans == 0) {
        for (auto f = families.begin(); f != families.end(); ++f)
          if (f->second == vf) {
            families.erase(f);
            break;
          }
      }
      evicted.fetch_add(1, std::memory_order_relaxed);
    }
    return plan;
  }

  // Note [Preparing plans ahead]: the family's generic kernels, compiled now unless ready.
  void prepareGeneric(Family& fam, const std::string& arch, PreparedPlan& out) const {
    if (arch.empty() || fam.symbolEdges.empty() || fam.generic.load() != nullptr) return;
    auto set = emitKernels(fam.program->graph(), fam.program->groups(),
                           genericBucket(fam.symbolEdges.size()), arch, tuningRecords(*session));
    const int cached = loadCachedKernels(*set, arch, *session);
    shared->kernelsCached.fetch_add(static_cast<uint64_t>(cached));
    out.kernelsCached += cached;
    if (set->pending()) {
      CompileReport r = compileKernels(*set, arch, *session, /*background=*/false);
      shared->record(r, /*background=*/false);
      out.kernelsCompiled += r.compiled;
      out.kernelsCached += r.cached;
    }
    fam.generic.store(set);
  }

  // Note [Background tuning] in tuner.h: the first call past the threshold starts the plan's one
  // tuning job.
  void maybeTune(const std::shared_ptr<Plan>& plan, const std::vector<at::Tensor>& inputs) const {
    const kiln::Options& o = session->options();
    if (o.tune == TuneMode::kOff || plan->stats().calls.load(std::memory_order_relaxed) <
                                        static_cast<uint64_t>(o.tuneThreshold))
      return;
    std::shared_ptr<const KernelSet> set = plan->kernels();
    if (set->generic || set->pending()) return;  // not before its own kernels are in
    const std::string arch = session->targetArch().value_or("");
    if (arch.empty() || !plan->claimTuning()) return;
    std::shared_ptr<ModuleShared> sh = shared;
    Session* sess = session;
    const TuneOptions budget = tuneOptionsFor(o);
    // Note [Swaps checked on the plan]: the job times the plan on a copy of this call's inputs.
    const InputCopies copies(inputs);
    auto job = [sh, plan, sess, arch, budget, copies] {
      std::unique_ptr<TuningLab> lab = sess->makeTuningLab();
      if (lab == nullptr || !sh->alive.load()) return;
      std::optional<c10::cuda::CUDAGuard> guard;
      if (copies.made != nullptr) guard.emplace(copies.tensors.front().device());
      copies.wait();
      c10::NoGradGuard noGrad;
      TuneReport r = tunePlan(*plan, *lab, *sess, arch, budget, &sh->alive, &copies.tensors);
      sh->record(r);
      KILN_LOG_INFO("kiln: tuned plan ({} kernels, {} variants, {} replaced)", r.kernels,
                    r.variantsTried, r.replaced);
    };
    if (o.tune == TuneMode::kEager)
      job();
    else
      inBackground(job);
  }

  // Note [Plan against the module] in against_module.h: once per settled CUDA plan.
  void maybeCompare(const std::shared_ptr<Plan>& plan,
                    const std::vector<at::Tensor>& inputs) const {
    const kiln::Options& o = session->options();
    if (!o.compareModule || plan->compared() ||
        plan->stats().calls.load(std::memory_order_relaxed) < static_cast<uint64_t>(kCompareAfter))
      return;
    if (inputs.empty()) return;
    for (const at::Tensor& t : inputs)
      if (!t.is_cuda() || t.device() != inputs.front().device()) return;
    if (!plan->settled() || !plan->claimComparison()) return;
    cache::KernelCache* records = tuningRecords(*session);
    const std::optional<std::string> arch = session->targetArch();
    // Keyed by the graph setting too: a decision measured without graphs says nothing of a plan
    // that replays them.
    const std::string bucket = plan->kernels()->bucket + (o.cudaGraphs ? " graphs" : "");
    // Copies: the caller owns its tensors. The job waits for them on the host.
    const at::Device device = inputs.front().device();
    const InputCopies copies(inputs);
    std::function<c10::IValue(const std::vector<c10::IValue>&)> module;
    if (scripted)
      module = [m = *scripted](const std::vector<c10::IValue>& in) mutable {
        return m.forward(in);
      };
    else
      module = nnForward;
    std::shared_ptr<ModuleShared> sh = shared;
    auto job = [sh, plan, copies, module, device, records, arch, bucket] {
      if (!sh->alive.load()) return;
      c10::cuda::CUDAGuard guard(device);
      c10::NoGradGuard noGrad;
      // A decision of an earlier process (Note [Plan against the module]): no timing. Read here,
      // off the caller's path.
      if (records != nullptr && arch) {
        try {
          if (std::optional<ModuleComparison> stored =
                  storedComparison(*records, plan->program()->graph(), bucket, *arch)) {
            plan->setComparison(std::move(*stored));
            return;
          }
        } catch (const std::exception& e) {
          KILN_LOG_WARN("kiln: reading a stored plan-against-module decision failed: {}", e.what());
        }
      }
      copies.wait();
      const std::vector<c10::IValue> ivalues(copies.tensors.begin(), copies.tensors.end());
      ModuleComparison c;
      try {
        c = compareAgainstModule([&] { plan->run(copies.tensors); }, [&] { module(ivalues); },
                                 device);
      } catch (const std::exception& e) {
        c.reason = fmt::format("timing failed: {}", e.what());
      }
      if (c.moduleFaster)
        KILN_LOG_WARN(
            "kiln: the module is faster than kiln's plan for these sizes, so it runs "
            "them: {}",
            c.line());
      else
        KILN_LOG_INFO("kiln: plan against the module: {}", c.line());
      if (records != nullptr && arch && c.decided) {
        try {
          storeComparison(*records, plan->program()->graph(), bucket, *arch, c);
        } catch (const std::exception& e) {
          KILN_LOG_WARN("kiln: storing the plan-against-module decision failed: {}", e.what());
        }
      }
      plan->setComparison(std::move(c));
    };
    if (o.tune == TuneMode::kEager)
      job();
    else
      inBackground(job);
  }

  c10::IValue eagerForward(const std::vector<c10::IValue>& inputs) const {
    if (scripted) {
      torch::jit::Module m = *scripted;
      return m.forward(inputs);
    }
    return nnForward(inputs);
  }

  // Note [Never worse than eager]: the module serves the call. Its own failure is the caller's
  // (bad input): a UserError that says so.
  c10::IValue fallbackForward(const std::vector<c10::IValue>& inputs, const std::string& why,
                              bool faster = false) const {
    (faster ? moduleFasterCalls : eagerCalls).fetch_add(1, std::memory_order_relaxed);
    try {
      return eagerForward(inputs);
    } catch (const c10::Error& e) {
      throw UserError(fmt::format("the module failed on these inputs (kiln ran it eagerly: {}): {}",
                                  why, e.what_without_backtrace()));
    } catch (const std::exception& e) {  // the TorchScript interpreter's own errors
      throw UserError(fmt::format("the module failed on these inputs (kiln ran it eagerly: {}): {}",
                                  why, e.what()));
    }
  }
};

namespace {

std::vector<at::Tensor> inputTensors(const OptimizedModule::Impl& impl,
                                     const std::vector<c10::IValue>& inputs) {
  std::vector<at::Tensor> tensors;
  tensors.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const c10::IValue& v = inputs[i];
    KILN_USER_CHECK(v.isTensor(), "input {} (\"{}\"): expected a tensor, got {}", i,
                    impl.inputName(i), v.tagKind());
    KILN_USER_CHECK(v.toTensor().defined(),
                    "input {} (\"{}\"): expected a tensor, got an "
                    "undefined tensor",
                    i, impl.inputName(i));
    tensors.push_back(v.toTensor());
  }
  return tensors;
}

}  // namespace

c10::IValue OptimizedModule::forward(const std::vector<c10::IValue>& inputs) const {
  const ProfilerRange range("kiln::forward");  // Note [Profiler ranges]
  Impl& impl = *impl_;
  impl.calls.fetch_add(1, std::memory_order_relaxed);
  if (impl.session->options().disable) return impl.eagerForward(inputs);
  std::vector<at::Tensor> tensors = inputTensors(impl, inputs);
  // Note [Call fast path]: the last call's plan when these are its sizes, with no signature made.
  std::shared_ptr<const Impl::FastEntry> fast = impl.fastEntryFor(tensors);
  std::string made;
  std::shared_ptr<Plan> plan;
  if (fast != nullptr) {
    plan = fast->plan;
  } else {
    const uint64_t epoch = impl.tablesEpoch.load(std::memory_order_acquire);
    made = impl.signature(tensors);
    plan = impl.planFor(inputs, tensors, made);
    if (plan != nullptr) impl.rememberFast(tensors, made, plan, epoch);
  }
  const std::string& sig = fast != nullptr ? fast->sig : made;
  if (plan == nullptr) return impl.fallbackForward(inputs, impl.eagerReason(sig).value_or("?"));
  if (plan->runsModule())
    return impl.fallbackForward(inputs, "the module is faster for these sizes", /*faster=*/true);
  std::vector<at::Tensor> outs;
  try {
    outs = plan->run(tensors);
  } catch (const AssumptionViolated& e) {  // this call only
    if (impl.session->options().strict) throw;
    logOnce(LogLevel::kInfo, "optimize.assumption",
            fmt::format("kiln: a call ran eagerly: {}", e.what()));
    return impl.fallbackForward(inputs, e.what());
  } catch (const UserError&) {
    throw;
  } catch (const std::exception& e) {
    if (impl.session->options().strict) throw;
    impl.giveUp(impl.eagerSignatures, sig, "signature",
                fmt::format("its plan failed: {}", e.what()));
    return impl.fallbackForward(inputs, e.what());
  }
  impl.maybeTune(plan, tensors);
  impl.maybeCompare(plan, tensors);
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

PreparedPlan OptimizedModule::prepare(const std::vector<c10::IValue>& examples,
                                      const std::vector<std::vector<int64_t>>& shapes) const {
  Impl& impl = *impl_;
  KILN_USER_CHECK(!impl.session->options().disable,
                  "prepare: kiln is disabled (KILN_DISABLE), so there is no plan to build");
  const std::vector<at::Tensor> exampleTensors = inputTensors(impl, examples);
  KILN_USER_CHECK(shapes.size() == exampleTensors.size(), "prepare: {} shapes for {} inputs",
                  shapes.size(), exampleTensors.size());
  // Stride-0 views of one element: the signature and the symbols need sizes only.
  std::vector<at::Tensor> shaped;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const at::Tensor& ex = exampleTensors[i];
    KILN_USER_CHECK(static_cast<int64_t>(shapes[i].size()) == ex.dim(),
                    "prepare: input {} (\"{}\"): shape [{}] has rank {}, its example has rank {}",
                    i, impl.inputName(i), fmt::join(shapes[i], ", "), shapes[i].size(), ex.dim());
    for (int64_t size : shapes[i])
      KILN_USER_CHECK(size >= 0, "prepare: input {} (\"{}\"): negative size in [{}]", i,
                      impl.inputName(i), fmt::join(shapes[i], ", "));
    shaped.push_back(at::empty({}, ex.options()).expand(shapes[i]));
  }
  const std::string familyKey = impl.signature(shaped, /*family=*/true);
  KILN_USER_CHECK(familyKey == impl.signature(exampleTensors, /*family=*/true),
                  "prepare: the shapes are not in the examples' guard family (static sizes, and "
                  "dynamic sizes 0 and 1, must agree): {} vs {}",
                  familyKey, impl.signature(exampleTensors, /*family=*/true));
  const std::string sig = impl.signature(shaped);
  PreparedPlan out;
  out.plan = impl.planFor(examples, exampleTensors, shaped, sig);
  if (out.plan == nullptr) {
    out.eagerReason = impl.eagerReason(sig).value_or("?");
    return out;
  }
  out.kernelsCompiled = out.plan->buildInfo().kernelsCompiled;
  out.kernelsCached = out.plan->buildInfo().kernelsCached;
  std::shared_ptr<Family> fam;
  {
    std::shared_lock<std::shared_mutex> lock(impl.mutex);
    if (auto it = impl.families.find(familyKey); it != impl.families.end()) fam = it->second;
  }
  if (fam != nullptr) {
    std::lock_guard<std::mutex> build(impl.buildMutex);
    impl.prepareGeneric(*fam, impl.session->targetArch().value_or(""), out);
  }
  return out;
}

PlanProfile OptimizedModule::profile(const std::vector<c10::IValue>& inputs, int reps) const {
  Impl& impl = *impl_;
  KILN_USER_CHECK(!impl.session->options().disable,
                  "profile: kiln is disabled (KILN_DISABLE), so there is no plan to profile");
  KILN_USER_CHECK(reps >= 1, "profile: reps must be at least 1, got {}", reps);
  std::vector<at::Tensor> tensors = inputTensors(impl, inputs);
  const std::string sig = impl.signature(tensors);
  std::shared_ptr<Plan> plan = impl.planFor(inputs, tensors, sig);
  if (plan == nullptr)
    throw UserError(fmt::format("profile: these inputs run eagerly, so there is no plan: {}",
                                impl.eagerReason(sig).value_or("?")));
  return profilePlan(*plan, tensors, reps);
}

namespace {

// What explain() and explainJson() report, read once under the module's lock.
struct ExplainState {
  struct PlanLine {
    std::string signature;
    std::shared_ptr<const KernelSet> kernels;
    bool servedGeneric = false;
    uint64_t swaps = 0;
    uint64_t calls = 0;
    // Where a plan that started on generic kernels stands, or null.
    const char* background() const {
      if (!servedGeneric) return nullptr;
      return swaps > 0 ? "swapped in from the background" : "specializing in the background";
    }
  };
  // Note [Never worse than eager]: `kind` is "guard family" or "signature".
  struct EagerLine {
    std::string kind, key, why;
  };
  ModuleStats stats;
  std::vector<PlanLine> plans;   // most recently used first
  std::vector<EagerLine> eager;  // families, then signatures not listed as a family
  std::shared_ptr<Plan> plan;    // the most recently used
};

ExplainState explainState(const OptimizedModule::Impl& impl, ModuleStats stats) {
  ExplainState st;
  st.stats = std::move(stats);
  std::shared_lock<std::shared_mutex> lock(impl.mutex);
  st.plan = impl.lastPlan;
  for (const std::string& sig : impl.lru) {
    const Plan& p = *impl.plans.at(sig).plan;
    st.plans.push_back(
        {sig, p.kernels(), p.buildInfo().servedGeneric, p.swaps(), p.stats().calls.load()});
  }
  for (const auto& [key, why] : impl.eagerFamilies) st.eager.push_back({"guard family", key, why});
  for (const auto& [key, why] : impl.eagerSignatures)
    if (!impl.eagerFamilies.count(key)) st.eager.push_back({"signature", key, why});
  return st;
}

}  // namespace

std::string OptimizedModule::explain() const {
  const ExplainState st = explainState(*impl_, stats());
  std::string head = st.stats.toString() + "\n";
  head += fmt::format("precision: {}\n", impl_->precisionLine);
  if (st.plan != nullptr)
    if (const DerivedParams* r = st.plan->program()->retypedParams())
      head += fmt::format("  {} params converted ({:.1f} MiB)\n", r->size(),
                          static_cast<double>(r->bytes()) / (1 << 20));
  if (!st.plans.empty()) head += "plans (most recent first):\n";
  for (const ExplainState::PlanLine& p : st.plans) {
    std::string state = p.kernels->generic ? "generic kernels" : "kernels for " + p.kernels->bucket;
    if (const char* background = p.background()) state += fmt::format(" ({})", background);
    head += fmt::format("  {} -> {}, {} calls\n", p.signature, state, p.calls);
  }
  if (!st.stats.tuning.empty()) head += "tuning:\n";
  for (const std::string& line : st.stats.tuning) head += "  " + line + "\n";
  if (!st.eager.empty())
    head += "runs eagerly (as the module itself; Note [Never worse than eager]):\n";
  for (const ExplainState::EagerLine& e : st.eager)
    head += fmt::format("  {} {}: {}\n", e.kind, e.key, e.why);
  if (st.plan == nullptr) return head + "no plan yet: call forward() first\n";
  return head + st.plan->explain();
}

std::string OptimizedModule::explainJson() const {
  const ExplainState st = explainState(*impl_, stats());
  Json plans = Json::array();
  for (const ExplainState::PlanLine& p : st.plans) {
    const char* background = p.background();
    plans.push_back({{"signature", p.signature},
                     {"generic", p.kernels->generic},
                     {"bucket", p.kernels->bucket},
                     {"background", background ? Json(background) : Json(nullptr)},
                     {"calls", p.calls}});
  }
  Json eager = Json::array();
  for (const ExplainState::EagerLine& e : st.eager)
    eager.push_back({{"kind", e.kind}, {"key", e.key}, {"reason", e.why}});
  const DerivedParams* retyped = st.plan ? st.plan->program()->retypedParams() : nullptr;
  Json out = {{"stats", statsJson(st.stats)},
              {"precision",
               {{"line", impl_->precisionLine},
                {"paramsConverted", retyped ? retyped->size() : 0},
                {"bytesConverted", retyped ? retyped->bytes() : 0}}},
              {"plans", std::move(plans)},
              {"eagerFallbacks", std::move(eager)},
              {"plan", st.plan ? Json::parse(st.plan->explainJson()) : Json(nullptr)}};
  return dumpJson(out);
}

ModuleStats OptimizedModule::stats() const {
  const Impl& impl = *impl_;
  const ModuleShared& sh = *impl.shared;
  ModuleStats s;
  s.calls = impl.calls.load();
  s.planHits = impl.hits.load();
  s.planMisses = impl.misses.load();
  s.captures = impl.captures.load();
  s.capturesCached = impl.capturesCached.load();
  s.plansEvicted = impl.evicted.load();
  s.kernelsCompiled = sh.kernelsCompiled.load();
  s.backgroundCompiles = sh.backgroundCompiles.load();
  s.kernelsCached = sh.kernelsCached.load();
  s.plansServedGeneric = impl.servedGeneric.load();
  s.swaps = sh.swaps.load();
  s.backgroundPending = sh.pending.load();
  s.compileSeconds = static_cast<double>(sh.compileMicros.load()) / 1e6;
  s.tuningJobs = sh.tuningJobs.load();
  s.variantsTried = sh.variantsTried.load();
  s.kernelsTuned = sh.kernelsTuned.load();
  {
    std::lock_guard<std::mutex> tuningLock(sh.tuningMutex);
    s.tuning = sh.tuningLines;
  }
  s.eagerCalls = impl.eagerCalls.load();
  s.moduleFasterCalls = impl.moduleFasterCalls.load();
  s.kernelLaunches = impl.retiredLaunches.load();
  s.groupFallbacks = impl.retiredFallbacks.load();
  s.graphCaptures = impl.retiredCaptures.load();
  s.graphReplays = impl.retiredReplays.load();
  std::shared_lock<std::shared_mutex> lock(impl.mutex);
  s.plansAlive = impl.plans.size();
  s.eagerFallbacks = impl.eagerSignatures.size();  // a family's failure marks its signature too
  s.familiesAlive = impl.families.size();
  std::set<const void*> derived;  // one tensor may be bound by several families' programs
  for (const auto& [key, fam] : impl.families)
    for (const at::Tensor& t : fam->program->derivedTensors())
      if (derived.insert(t.const_data_ptr()).second) s.derivedParamBytes += t.nbytes();
  for (const auto& [sig, e] : impl.plans) {
    s.kernelLaunches += e.plan->stats().kernelLaunches.load();
    s.groupFallbacks += e.plan->stats().groupFallbacks.load();
    if (const GraphReplay* gr = e.plan->graphs()) {
      s.graphCaptures += gr->captures();
      s.graphReplays += gr->replays();
    }
  }
  return s;
}

namespace {
Session* resolveSession(const Options& options) {
  return options.session != nullptr ? options.session : &Session::defaultSession();
}

// Bucket edges per options.dynamicDims entry; UserError for a policy naming no dynamic dim, bad
// edges, or two policies for one symbol that disagree.
std::vector<std::vector<int64_t>> resolveBucketPolicies(const Options& options) {
  const auto& dims = options.dynamicDims;
  std::vector<std::vector<int64_t>> edges(dims.size());
  std::vector<bool> set(dims.size(), false);
  for (const BucketPolicy& p : options.buckets) {
    std::string who = fmt::format("bucket policy for input \"{}\" dim {}", p.input, p.dim);
    validateBucketEdges(who, p.edges);
    KILN_USER_CHECK(!p.edges.empty(), "{}: no edges (leave the policy out for powers of two)", who);
    auto it = std::find_if(dims.begin(), dims.end(), [&](const DynamicDim& d) {
      return d.input == p.input && d.dim == p.dim;
    });
    if (it == dims.end()) {
      std::vector<std::string> names;
      for (const DynamicDim& d : dims) names.push_back(fmt::format("{}:{}", d.input, d.dim));
      throw UserError(fmt::format("{}: no such dynamic dim; dynamic dims are [{}]", who,
                                  fmt::join(names, ", ")));
    }
    const size_t k = static_cast<size_t>(it - dims.begin());
    for (size_t j = 0; j < dims.size(); ++j) {
      bool same = j == k || (!dims[k].symbol.empty() && dims[j].symbol == dims[k].symbol);
      if (!same) continue;
      KILN_USER_CHECK(!set[j] || edges[j] == p.edges,
                      "{}: dims sharing symbol \"{}\" have different bucket policies", who,
                      dims[k].symbol);
      edges[j] = p.edges;
      set[j] = true;
    }
  }
  return edges;
}
// Note [Precision]: what float32 becomes for a module with these params and buffers.
void resolvePrecision(OptimizedModule::Impl& impl, const std::vector<at::Tensor>& tensors) {
  const Precision want = impl.options.precision.value_or(impl.session->options().precision);
  if (want == Precision::kModule) {
    impl.precisionLine = "module (the module's own dtypes)";
    return;
  }
  const bool eightBit = want == Precision::kFp8 || want == Precision::kInt8;
  std::string quantLine;
  if (eightBit) {
    const kiln::Options& o = impl.session->options();
    impl.quantize = QuantSettings{want == Precision::kFp8 ? QuantFormat::kFp8 : QuantFormat::kInt8,
                                  o.quantCalibrationCalls, o.quantMaxError, o.quantEmulate};
    quantLine = fmt::format(
        "; linears with a weight param run {} GEMMs, input scales calibrated on {} calls, kept "
        "in 16 bits above error {} (Note [Quantized linears])",
        toString(want), o.quantCalibrationCalls, o.quantMaxError);
  }
  if (impl.options.retypeTo) {
    impl.precisionLine =
        eightBit ? fmt::format("{}: the plans are typed {} ahead of time{}", toString(want),
                               ir::toString(*impl.options.retypeTo), quantLine)
                 : fmt::format("{} not applied: the plans are typed {} ahead of time",
                               toString(want), ir::toString(*impl.options.retypeTo));
    return;
  }
  for (const at::Tensor& t : tensors)
    if (t.defined() && at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kFloat) {
      impl.precisionLine =
          eightBit ? fmt::format("{}: activations in the module's own dtypes ({} tensors){}",
                                 toString(want), c10::toString(t.scalar_type()), quantLine)
                   : fmt::format(
                         "{} not applied: the module has {} tensors, so it runs in its own "
                         "dtypes (its float32 upcasts are deliberate)",
                         toString(want), c10::toString(t.scalar_type()));
      KILN_LOG_INFO("kiln: precision {}", impl.precisionLine);
      return;
    }
  impl.precisionTo = want == Precision::kBFloat16 ? ir::DType::kBFloat16 : ir::DType::kFloat16;
  impl.precisionLine = fmt::format(
      "{}: float32 runs in {} (params converted once; float32 inputs cast at entry, float32 "
      "outputs cast back; Note [Precision]){}",
      toString(want), ir::toString(*impl.precisionTo), quantLine);
}

}  // namespace

OptimizedModule optimize(const torch::jit::Module& module, const Options& options) {
  auto impl = std::make_shared<OptimizedModule::Impl>();
  impl->scripted = module;
  impl->options = options;
  impl->session = resolveSession(options);
  impl->dimEdges = resolveBucketPolicies(options);
  std::vector<at::Tensor> tensors;
  for (const at::Tensor& t : module.parameters()) tensors.push_back(t);
  for (const at::Tensor& t : module.buffers()) tensors.push_back(t);
  resolvePrecision(*impl, tensors);
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
  impl->dimEdges = resolveBucketPolicies(options);
  std::vector<at::Tensor> tensors = impl->nnModule->parameters();
  for (const at::Tensor& t : impl->nnModule->buffers()) tensors.push_back(t);
  resolvePrecision(*impl, tensors);
  return OptimizedModule(std::move(impl));
}

}  // namespace kiln::jit

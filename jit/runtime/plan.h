#pragma once
// A Plan runs one captured, partitioned graph: generated kernels for fusion groups and ATen for
// everything else (jit/eval). It is built once per guard signature and then shared, read-only, by
// every thread that calls forward() with matching inputs.
//
// Note [Programs and kernel sets]
// A Plan is two parts:
//   Program    the captured graph after passes, its partition and the step bookkeeping
//              (program.h). Shared by every bucket of one guard family (same dtypes, devices,
//              ranks, static sizes): a new bucket needs new kernels, not a new trace.
//   KernelSet  one kernel per fusion group, emitted for one shape bucket (Note [Buckets] in
//              buckets.h) or for none (the generic set) by the kernel-build service
//              (kernel_build.h). A Plan swaps its set atomically when a specialized one is ready.
//
// Note [Fallback is per group]
// A fusion group whose kernel could not be produced (codegen Unsupported, NVRTC CompileError, no
// target arch, no driver) or cannot serve a particular call (CPU tensors, a 32-bit kernel whose
// indices would overflow) runs its nodes one by one through ATen instead. The reason is logged once
// per group and shown by explain(). No error path returns a wrong tensor: either a step computes
// what eager computes, or forward() throws.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "jit/capture/capture.h"
#include "jit/runtime/against_module.h"
#include "jit/runtime/graph_replay.h"
#include "jit/runtime/kernel_build.h"
#include "jit/runtime/program.h"
#include "src/partition/partition.h"
#include "src/support/error.h"

namespace kiln {
class Session;
}  // namespace kiln

namespace kiln::jit {

// A call broke one of the captured graph's size assumptions (Note [Size assumptions] in
// capture.h): Plan::run throws it before running any step, and forward() runs that call eagerly.
class AssumptionViolated : public Unsupported {
 public:
  using Unsupported::Unsupported;
};

struct PlanStats {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> shapeOnlyHits{0};  // calls that reused shape-only values (Note [Shape-only
                                           // steps] in program.h)
  std::atomic<uint64_t> kernelLaunches{0};
  std::atomic<uint64_t> groupFallbacks{0};  // group executions through ATen
};

// Note [First call breakdown]
// Where a plan's first call went, so that a slow first call (issue 20's deployment bar) can be
// taken apart without a profiler: the build phases (capture, passes, kernels: emit, cache read,
// NVRTC, driver load) and the host time of the first run, step by step. The first run's host time
// holds what libraries do once per process or stream (cuBLAS and cuDNN handles, the lazy loading
// of ATen's kernels); its slowest steps are kept by label. No extra synchronisation: the first
// run is timed as issued. explain() prints it as "first call: ..."; explainJson as "firstCall".
struct PlanBuildInfo {
  int kernelsCompiled = 0;
  int kernelsCached = 0;
  int groupsWithoutKernel = 0;
  double captureSeconds = 0;  // trace, or the capture cache's read (0: the family existed)
  bool captureFromCache = false;
  double passesSeconds = 0;    // Program::build
  double kernelsSeconds = 0;   // emit, cache read, compile and driver load of the bucket's kernels
  double compileSeconds = 0;   // wall time of the (parallel) compile phase, part of kernelsSeconds
  bool servedGeneric = false;  // started on generic kernels, specialized in the background
};

struct FirstRun {
  bool done = false;
  double ms = 0;  // host wall time of the first run() (issued, not synchronised)
  std::vector<std::pair<std::string, double>> slowest;  // step label, ms; slowest first, <= 5
};

class Plan {
 public:
  // Builds a plan in one go: Program::build, then every kernel for the power-of-two bucket of the
  // captured example, compiled synchronously for `arch` (empty: no kernels).
  static std::shared_ptr<Plan> build(CapturedGraph captured, const std::string& arch,
                                     const Session& session);
  // A plan over a shared program with a kernel set (ready kernels are loaded into the driver).
  static std::shared_ptr<Plan> create(std::shared_ptr<const Program> program,
                                      std::shared_ptr<const KernelSet> kernels, PlanBuildInfo info,
                                      const Session& session);

  // Runs the plan. `inputs` in graph input order. Thread-safe, also against swapKernels.
  // `afterStep`, when given, is called with each step's index once the step has been issued
  // (profile.h times steps with it); such a call runs step by step. Other calls may replay a CUDA
  // graph of the plan (Note [CUDA graph replay] in graph_replay.h).
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs,
                              const std::function<void(size_t step)>* afterStep = nullptr) const;
  // What step s runs, for people: "kernel <name>", "eager group #<id>" (no kernel in the current
  // set), or the op ("linear", "scaled_dot_product_attention", ...) and its step kind.
  std::string stepLabel(size_t s) const;

  // Runs the plan step by step with `kernels` instead of its current set (no CUDA graph, not
  // counted in stats): the tuner's end-to-end check of a swap (Note [Swaps checked on the plan]
  // in tuner.h). `kernels` must be a set of this plan's program.
  std::vector<at::Tensor> runWith(const KernelSet& kernels,
                                  const std::vector<at::Tensor>& inputs) const;
  // Replaces the kernel set atomically; calls already running finish with the old one.
  void swapKernels(std::shared_ptr<const KernelSet> kernels);
  std::shared_ptr<const KernelSet> kernels() const { return kernels_.load(); }

  const std::shared_ptr<const Program>& program() const { return program_; }
  const ir::Graph& graph() const { return program_->graph(); }
  const CapturedGraph& captured() const { return program_->captured(); }
  const partition::Partition& partition() const { return program_->partition(); }
  const PlanBuildInfo& buildInfo() const { return info_; }
  // Note [First call breakdown]: the build and the first run, one line ("first call: ...").
  FirstRun firstRun() const;
  std::string firstCallLine() const;
  const PlanStats& stats() const { return stats_; }
  uint64_t swaps() const { return swaps_.load(); }
  // Note [CUDA graph replay]; null when KILN_CUDA_GRAPHS=off.
  const GraphReplay* graphs() const { return graphs_.get(); }
  // True for the first caller only: the plan's one tuning job (Note [Background tuning]).
  bool claimTuning() const { return !tuningClaimed_.exchange(true); }
  // Runs its own bucket's kernels, none pending, no swap from generic kernels still to come, no
  // linear calibrating (Note [Quantized linears]): what CUDA graphs capture and what is compared
  // against the module.
  bool settled() const;
  // Note [Plan against the module] in against_module.h: the first caller only, then the result.
  bool claimComparison() const { return !comparisonClaimed_.exchange(true); }
  bool compared() const { return comparisonClaimed_.load(std::memory_order_relaxed); }
  void setComparison(ModuleComparison c) const;
  std::optional<ModuleComparison> comparison() const;
  // The comparison chose the module: calls of this plan's signature run the module.
  bool runsModule() const { return runsModule_.load(std::memory_order_relaxed); }
  std::string explain() const;
  // "CUDA graphs: 2 captured, 2 alive, 40 replays ..." or "CUDA graphs: off: <why>".
  std::string graphsLine() const;
  // The same content as one JSON object (pretty-printed): "partition" (partition::explainJson,
  // each step also with its stepLabel and, for a fusion step, its "kernel" index), "kernelSet"
  // (generic, bucket), "kernels" (name, group id, state, schedule or null, tuned, runsEagerly,
  // reason, fromCache, compileMs), "gemms" (the steps run by a kiln GEMM or why not),
  // "convLayout" (channelsLast, reason) and "capture" (CapturedGraph::report).
  std::string explainJson() const;

 private:
  Plan() = default;
  bool settled(const KernelSet& set) const;
  std::vector<at::Tensor> runSteps(const KernelSet& set, const std::vector<at::Tensor>& inputs,
                                   const std::function<void(size_t step)>* afterStep,
                                   bool bypassShapeOnly) const;
  // `device`: the call's (callDevice in plan.cpp): where values made from nothing go (Note
  // [Fills]), and where a kernel without inputs runs.
  void runGroupEagerly(const partition::FusionGroup& group, std::vector<at::Tensor>& values,
                       const std::vector<int64_t>& symbols, at::Device device) const;
  bool runKernel(const KernelStep& k, const Program::StepRuntime& rt,
                 std::vector<at::Tensor>& values, const std::vector<int64_t>& symbols,
                 at::Device device) const;
  // Note [Cats written in place]: value id's place in its cat's buffer (allocated on `device` by
  // the first operand that asks), or an undefined tensor when it has none this call.
  at::Tensor catPlace(int id, std::vector<at::Tensor>& values, const std::vector<int64_t>& symbols,
                      at::Device device) const;
  // Cat step s when some operand is in place already: copies the others into the buffer.
  bool completeCat(size_t s, const std::vector<at::Tensor>& operands,
                   std::vector<at::Tensor>& values) const;

  // Note [Shape-only steps]: values of the frontier per (stream, symbols, param stamps).
  struct ShapeOnlyCache;
  struct ShapeOnlyKey;

  std::shared_ptr<const Program> program_;
  std::shared_ptr<ShapeOnlyCache> shapeOnly_;  // null when the program has no shape-only steps
  std::unique_ptr<GraphReplay> graphs_;        // null when KILN_CUDA_GRAPHS=off
  std::atomic<std::shared_ptr<const KernelSet>> kernels_;
  std::atomic<uint64_t> swaps_{0};
  mutable std::atomic<bool> tuningClaimed_{false};
  mutable std::atomic<bool> firstRunClaimed_{false};
  mutable std::mutex firstRunMutex_;
  mutable FirstRun firstRun_;  // under firstRunMutex_
  mutable std::atomic<bool> comparisonClaimed_{false};
  mutable std::atomic<bool> runsModule_{false};
  mutable std::mutex comparisonMutex_;
  mutable std::optional<ModuleComparison> comparison_;  // under comparisonMutex_
  bool poisonOutputs_ = false;
  PlanBuildInfo info_;
  mutable PlanStats stats_;
};

}  // namespace kiln::jit

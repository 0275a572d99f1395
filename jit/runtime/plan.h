#pragma once
// A Plan runs one captured, partitioned graph: generated kernels for fusion groups and ATen for
// everything else (jit/eval). It is built once per guard signature and then shared, read-only, by
// every thread that calls forward() with matching inputs.
//
// A Plan is two parts (Note [Programs and kernel sets]):
//   Program    the captured graph after passes, its partition and the step bookkeeping. Shared by
//              every bucket of one guard family (same dtypes, devices, ranks, static sizes):
//              a new bucket needs new kernels, not a new trace.
//   KernelSet  one kernel per fusion group, emitted for one shape bucket (or for none: the
//              generic set). A Plan swaps its set atomically when a specialized one is ready.
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
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "cache/cache_key.h"
#include "codegen/kernel_abi.h"
#include "codegen/schedule.h"
#include "jit/capture/capture.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/conv_layout.h"
#include "jit/runtime/gemm_kernels.h"
#include "jit/runtime/layout_kernels.h"
#include "src/partition/partition.h"
#include "src/support/error.h"

namespace kiln {
class Session;
}

namespace kiln::jit {

class LoadedKernel;
class FoldedParams;  // jit/runtime/fold_conv_bn.h

}  // namespace kiln::jit
namespace kiln::cache {
class KernelCache;
}  // namespace kiln::cache
namespace kiln::jit {

// The tuning records a session's kernels may use: its kernel cache, or null with KILN_TUNE=off
// (Note [Tuning records] in jit/tuner/records.h).
cache::KernelCache* tuningRecords(const Session& session);

// Note [Buckets]
// A dynamic dim's bucket is named by its upper edge. 0 and 1 are buckets of their own (capture
// specializes them: they change broadcasting). Other values go to the smallest edge >= value:
// the next power of two by default, or an explicit edge list (BucketPolicy in optimize.h, e.g.
// {1, 8, 32, 128, 512, 2048}). A value above the last explicit edge is in the overflow bucket,
// served by the generic kernels (no bucket bounds, 64-bit indexing): never an error.
inline constexpr int64_t kOverflowBucket = -1;
int64_t bucketEdge(int64_t value);  // powers of two
// `edges` empty: powers of two; else strictly increasing positive edges (validateBucketEdges).
int64_t bucketEdge(int64_t value, std::span<const int64_t> edges);
// UserError naming `who` unless edges are strictly increasing and >= 1.
void validateBucketEdges(std::string_view who, std::span<const int64_t> edges);

// The BucketInfo codegen sees for the power-of-two buckets of these symbol values (Note [Buckets
// are deterministic] in plan.cpp). kiln-warmup uses it.
codegen::BucketInfo bucketFor(const std::vector<int64_t>& exampleSymbolValues);
// The BucketInfo of given bucket edges (index = symbol id); any kOverflowBucket gives the generic
// bucket: overflow plans run the generic kernels.
codegen::BucketInfo bucketInfoForEdges(const std::vector<int64_t>& symbolEdges);
// No bounds and no hints: kernels that serve any size ("generic kernels").
codegen::BucketInfo genericBucket(size_t numSymbols);
bool isGeneric(const codegen::BucketInfo& bucket);
// "s0<=8, seq<=128", "generic", or "static" (no symbols).
std::string bucketLabel(const ir::Graph& graph, const codegen::BucketInfo& bucket);

// A call broke one of the captured graph's size assumptions (Note [Size assumptions] in
// capture.h): Plan::run throws it before running any step, and forward() runs that call eagerly.
class AssumptionViolated : public Unsupported {
 public:
  using Unsupported::Unsupported;
};

enum class KernelState : uint8_t {
  kNoKernel,  // codegen could not emit one (or no arch): the group always runs through ATen
  kPending,   // emitted, no binary yet
  kReady,     // binary available (compiled or from the cache); `kernel` set when a driver exists
  kFailed,    // NVRTC failed
};

struct KernelStep {
  std::string name;
  codegen::ScheduleParams schedule;
  codegen::KernelAbi abi;
  codegen::LaunchSpec launch;
  KernelState state = KernelState::kNoKernel;
  std::string source;                    // CUDA source while pending (dropped once ready)
  cache::CacheKey key;                   // valid unless kNoKernel
  std::shared_ptr<LoadedKernel> kernel;  // null: the group runs through ATen
  std::string fallbackReason;            // why kernel is null
  double compileSeconds = 0;
  bool fromCache = false;
  bool tuned = false;  // schedule from a tuning record
};

// One kernel per fusion group of a Program (index = StepRuntime::kernel), for one bucket.
struct KernelSet {
  std::vector<KernelStep> kernels;
  std::string bucket;              // bucketLabel
  codegen::BucketInfo bucketInfo;  // what the kernels were emitted for
  bool generic = false;
  // Every kernel that `other` would need (not kNoKernel there) is ready here.
  bool covers(const KernelSet& other) const;
  // Some kernel still has no binary.
  bool pending() const;
};

struct PlanStats {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> kernelLaunches{0};
  std::atomic<uint64_t> groupFallbacks{0};  // group executions through ATen
};

struct PlanBuildInfo {
  int kernelsCompiled = 0;
  int kernelsCached = 0;
  int groupsWithoutKernel = 0;
  double captureSeconds = 0;
  double compileSeconds = 0;  // wall time of the (parallel) compile phase
  bool servedGeneric = false;  // started on generic kernels, specialized in the background
};

// Note [Programs and kernel sets]: the shape-independent part of a plan.
class Program {
 public:
  // Passes, partition and step bookkeeping. Params are bound by name to captured.params.
  static std::shared_ptr<const Program> build(CapturedGraph captured, const Session& session);

  const ir::Graph& graph() const { return *captured_.graph; }
  const CapturedGraph& captured() const { return captured_; }
  const partition::Partition& partition() const { return partition_; }
  size_t numKernels() const { return fusionSteps_.size(); }
  // The fusion group of kernel k (KernelSet::kernels index).
  const partition::FusionGroup& group(size_t k) const {
    return partition_.steps[fusionSteps_[k]].group;
  }
  // Batchnorms folded into convolutions (Note [Folding batchnorm into convolutions] in
  // fold_conv_bn.h), or null. Folded params are snapshots of module tensors bound by reference
  // (Note [Folded params are snapshots]): stale once a source changed in place, and recomputed by
  // Plan::run before it uses them.
  const FoldedParams* foldedParams() const { return folds_.get(); }
  bool foldedParamsStale() const;
  // Whether the convs run channels-last, and why (Note [Channels-last convolutions]).
  const ConvLayoutChoice& convLayout() const { return convLayout_; }

 private:
  friend class Plan;
  struct StepRuntime {
    std::vector<int> inputIds;   // value ids read (kFusion: group inputs)
    std::vector<int> outputIds;  // value ids written (kFusion: group outputs)
    std::vector<int> release;    // value ids whose last use is this step
    int kernel = -1;             // index into KernelSet::kernels (kFusion)
    std::shared_ptr<const KilnGemm> gemm;  // a linear's kiln GEMM (kLibrary), or null
  };
  Program() = default;

  CapturedGraph captured_;
  std::shared_ptr<const FoldedParams> folds_;
  ConvLayoutChoice convLayout_;
  std::vector<int> convEntryInputs_;  // converted to channels-last at the start of a call
  std::shared_ptr<const LayoutConverter> layout_;  // when channels-last
  partition::Partition partition_;
  std::vector<StepRuntime> runtime_;
  std::vector<size_t> fusionSteps_;         // step index of kernel k
  std::vector<at::Tensor> constantValues_;  // by value id; defined for kConstant/kParam values
  std::vector<int> outputIds_;
  int numValues_ = 0;
  EagerRunner eager_;
};

// NVRTC options as they enter kernel cache keys (without machine-specific include paths).
std::vector<std::string> kernelKeyOptions(const std::string& arch);

// The cache key of a kernel's text for `arch` (Note [Cache key contents] in cache/cache_key.h).
cache::CacheKey kernelKey(const std::string& source, const std::string& arch);

// The cubin under `key` from the session's kernel cache (memory, then disk), else compiled by
// NVRTC, announced through the session's compile hook (`bucket`, `background`: what it reports),
// and stored. Throws CompileError when NVRTC rejects the source. `compiled`, when given, is set
// when NVRTC ran.
std::string cubinThroughCache(const Session& session, const cache::CacheKey& key,
                              const std::string& source, const std::string& name,
                              const std::string& arch, const std::string& bucket, bool background,
                              bool* compiled = nullptr);

// Codegen (cheap, deterministic, no NVRTC) of every fusion group of `program` for `bucket`.
// Kernels are kPending, or kNoKernel with the codegen reason. `arch` empty: all kNoKernel.
// Each group uses its tuning record from `records` when there is a valid one (Note [Tuning
// records] in jit/tuner/records.h), else the default schedule.
std::shared_ptr<KernelSet> emitKernels(const Program& program, const codegen::BucketInfo& bucket,
                                       const std::string& arch,
                                       cache::KernelCache* records = nullptr);

// One group's kernel with an explicit schedule (the tuner's variants): kPending, or kNoKernel
// with the reason.
KernelStep emitVariant(const Program& program, size_t k, const codegen::ScheduleParams& schedule,
                       const codegen::BucketInfo& bucket, const std::string& arch);

// Fills pending kernels from the kernel cache (memory, then disk) without compiling. Returns
// how many it filled; KernelSet::pending() tells whether any is left.
int loadCachedKernels(KernelSet& set, const std::string& arch, const Session& session);

struct CompileReport {
  int compiled = 0;  // NVRTC runs
  int cached = 0;    // served by the kernel cache
  double seconds = 0;
  bool cancelled = false;
};
// Compiles every pending kernel in parallel (TBB) through the kernel cache, calling the session's
// compile hook before each NVRTC run. Ready kernels are loaded into the driver when there is one.
// `background`: runs on the session's background arena (nested parallelism stays there), and
// stops early when the session stops or `alive` (may be null) turns false; kernels not compiled
// then stay pending and `cancelled` is set.
CompileReport compileKernels(KernelSet& set, const std::string& arch, const Session& session,
                             bool background, const std::atomic<bool>* alive = nullptr);

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
  // (profile.h times steps with it).
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs,
                              const std::function<void(size_t step)>* afterStep = nullptr) const;
  // What step s runs, for people: "kernel <name>", "eager group #<id>" (no kernel in the current
  // set), or the op ("linear", "scaled_dot_product_attention", ...) and its step kind.
  std::string stepLabel(size_t s) const;

  // Replaces the kernel set atomically; calls already running finish with the old one.
  void swapKernels(std::shared_ptr<const KernelSet> kernels);
  std::shared_ptr<const KernelSet> kernels() const { return kernels_.load(); }

  const std::shared_ptr<const Program>& program() const { return program_; }
  const ir::Graph& graph() const { return program_->graph(); }
  const CapturedGraph& captured() const { return program_->captured(); }
  const partition::Partition& partition() const { return program_->partition(); }
  const PlanBuildInfo& buildInfo() const { return info_; }
  const PlanStats& stats() const { return stats_; }
  uint64_t swaps() const { return swaps_.load(); }
  // True for the first caller only: the plan's one tuning job (Note [Background tuning]).
  bool claimTuning() const { return !tuningClaimed_.exchange(true); }
  std::string explain() const;
  // The same content as one JSON object (pretty-printed): "partition" (partition::explainJson,
  // each step also with its stepLabel and, for a fusion step, its "kernel" index), "kernelSet"
  // (generic, bucket), "kernels" (name, group id, state, schedule or null, tuned, runsEagerly,
  // reason, fromCache, compileMs), "gemms" (the steps run by a kiln GEMM or why not),
  // "convLayout" (channelsLast, reason) and "capture" (CapturedGraph::report).
  std::string explainJson() const;

 private:
  Plan() = default;
  void runGroupEagerly(const partition::FusionGroup& group, std::vector<at::Tensor>& values,
                       const std::vector<int64_t>& symbols) const;
  bool runKernel(const KernelStep& k, const Program::StepRuntime& rt,
                 std::vector<at::Tensor>& values, const std::vector<int64_t>& symbols) const;

  std::shared_ptr<const Program> program_;
  std::atomic<std::shared_ptr<const KernelSet>> kernels_;
  std::atomic<uint64_t> swaps_{0};
  mutable std::atomic<bool> tuningClaimed_{false};
  bool poisonOutputs_ = false;
  PlanBuildInfo info_;
  mutable PlanStats stats_;
};

}  // namespace kiln::jit

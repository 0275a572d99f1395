#pragma once
// A Plan runs one captured, partitioned graph: generated kernels for fusion groups and ATen for
// everything else (jit/eval). It is built once per guard signature and then shared, read-only, by
// every thread that calls forward() with matching inputs.
//
// Note [Fallback is per group]
// A fusion group whose kernel could not be produced (codegen Unsupported, NVRTC CompileError, no
// target arch, no driver) or cannot serve a particular call (CPU tensors, a 32-bit kernel whose
// indices would overflow) runs its nodes one by one through ATen instead. The reason is logged once
// per group and shown by explain(). No error path returns a wrong tensor: either a step computes
// what eager computes, or forward() throws.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "codegen/kernel_abi.h"
#include "codegen/schedule.h"
#include "jit/capture/capture.h"
#include "jit/eval/aten_eval.h"
#include "src/partition/partition.h"

namespace kiln {
class Session;
}

namespace kiln::jit {

class LoadedKernel;

// Shape buckets: a value's bucket is named by its upper edge, the next power of two; 0 and 1 are
// buckets of their own.
int64_t bucketEdge(int64_t value);
// The BucketInfo codegen sees for the buckets of these symbol values (Note [Buckets are
// deterministic] in plan.cpp).
codegen::BucketInfo bucketFor(const std::vector<int64_t>& exampleSymbolValues);

struct KernelStep {
  std::string name;
  codegen::ScheduleParams schedule;
  codegen::KernelAbi abi;
  codegen::LaunchSpec launch;
  std::shared_ptr<LoadedKernel> kernel;  // null: the group runs through ATen
  std::string fallbackReason;            // why kernel is null
  double compileSeconds = 0;
  bool fromCache = false;
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
};

class Plan {
 public:
  // Builds a plan: passes, partition, codegen and compile (in parallel) of every fusion group for
  // `arch` (empty: no kernels). Params are bound by name to captured.params.
  static std::shared_ptr<Plan> build(CapturedGraph captured, const std::string& arch,
                                     const Session& session);

  // Runs the plan. `inputs` in graph input order. Thread-safe.
  std::vector<at::Tensor> run(const std::vector<at::Tensor>& inputs) const;

  const ir::Graph& graph() const { return *captured_.graph; }
  const CapturedGraph& captured() const { return captured_; }
  const partition::Partition& partition() const { return partition_; }
  const PlanBuildInfo& buildInfo() const { return info_; }
  const PlanStats& stats() const { return stats_; }
  std::string explain() const;

 private:
  struct StepRuntime {
    std::vector<int> inputIds;   // value ids read (kFusion: group inputs)
    std::vector<int> outputIds;  // value ids written (kFusion: group outputs)
    std::vector<int> release;    // value ids whose last use is this step
    int kernel = -1;             // index into kernels_ (kFusion)
  };
  Plan() = default;
  void runGroupEagerly(const partition::FusionGroup& group, std::vector<at::Tensor>& values,
                       const std::vector<int64_t>& symbols) const;
  bool runKernel(const KernelStep& k, const StepRuntime& rt, std::vector<at::Tensor>& values,
                 const std::vector<int64_t>& symbols) const;

  CapturedGraph captured_;
  partition::Partition partition_;
  std::vector<KernelStep> kernels_;
  std::vector<StepRuntime> runtime_;
  std::vector<at::Tensor> constantValues_;  // by value id; defined for kConstant/kParam values
  std::vector<int> outputIds_;
  int numValues_ = 0;
  bool poisonOutputs_ = false;
  EagerRunner eager_;
  PlanBuildInfo info_;
  mutable PlanStats stats_;
};

}  // namespace kiln::jit

#pragma once
// The kernel-build service: fusion groups -> loaded kernels, for one shape bucket.
//
//   emit (codegen, cheap) -> key (Note [Cache key contents]) -> kernel cache -> NVRTC -> load
//
// It takes a graph and its fusion groups, not a plan: Program::build, the background compiles in
// optimize.cpp, the tuner (jit/tuner/tuner.h) and the hand-written kernels (gemm_kernels.h,
// layout_kernels.h) all build through it, and nothing here knows about plans.
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache/cache_key.h"
#include "codegen/kernel_abi.h"
#include "codegen/schedule.h"
#include "src/ir/graph.h"
#include "src/partition/partition.h"

namespace kiln {
class Session;
}  // namespace kiln
namespace kiln::cache {
class KernelCache;
}  // namespace kiln::cache

namespace kiln::jit {

class LoadedKernel;  // jit/runtime/kernel_launcher.h

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

// One kernel per fusion group (index = the group's position in the `groups` given to
// emitKernels; a Program's kernel index), for one bucket.
struct KernelSet {
  std::vector<KernelStep> kernels;
  std::string bucket;              // bucketLabel
  codegen::BucketInfo bucketInfo;  // what the kernels were emitted for
  bool generic = false;
  // Note [Library or kiln GEMM on the plan] in jit/tuner/tuner.h: the plan's kiln GEMM steps run
  // through ATen (cuBLAS) with this set. A plan-level choice rides on the set so that it swaps
  // atomically with it and CUDA graphs of the other choice are dropped.
  bool libraryGemms = false;
  // Every kernel that `other` would need (not kNoKernel there) is ready here.
  bool covers(const KernelSet& other) const;
  // Some kernel still has no binary.
  bool pending() const;
};

// The tuning records a session's kernels may use: its kernel cache, or null with KILN_TUNE=off
// (Note [Tuning records] in jit/tuner/records.h).
cache::KernelCache* tuningRecords(const Session& session);

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

// Codegen (cheap, deterministic, no NVRTC) of every group in `groups` (fusion groups of `graph`)
// for `bucket`. Kernels are kPending, or kNoKernel with the codegen reason. `arch` empty: all
// kNoKernel. Each group uses its tuning record from `records` when there is a valid one (Note
// [Tuning records] in jit/tuner/records.h), else the default schedule.
std::shared_ptr<KernelSet> emitKernels(const ir::Graph& graph,
                                       std::span<const partition::FusionGroup* const> groups,
                                       const codegen::BucketInfo& bucket, const std::string& arch,
                                       cache::KernelCache* records = nullptr);

// One group's kernel with an explicit schedule (the tuner's variants): kPending, or kNoKernel
// with the reason.
KernelStep emitVariant(const ir::Graph& graph, const partition::FusionGroup& group,
                       const codegen::ScheduleParams& schedule, const codegen::BucketInfo& bucket,
                       const std::string& arch);

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

}  // namespace kiln::jit

#pragma once
// Note [Plan against the module]
// kiln must never ship a plan slower than the module it replaces (Note [Never worse than eager]
// covers correctness; this covers speed). Once a CUDA plan has served kCompareAfter calls with
// its settled kernel set (its own bucket's, nothing compiling; Plan::settled), one job times the
// whole plan, as calls run it (CUDA graph replay included), against the module run eagerly, on a
// copy of that call's inputs: alternating, on a stream of its own, CUDA events, after a warm-up of
// each, until kMaxReps each or about kBudgetMs of device time. The module takes the plan's
// signature only if it wins beyond the measured noise (Note [Tuning decisions]: 3%, or twice the
// spread); a tie keeps kiln. From then on calls of that signature run the module, counted in
// ModuleStats::moduleFasterCalls; explain() prints both medians and the choice either way.
//   KILN_TUNE=background  the job runs on the session's background arena (like tuning).
//   KILN_TUNE=eager       the call that reaches the threshold runs it.
//   KILN_COMPARE_MODULE=off (Options::compareModule) skips it: every settled plan runs.
// CPU plans are not compared: kiln runs ATen there, step by step.
// A decision is stored with the tuning records (Note [Tuning records]; not with KILN_TUNE=off),
// keyed by the plan's whole IR, its bucket, whether graphs are on, and the arch, so a later
// process with a warm cache takes it without timing again: storeComparison / storedComparison.
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <ATen/ATen.h>

#include "jit/tuner/decision.h"
#include "src/ir/graph.h"

namespace kiln::cache {
class KernelCache;
}  // namespace kiln::cache

namespace kiln::jit {

struct ModuleComparison {
  bool decided = false;       // measured
  bool moduleFaster = false;  // the module takes the signature
  double kilnMs = 0;          // medians
  double moduleMs = 0;
  int reps = 0;        // samples of each
  std::string reason;  // the decision's, or why nothing was measured
  // "kiln 0.412 ms, module 0.833 ms (medians of 10): kiln runs (2.02x)".
  std::string line() const;
};

inline constexpr int kCompareAfter = 20;
inline constexpr int kMaxReps = 15;
inline constexpr double kBudgetMs = 400;

// The decision from timings (a pure function, tested on the CPU).
ModuleComparison judgeAgainstModule(const tuner::Timing& kiln, const tuner::Timing& module,
                                    const tuner::DecisionOptions& options = {});

// Times `a` and `b` alternately on a stream of their own on `device` (a CUDA device), CUDA events
// around each call, after two warm-up calls of each, until kMaxReps each or about kBudgetMs of
// device time (3 each at least). Each callable issues one call on the current stream.
// Exceptions from either propagate.
std::pair<tuner::Timing, tuner::Timing> timeInTurns(const std::function<void()>& a,
                                                    const std::function<void()>& b,
                                                    at::Device device);

// Times `runPlan` against `runModule` on `device` (a CUDA device) as described above; each
// callable issues one call on the current stream. Exceptions from either propagate.
ModuleComparison compareAgainstModule(const std::function<void()>& runPlan,
                                      const std::function<void()>& runModule, at::Device device);

// The stored form of a decided comparison (JSON), and back; nullopt for anything that is not one.
std::string encodeComparison(const ModuleComparison& c);
std::optional<ModuleComparison> decodeComparison(std::string_view text);

// The tuning-record store for a plan's decision: `graph` is the plan's IR, `bucket` its kernel
// set's bucket label. storeComparison stores decided comparisons only and returns whether the
// disk tier took it; storedComparison's reason says where it came from.
bool storeComparison(cache::KernelCache& records, const ir::Graph& graph, std::string_view bucket,
                     const std::string& arch, const ModuleComparison& c);
std::optional<ModuleComparison> storedComparison(cache::KernelCache& records,
                                                 const ir::Graph& graph, std::string_view bucket,
                                                 const std::string& arch);

}  // namespace kiln::jit

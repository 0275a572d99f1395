#pragma once
// Note [Plan against the module]
// kiln must never ship a plan slower than the module it replaces (Note [Never worse than eager]
// covers correctness; this covers speed). Once a CUDA plan has served kCompareAfter calls with
// its settled kernel set (its own bucket's, nothing compiling; Plan::settled), one job times the
// whole plan, as calls run it (CUDA graph replay included), against the module run eagerly, on a
// copy of that call's inputs: alternating, on a stream of its own, CUDA events, after a warm-up of
// each, until kMaxReps each or about kBudgetMs of device time per round.
// The judgement is paired (judgeAgainstModule): each turn gives one ratio kiln ms / module ms, so
// drift that hits both (clocks, other work on the card) cancels. The module takes the plan's
// signature when the median ratio exceeds 1 + 3% and the module won enough turns that chance is
// ruled out (a one-sided sign test at 1%). A median ratio within 3% keeps kiln (a tie keeps
// kiln). Anything between is inconclusive and measured again, up to kMaxRounds rounds; after the
// last round the median ratio of all turns decides, since serving a slower plan is the one
// outcome this check exists to prevent. (The first version judged the two sample sets apart,
// with a bar of twice their spread: on a noisy card a plan 1.8x slower than the module was kept
// because the spread was 73%.) From then on calls of a signature the module took run the module,
// counted in ModuleStats::moduleFasterCalls; explain() prints both medians and the choice.
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
  bool decided = false;       // measured, and judged conclusively (or in the last round)
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
inline constexpr int kMaxRounds = 3;

// The decision from timings taken in turns (kiln.ms[i] and module.ms[i] are one turn; a pure
// function, tested on the CPU). Inconclusive timings give decided == false with the reason,
// unless `lastRound`: then the median ratio decides.
ModuleComparison judgeAgainstModule(const tuner::Timing& kiln, const tuner::Timing& module,
                                    bool lastRound = true,
                                    const tuner::DecisionOptions& options = {});

// The fewest wins out of n fair coin flips that happen with probability <= alpha (one-sided);
// n + 1 when no count is that rare.
int signTestWins(int n, double alpha);

// Times `a` and `b` alternately on a stream of their own on `device` (a CUDA device), CUDA events
// around each call, after two warm-up calls of each, until kMaxReps each or about kBudgetMs of
// device time (3 each at least). Each callable issues one call on the current stream.
// Exceptions from either propagate.
std::pair<tuner::Timing, tuner::Timing> timeInTurns(const std::function<void()>& a,
                                                    const std::function<void()>& b,
                                                    at::Device device);

// Times `runPlan` against `runModule` on `device` (a CUDA device) in up to kMaxRounds rounds as
// described above; each callable issues one call on the current stream. Exceptions from either
// propagate.
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

#pragma once
// Note [Background tuning]
// A plan whose calls reach Options::tuneThreshold (KILN_TUNE_THRESHOLD) becomes one tuning job:
// for each of its kernels, the candidate schedules of its group and bucket (codegen
// candidateSchedules, default first; at most TuneOptions::maxVariants, within maxSeconds) are
// emitted and compiled through the kernel cache, then timed on synthetic data of the bucket's
// representative sizes, never on the caller's tensors (TuningLab). A variant replaces the
// incumbent only if its output matches the incumbent's and it is faster beyond the measured noise
// (Note [Tuning decisions]); the winners go into a copy of the plan's kernel set, which is swapped
// in atomically (calls running keep the set they started with), and are saved as tuning records
// (Note [Tuning records]) for later processes.
//   KILN_TUNE=background  the job runs on the session's background arena; no call waits for it.
//   KILN_TUNE=eager       the call that reaches the threshold runs the job itself.
//   KILN_TUNE=off         no tuning, and records are ignored.
// A job stops between variants when the module or the session goes away.
//
// Note [Swaps checked on the plan]
// Each winner above won alone, on synthetic data. What ships is the whole plan, where kernels
// meet (what one leaves in L2 for the next, library steps between them), so a job given a copy of
// a real call's inputs (OptimizedModule passes one on CUDA) checks its new set on the plan before
// swapping it in: the plan run step by step with the new set, then with the old, alternately
// (TuningLab::timeRuns: CUDA events, as Note [Plan against the module] times). Not as graph
// replays, though the plan's calls replay graphs: capturing the two sides on the tuning thread
// while calls captured and replayed their own graphs made a call fail ("operation not permitted
// when stream is capturing", BERT-base at batch 1 on an H100, 2026-12-06), and a tuning job must
// never cost a call. At small batch step by step is host-bound, so the check then sees the host's
// time more than the kernels' and keeps the swap (a tie keeps it); it still catches a set that
// makes the plan slower beyond the noise, or fails. If the old set is
// faster beyond the noise (Note [Tuning decisions]: the old set is the candidate), the swap is
// rolled back: the old set stays, and the winners' records are not saved (records are saved only
// after the check), so a later process does not adopt them either. A new set that fails on the
// real inputs is not swapped in, and nothing is recorded. The check's medians and verdict are a
// line of the job in stats().tuning and explain(). (The 0.88x per call after tuning ResNet-50
// at batch 1, H200 2026-12-02, came from a job whose kernels had each won on their own.)
//
// Note [Library or kiln GEMM on the plan]
// Linears followed by erf gelu run on kiln's own sm_90 GEMM with the bias and gelu in its epilogue
// (Note [Kiln GEMM]); cuBLAS plus kiln's gelu kernel is the alternative. Which is faster depends on
// the shapes and on what runs around them, so after its kernels the tuning job times the whole
// plan both ways on the call's inputs (step by step, as the swap check does) and keeps kiln's
// GEMM unless cuBLAS wins beyond the noise. The choice rides on
// the kernel set (KernelSet::libraryGemms), so it swaps atomically and drops graphs of the other
// choice; it is stored with the tuning records (per plan IR, bucket and arch), and a later
// process's tuning job applies the stored choice without timing. explain() says which runs, and
// the job's line gives both medians.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "jit/runtime/kernel_build.h"
#include "jit/tuner/decision.h"
#include "src/support/options.h"

namespace kiln::jit {

class Plan;     // jit/runtime/plan.h
class Program;  // jit/runtime/program.h

// What tuning needs from a device, behind an interface: tests pass a fake.
class TuningLab {
 public:
  virtual ~TuningLab() = default;
  // Synthetic inputs for kernel k of `program` at symbol values `symbols`; false: not tunable.
  virtual bool prepare(const Program& program, size_t k, const KernelStep& incumbent,
                       const std::vector<int64_t>& symbols) = 0;
  struct Result {
    tuner::Timing timing;
    bool matches = false;  // output equal to the incumbent's (the first step measured)
  };
  // Runs and times a ready step on the prepared data; nullopt when it cannot run there.
  virtual std::optional<Result> measure(const KernelStep& step) = 0;
  // Whole-plan timings of `a` and `b` (Note [Swaps checked on the plan]), and how they ran.
  struct PlanTimings {
    tuner::Timing a, b;
    std::string how;  // "step by step", ...
  };
  // Times whole-plan runs `a` and `b` alternately on `device`; nullopt where this lab cannot
  // (then the swap is not checked).
  virtual std::optional<PlanTimings> timeRuns(const std::function<void()>& a,
                                              const std::function<void()>& b, at::Device device) {
    (void)a;
    (void)b;
    (void)device;
    return std::nullopt;
  }
};

// The device lab: random inputs on the current CUDA device, rotated past L2, CUDA-event timings
// on a side stream. Null without a driver.
std::unique_ptr<TuningLab> makeCudaLab(const Session& session);

struct TuneOptions {
  int maxVariants = 24;    // per kernel, the incumbent not counted
  double maxSeconds = 60;  // per job
  tuner::DecisionOptions decision;
};
// The budget a session's options set (KILN_TUNE_MAX_VARIANTS, KILN_TUNE_SECONDS).
TuneOptions tuneOptionsFor(const kiln::Options& options);

struct TuneReport {
  int kernels = 0;        // kernels tuned
  int variantsTried = 0;  // variants compiled and measured
  int replaced = 0;       // kernels whose incumbent was replaced
  bool cancelled = false;
  bool rolledBack = false;         // Note [Swaps checked on the plan]: the old set stayed
  std::vector<std::string> lines;  // per kernel: incumbent, winner, speedup; then the plan check
};

// Tunes the kernels of `plan`'s current (non-generic, ready) kernel set with `lab`, swaps in the
// winners and saves their records. `alive` (may be null) turning false stops the job.
// `callInputs` (may be null or empty): a copy of a real call's inputs, ready to read, on which the
// new set is checked before the swap (Note [Swaps checked on the plan]).
TuneReport tunePlan(Plan& plan, TuningLab& lab, const Session& session, const std::string& arch,
                    const TuneOptions& options, const std::atomic<bool>* alive = nullptr,
                    const std::vector<at::Tensor>* callInputs = nullptr);

}  // namespace kiln::jit

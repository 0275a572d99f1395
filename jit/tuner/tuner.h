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
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

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
  std::vector<std::string> lines;  // per kernel: incumbent, winner, speedup
};

// Tunes the kernels of `plan`'s current (non-generic, ready) kernel set with `lab`, swaps in the
// winners and saves their records. `alive` (may be null) turning false stops the job.
TuneReport tunePlan(Plan& plan, TuningLab& lab, const Session& session, const std::string& arch,
                    const TuneOptions& options, const std::atomic<bool>* alive = nullptr);

}  // namespace kiln::jit

#pragma once
// Per-step timing of a plan: where a call's time goes (OptimizedModule::profile).
//
// Note [Profiling steps]
// Each repetition runs the plan once with a hook after every step. On CUDA the hook records a
// timed event on the current stream, so a step's time is the device time between the end of the
// step before and its own end: it includes launch gaps where the host falls behind the GPU. A
// ~100 us sleep kernel queued before each call keeps the GPU busy while the host prepares it, so
// step 0 is not charged the host's latency to its first launch. On the CPU
// it reads a steady clock (ATen runs synchronously there). Views cost ~0 and are listed anyway so
// the step numbers match explain(). One warm-up call runs first; figures are medians over `reps`.
// Profiling changes no plan state beyond the usual call counters.
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace kiln::jit {

class Plan;

struct StepTime {
  size_t step = 0;
  std::string label;  // Plan::stepLabel
  double ms = 0;      // median over the repetitions
};

struct PlanProfile {
  std::vector<StepTime> steps;
  double totalMs = 0;  // median of whole calls (not the sum of step medians)
  int reps = 0;
  bool device = false;  // CUDA events (true) or the host clock
  // A table, slowest steps marked with their share of the total.
  std::string toString() const;
  // The same as one JSON object (pretty-printed): totalMs, reps, device, clock ("CUDA events" or
  // "host clock") and steps, each with step, label, ms and sharePercent (its share of the sum of
  // the step medians, as in the table).
  std::string toJson() const;
};

// UserError unless reps >= 1.
PlanProfile profilePlan(const Plan& plan, const std::vector<at::Tensor>& inputs, int reps);

}  // namespace kiln::jit

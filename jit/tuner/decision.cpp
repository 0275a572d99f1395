#include "jit/tuner/decision.h"

#include <algorithm>

#include <fmt/format.h>

namespace kiln::tuner {
namespace {

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

}  // namespace

double Timing::median() const {
  return ms.empty() ? 0.0 : quantile(ms, 0.5);
}

double Timing::spread() const {
  if (ms.size() < 4) return 0.0;
  const double m = median();
  return m > 0 ? (quantile(ms, 0.75) - quantile(ms, 0.25)) / m : 0.0;
}

Decision decide(const Timing& incumbent, const Timing& candidate, bool candidateCorrect,
                const DecisionOptions& options) {
  Decision d;
  if (!candidateCorrect) {
    d.reason = "wrong result";
    return d;
  }
  if (incumbent.ms.empty() || candidate.ms.empty() || candidate.median() <= 0) {
    d.reason = "no measurement";
    return d;
  }
  d.speedup = incumbent.median() / candidate.median();
  const double noise = std::max(incumbent.spread(), candidate.spread());
  const double need = 1.0 + std::max(options.minGain, options.noiseFactor * noise);
  d.replace = d.speedup > need;
  d.reason = fmt::format("{:.3f}x {} the {:.3f}x needed (noise {:.1f}%)", d.speedup,
                         d.replace ? "beats" : "does not beat", need, noise * 100);
  return d;
}

int pickBest(const Timing& incumbent, const std::vector<Candidate>& candidates,
             const DecisionOptions& options) {
  int best = -1;
  double bestSpeedup = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    Decision d = decide(incumbent, candidates[i].timing, candidates[i].correct, options);
    if (d.replace && d.speedup > bestSpeedup) {
      best = static_cast<int>(i);
      bestSpeedup = d.speedup;
    }
  }
  return best;
}

}  // namespace kiln::tuner

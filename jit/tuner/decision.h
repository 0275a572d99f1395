#pragma once
// Note [Tuning decisions]
// A variant replaces the incumbent kernel of a (group, bucket) only if it computed the same result
// (checked by the caller against the incumbent's output on random data) and is faster by more than
// the noise of the measurements: its median time must beat the incumbent's by a factor of
// 1 + max(minGain, noiseFactor * spread), where spread is the larger relative interquartile range
// of the two sample sets. Ties and gains inside the noise keep the incumbent: a swap has a cost
// (and a wrong swap a larger one), staying put has none.
#include <string>
#include <vector>

namespace kiln::tuner {

struct Timing {
  std::vector<double> ms;  // one sample per repetition
  double median() const;
  // (p75 - p25) / median; 0 for fewer than 4 samples.
  double spread() const;
};

struct DecisionOptions {
  double minGain = 0.03;     // 3%: below this no swap is worth it
  double noiseFactor = 2.0;  // gains must exceed twice the measured spread
};

struct Decision {
  bool replace = false;
  double speedup = 1.0;  // incumbent median / candidate median
  std::string reason;    // why (for stats and logs)
};

Decision decide(const Timing& incumbent, const Timing& candidate, bool candidateCorrect,
                const DecisionOptions& options = {});

struct Candidate {
  Timing timing;
  bool correct = false;
};
// The index of the candidate that wins by the largest speedup, or -1 (keep the incumbent).
int pickBest(const Timing& incumbent, const std::vector<Candidate>& candidates,
             const DecisionOptions& options = {});

}  // namespace kiln::tuner

#pragma once
// kiln-warmup's work: load a TorchScript model, capture it once at small sizes, and prepare the
// plan of every bucket combination of its dynamic dims (Note [Preparing plans ahead] in
// jit/runtime/optimize.h), which compiles every fusion group into the session's kernel cache and
// stores the capture (Note [Warmup buckets] in input_spec.h).
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "integrations/warmup/cli_args.h"
#include "src/support/error.h"
#include "src/support/options.h"

namespace kiln::warmup {

// The model could not be warmed up (load or trace failed, no arch, unusable cache): exit 1.
class WarmupError : public Error {
 public:
  using Error::Error;
};

struct WarmupSummary {
  std::string arch;
  std::string cacheDir;  // the versioned dir entries went to
  int kernelsCompiled = 0;
  int kernelsCached = 0;
  int buckets = 0;       // bucket combinations built
  int groups = 0;        // fusion groups, summed over the combinations
  int groupsFailed = 0;  // groups without a kernel (codegen Unsupported or NVRTC error)
  bool tuned = false;    // --tune ran
  int kernelsTuned = 0;  // --tune: kernels whose default schedule lost to a faster variant
  int variantsTried = 0;                    // --tune: variants compiled and timed
  std::vector<std::string> eagerOps;        // ops capture left to ATen, unique, sorted
  std::vector<std::string> skippedBuckets;  // "s0:1": buckets 0/1 in a range (never dynamic)
  std::string device;          // where the capture ran: "cpu" or "cuda"
  bool captureStored = false;  // in the cache now: a new process does not trace (Note [Capture
                               // cache])
  bool captureCached = false;  // it was already there
  int writesFailed = 0;        // cache writes that failed (full disk, unwritable shard)
  int entriesEvicted = 0;      // entries the size cap evicted during the warmup
  double seconds = 0;
};

// Why the cache does not hold all the warmup produced (writes failed, entries evicted), or
// nullopt. kiln-warmup then exits 1 (Note: a warmup that filled nothing must not exit 0).
std::optional<std::string> cacheProblem(const WarmupSummary& summary);

// {"kernels_compiled": N, "kernels_cached": M, "buckets": K, "groups": G, "eager_ops": [...],
//  "seconds": T, ...} on one line.
std::string toJson(const WarmupSummary& summary);
std::string toText(const WarmupSummary& summary);

struct ComboEvent {
  int index = 0;  // 0-based
  int total = 0;
  std::string label;  // "x[8,16,64] mask[8,1,64]"
  bool done = false;  // false: starting; true: built (the counts below are set)
  int kernelsCompiled = 0;
  int kernelsCached = 0;
  int groups = 0;
  int kernelsTuned = 0;  // --tune
  int variantsTried = 0;
  double seconds = 0;
};
using ProgressFn = std::function<void(const ComboEvent&)>;

// Runs the warmup. `env` is the KILN_* lookup; --cache-dir and --arch override it. Throws
// UsageError (the model's forward takes a different number of inputs) or WarmupError.
WarmupSummary runWarmup(const WarmupArgs& args, const ProgressFn& progress,
                        const EnvLookup& env = processEnvironment());

}  // namespace kiln::warmup

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

// Note [Calibrating in the warm-up]
// With precision fp8 or int8 (Note [Quantized linears] in jit/runtime/quantized_linear.h), a
// process calibrates each linear's input scale on its first calls. `--calibrate FILE` moves that
// to the warm-up: FILE's samples (torch.save of a list of input tuples) run through the warmed-up
// module, round after round, until no linear of their programs is calibrating (at most
// KILN_QUANT_CALIBRATION_CALLS rounds). Each frozen scale, with the linear's error and decision,
// is a calibration record in the cache, so a process over that cache runs 8-bit from its first
// call, and the summary (text and JSON) lists every linear: its state, relative error against the
// 16-bit linear on the last calibration input, and whether it runs 8-bit. A linear still
// calibrating at the end (the device lacks the format's GEMM and KILN_QUANT_EMULATE is off) is
// a failed warm-up: exit 1, after the summary is written. Samples of another guard family than
// the warm-up's (a batch of 1, Note [Guards and plans]) calibrate their own program.
struct QuantLayer {
  std::string label;     // "encoder.layer.0.attention.self.query.weight (step 12)"
  std::string state;     // as explain() gives it: "int8", "16-bit: error 0.12 > 0.08", ...
  double relError = -1;  // -1 while calibrating
  bool quantized = false;
  bool fromRecord = false;   // decided by an earlier process's record, not by these samples
  bool calibrating = false;  // its input scale is not frozen: the warm-up failed
};

struct WarmupSummary {
  std::string arch;
  std::string cacheDir;     // the versioned dir entries went to
  int kernelsCompiled = 0;  // NVRTC runs: the plans' kernels and the fold kernels
  int kernelsCached = 0;
  int buckets = 0;        // bucket combinations built
  int groups = 0;         // fusion groups, summed over the combinations
  int groupsFailed = 0;   // groups without a kernel (codegen Unsupported or NVRTC error)
  bool tuned = false;     // --tune ran
  int kernelsTuned = 0;   // --tune: kernels whose default schedule lost to a faster variant
  int variantsTried = 0;  // --tune: variants compiled and timed
  std::vector<std::string> eagerOps;        // ops capture left to ATen, unique, sorted
  std::vector<std::string> skippedBuckets;  // "s0:1": buckets 0/1 in a range (never dynamic)
  std::string device;                       // where the capture ran: "cpu" or "cuda"
  bool captureStored = false;  // in the cache now: a new process does not trace (Note [Capture
                               // cache])
  bool captureCached = false;  // it was already there
  int writesFailed = 0;        // cache writes that failed (full disk, unwritable shard)
  int entriesEvicted = 0;      // entries the size cap evicted during the warmup
  std::string precision;       // the session's (Note [Precision]): "module", "fp8", ...
  // Note [Calibrating in the warm-up]; empty without --calibrate.
  int calibrationSamples = 0;
  int calibrationCalls = 0;               // forward() calls the samples made
  std::vector<QuantLayer> quantLayers;    // every linear that can run 8-bit
  std::vector<std::string> quantSkipped;  // linears that cannot, each with why
  double seconds = 0;
};

// Why calibration did not finish (linears still calibrating), or nullopt: exit 1.
std::optional<std::string> calibrationProblem(const WarmupSummary& summary);

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

#pragma once
// kiln-warmup's command line. Plain C++ so the usage rules are unit-tested without a model.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "integrations/warmup/input_spec.h"
#include "src/support/error.h"
#include "src/support/options.h"

namespace kiln::warmup {

// Bad usage: the tool prints the one-line message and exits 2.
class UsageError : public UserError {
 public:
  using UserError::UserError;
};

struct WarmupArgs {
  std::string model;                       // --model: a TorchScript file
  std::vector<InputSpec> inputs;           // --input, in order
  std::vector<Symbol> symbols;             // assignSymbols(inputs)
  std::optional<std::string> cacheDir;     // --cache-dir; else KILN_CACHE_DIR/XDG/HOME
  std::optional<std::string> arch;         // --arch sm_XX; else the local GPU's
  std::optional<std::string> summaryJson;  // --summary-json FILE
  // --buckets NAME=E1,E2,...: explicit bucket edges of symbol NAME (Note [Warmup buckets]).
  std::map<std::string, std::vector<int64_t>> bucketEdges;
  std::optional<std::string> device;  // --device cpu|cuda; default cuda when a GPU is usable
  bool quiet = false;                 // --quiet: only errors and the final summary
  bool tune = false;                  // --tune: also tune every kernel on the local GPU
  std::optional<Precision> precision;  // --precision (Note [Precision]); else KILN_PRECISION
  // --calibrate FILE: sample inputs that calibrate the 8-bit linears (Note [Calibrating in the
  // warm-up] in warmup.h).
  std::optional<std::string> calibrate;
  bool help = false;                  // --help
  bool version = false;               // --version
};

inline constexpr const char* kWarmupUsage =
    "usage: kiln-warmup --model MODEL.pt --input NAME:DTYPE:[DIMS] [--input ...]\n"
    "                   [--buckets NAME=E1,E2,...] [--cache-dir DIR] [--arch sm_XX]\n"
    "                   [--device cpu|cuda] [--summary-json FILE] [--quiet] [--tune]\n"
    "                   [--precision P] [--calibrate FILE]\n"
    "       kiln-warmup --version\n"
    "Compiles every kernel of MODEL for every shape bucket of the dynamic dims into kiln's\n"
    "kernel cache, and stores the captured graph, so that a later process neither traces nor\n"
    "compiles. The model runs only once, at small sizes.\n"
    "  --input      one per forward() argument, in order. DTYPE: float16|half|bfloat16|float32|\n"
    "               float|int64|long|int32|int|bool (token ids and masks are filled with ones).\n"
    "               DIMS: sizes; lo..hi marks a dynamic dim (every power-of-two bucket in the\n"
    "               range is compiled); name=lo..hi names it so that other dims (written name)\n"
    "               share it. Unnamed dims at the same index with the same range share one\n"
    "               symbol. Example: --input ids:int64:[b=1..32,s=16..512] --input "
    "mask:int64:[b,s]\n"
    "  --buckets    explicit bucket edges for symbol NAME, as the runtime's BucketPolicy (sizes\n"
    "               above the last edge run generic kernels), e.g. --buckets s=64,128,256,512\n"
    "  --device     where the model runs its one capture: cuda (default when a GPU is usable)\n"
    "               also stores the capture a GPU process looks up; cpu compiles kernels only\n"
    "               for float16/bfloat16 inputs (the capture is traced in float32)\n"
    "  --cache-dir  the cache root (default $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else\n"
    "               ~/.cache/kiln)\n"
    "  --arch       compile for this arch (e.g. sm_90); needs no GPU. Default: the local GPU's\n"
    "  --summary-json  write {kernels_compiled, kernels_cached, buckets, groups, eager_ops,\n"
    "               seconds, ...} to FILE\n"
    "  --tune       also tune every kernel on this machine's GPU (KILN_TUNE_MAX_VARIANTS,\n"
    "               KILN_TUNE_SECONDS) and store the winners as tuning records, which later\n"
    "               processes use unless KILN_TUNE=off. Needs a GPU of the target arch\n"
    "  --precision  module|fp16|bf16|fp8|int8, as KILN_PRECISION (which it overrides): warm up\n"
    "               the kernels a process with that precision runs\n"
    "  --calibrate  with --precision fp8|int8: FILE holds sample inputs, saved from Python with\n"
    "               torch.save([(ids, mask), ...]) (one tuple per call, in forward() order; a\n"
    "               tensor alone for a one-input model). They run through the model on --device\n"
    "               until every 8-bit linear's input scale is frozen; the scales and each\n"
    "               linear's error are stored as calibration records, so a later process runs\n"
    "               8-bit from its first call, and the summary lists each linear's error\n"
    "Exit status: 0 done, 1 the model could not be warmed up, a linear could not be calibrated,\n"
    "or the cache did not keep what was compiled (write failures, evictions by the size cap),\n"
    "2 bad usage.\n";

// Parses argv[1..]. Throws UsageError naming the bad argument (unknown flag, missing value,
// malformed spec, dtype typo, missing model file, malformed --arch, ...). Checks that the model
// file exists; --help and --version skip every other check.
WarmupArgs parseWarmupArgs(const std::vector<std::string>& args);

}  // namespace kiln::warmup

#pragma once
// kiln's typed options. Every field can be overridden by a KILN_* environment variable, parsed
// once when a Session is created (Note [Options from the environment]). README lists them all.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "src/support/log.h"

namespace kiln {

enum class TuneMode : uint8_t { kOff, kBackground, kEager };
std::string_view toString(TuneMode mode);
// Memory layout of convolutions on CUDA (Note [Channels-last convolutions] in
// jit/runtime/conv_layout.h).
enum class ConvLayout : uint8_t { kAuto, kChannelsLast, kContiguous };
std::string_view toString(ConvLayout layout);
// What precision a float32 module runs in (Note [Precision] in jit/runtime/optimize.h).
//   kModule    the module's own dtypes (nothing changes)
//   kFloat16   a float32 module runs in float16: params converted once, float32 inputs cast at
//              entry and float32 outputs cast back; reductions, softmax and norms accumulate in
//              float32
//   kBFloat16  the same in bfloat16
//   kFp8       16-bit activations (a float32 module runs in float16, as kFloat16), and linears
//              with a weight param run as fp8 e4m3 GEMMs: weights quantised per output channel,
//              activations with a scale calibrated on the first calls (Note [Quantized linears]
//              in jit/runtime/quantized_linear.h)
//   kInt8      the same with int8 weights and activations and int32 accumulation
enum class Precision : uint8_t { kModule, kFloat16, kBFloat16, kFp8, kInt8 };
std::string_view toString(Precision precision);  // module, fp16, bf16, fp8, int8

struct Options {
  // KILN_LOG: off|error|warn|info|debug|trace.
  LogLevel logLevel = LogLevel::kWarn;
  // KILN_DISABLE=1: optimize() returns a wrapper that runs the module eagerly (a kill switch).
  bool disable = false;
  // KILN_CACHE_DIR: root of the disk cache; empty = $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.
  std::string cacheDir;
  // KILN_DISK_CACHE=0 keeps compiled kernels in memory only.
  bool diskCache = true;
  // KILN_CACHE_MAX_BYTES: size cap of the disk cache (LRU eviction past it).
  uint64_t cacheMaxBytes = 2ull << 30;
  // KILN_ARCH: compile target such as sm_90; empty = the current device's arch. With no GPU and no
  // arch, kiln captures but does not compile.
  std::string arch;
  // KILN_COMPILE_THREADS: parallel NVRTC compiles; 0 = TBB's default.
  int compileThreads = 0;
  // KILN_MAX_PLANS: compiled plans kept per optimized module (LRU beyond).
  int maxPlans = 64;
  // KILN_BACKGROUND_COMPILE=0: a new shape bucket always compiles its kernels before the call
  // returns. Default: when generic kernels exist, serve the call with them and specialize in the
  // background (Note [Guards and plans] in jit/runtime/optimize.h).
  bool backgroundCompile = true;
  // KILN_SHAPE_CACHE: reuse what steps compute from sizes alone (Note [Shape-only steps] in
  // jit/runtime/program.h).
  bool shapeOnlyCache = true;
  // KILN_CUDA_GRAPHS: auto|off. auto replays a warm plan as a CUDA graph per exact input sizes
  // (Note [CUDA graph replay] in jit/runtime/graph_replay.h).
  bool cudaGraphs = true;
  // KILN_COMPARE_MODULE: auto|off. auto times each settled CUDA plan once against the module run
  // eagerly and runs the module for that signature when it is faster (Note [Plan against the
  // module] in jit/runtime/against_module.h).
  bool compareModule = true;
  // KILN_PREWARM: auto|off. auto starts the one-time loads of cuBLAS, cuDNN and SDPA on the
  // background arena once a captured graph shows it calls them (Note [Library prewarm] in
  // jit/runtime/library_prewarm.h).
  bool libraryPrewarm = true;
  // KILN_FOLD_KERNEL: auto|off. auto folds batchnorm into conv weights with kiln's fold kernel
  // when it is in the kernel cache (Note [Fold kernel] in codegen/emit_cuda.h); off: through ATen.
  bool foldKernel = true;
  // KILN_MERGE_LINEARS: auto|off. auto runs linears that read one input (q, k and v; gate and up)
  // as one GEMM over their concatenated weights (Note [Merged linears] in
  // src/passes/merge_linears.h), at the cost of a copy of those weights; off: one GEMM each.
  bool mergeLinears = true;
  // KILN_TUNE: off|background|eager. KILN_TUNE_THRESHOLD: calls of a bucket before it is tuned.
  // Background by default: on an H200 (bench/RESULTS.md, 2026-12-02) request p99 while a job ran
  // stayed within 1.25x of p50 after it (Note [Tuning beside traffic]).
  TuneMode tune = TuneMode::kBackground;
  int tuneThreshold = 200;
  // KILN_TUNE_MAX_VARIANTS, KILN_TUNE_SECONDS: a tuning job's budget, variants per kernel (the
  // incumbent not counted) and wall seconds per job.
  int tuneMaxVariants = 24;
  int tuneSeconds = 60;
  // KILN_CONV_LAYOUT: auto|channels_last|contiguous. auto runs a program's convolutions
  // channels-last on CUDA when it has enough of them to pay for converting at its boundary.
  ConvLayout convLayout = ConvLayout::kAuto;
  // KILN_GEMM=0|1: 16-bit linears followed by erf gelu run on kiln's own GEMM on sm_90, with the
  // bias and gelu in its epilogue (Note [Kiln GEMM] in codegen/emit_gemm.h); 0 leaves them to
  // cuBLAS and a kiln gelu kernel after it, which bench/RESULTS.md measured slower.
  bool kilnGemm = true;
  // KILN_FIRST_CALL_GEMM: auto|off. auto runs 16-bit linears on kiln's GEMM while the prewarm is
  // still loading cuBLAS, instead of waiting for it (Note [Kiln GEMM while cuBLAS loads] in
  // jit/runtime/gemm_kernels.h); needs kilnGemm and an sm_90 target.
  bool firstCallGemm = true;
  // KILN_PRECISION: module|fp16|bf16 (Precision above). jit::Options::precision overrides it per
  // module.
  Precision precision = Precision::kModule;
  // Note [Quantized linears] (fp8, int8). KILN_QUANT_CALIBRATION_CALLS: calls each quantised
  // linear observes before its activation scale is frozen. KILN_QUANT_MAX_ERROR: the largest
  // relative error (||y_q - y|| / ||y|| on the last calibration input) a linear may have and still
  // run quantised; a linear above it stays in 16 bits, and explain() lists it.
  int quantCalibrationCalls = 8;
  double quantMaxError = 0.08;
  // KILN_QUANT_EMULATE=1 (tests; accuracy checks on a machine without fp8/int8 hardware): where
  // the device cannot run the quantised GEMM (the CPU, a card before sm_89), compute it in float32
  // from the quantised operands and the same scales instead of falling back to 16 bits. Slow.
  bool quantEmulate = false;
  // KILN_POISON_OUTPUTS=1 (debugging, tests): fill kernel outputs with NaN/0xFF before each launch,
  // so an element a kernel fails to write cannot pass for a right answer left over in memory.
  bool poisonOutputs = false;
  // KILN_STRICT=1 (tests, debugging): a module or shape kiln cannot capture, lower or run is an
  // error instead of running eagerly (Note [Never worse than eager] in jit/runtime/optimize.h).
  bool strict = false;
};

// Reads a variable; returns nullopt when unset. Tests pass a fake.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
EnvLookup processEnvironment();

// Note [Options from the environment]
// Applied over `base`, so code sets defaults and operators override them without a rebuild. A
// malformed value is a UserError naming the variable and the accepted values, never a silent
// default: a typo in KILN_TUNE must not quietly change behaviour in production.
Options applyEnvironment(Options base, const EnvLookup& env);

// Parsers shared with the CLIs. Each throws UserError naming `what`.
bool parseBool(std::string_view what, std::string_view text);
int64_t parseInt(std::string_view what, std::string_view text, int64_t min, int64_t max);
double parseFraction(std::string_view what, std::string_view text);    // in (0, 1]
uint64_t parseByteSize(std::string_view what, std::string_view text);  // "512M", "2G", "1048576"
TuneMode parseTuneMode(std::string_view what, std::string_view text);
bool parseAutoOff(std::string_view what, std::string_view text);  // true for auto
ConvLayout parseConvLayout(std::string_view what, std::string_view text);
// module, fp16 (or float16, half), bf16 (or bfloat16), fp8 (or float8, e4m3), int8.
Precision parsePrecision(std::string_view what, std::string_view text);

}  // namespace kiln

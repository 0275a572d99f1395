#pragma once
// kiln's front door:
//   auto fast = kiln::jit::optimize(module);   // torch::jit::Module, or a torch::nn::Module holder
//   auto out  = fast.forward({x, mask});        // same results as module.forward, faster
//
// Note [Guards and plans]
// forward() computes a guard signature of its inputs: per input dtype, device, rank and every
// static dim's size; each dynamic dim (Options::dynamicDims) contributes its shape bucket (Note
// [Buckets] in buckets.h: powers of two, or BucketPolicy edges; sizes 0 and 1 are buckets of their
// own; values above the last explicit edge are the overflow bucket). Contiguity and alignment are
// not guarded: kernels take strides at run time and packArgs picks the vector path per call.
//   - A signature seen before runs its plan: no capture, no compile, no lock but a shared one.
//   - A new signature whose guard family (the signature with the buckets of dims >= 2 left out:
//     same dtypes, devices, ranks, static sizes and 0/1 dims) is known reuses that family's
//     captured and partitioned Program: a new bucket never traces again. Anything else (dtype,
//     device, rank, a static size, a dim becoming 0 or 1) captures again.
//   - Kernels for the bucket are emitted (codegen only). If the kernel cache has them all, the plan
//     uses them. Otherwise, if the family's generic kernels (no bucket bounds, 64-bit indexing)
//     are ready, in memory or in the disk cache, the call is served with them at once and the
//     specialized kernels compile on the session's background arena and are swapped into the plan
//     atomically (Plan::swapKernels; a running call keeps the set it started with). Otherwise the
//     kernels compile now, in parallel across groups, and the family's generic kernels are then
//     compiled in the background so the next new bucket does not wait. KILN_BACKGROUND_COMPILE=0
//     turns the background path off. The overflow bucket uses the generic kernels themselves.
//   - At most kiln::Options::maxPlans (KILN_MAX_PLANS) plans per module (LRU); a family lives while
//   one of its plans does.
// Many threads may call forward() on one OptimizedModule at once; plans are built one at a time
// per module (a hit never waits for a build) and a plan is built once even when threads miss
// together. Background jobs hold shared state only (Note [Background compiles] in session.h), so
// destroying the module or its Session while they run is safe.
//
// Note [Never worse than eager]
// kiln must never fail where the module works. Anything kiln cannot do for a call runs the module
// itself for that call, as optimize() was never used:
//   - capture, lowering or plan building fails for a guard family (an op or argument kiln cannot
//     follow, a trace TorchScript rejects, control flow tracing would fix to one path): every
//     signature of that family runs eagerly;
//   - a plan fails while running (an eager op's result disagrees with the captured shapes, an ATen
//     error inside a step): that signature runs eagerly from then on;
//   - a call breaks one of the plan's size assumptions (Note [Size assumptions] in capture.h): that
//     call runs eagerly.
// Each cause is logged once as a warning, counted in stats() (eagerFallbacks, eagerCalls) and
// listed by explain(). Bad user input is not a kiln failure: a non-tensor input or a bad option
// is still a UserError, and when the module itself fails on the inputs, its error comes back as
// a UserError. Options::strict (KILN_STRICT=1, tests) rethrows instead of falling back.
//
// Note [Precision]
// Options::precision (KILN_PRECISION, or jit::Options::precision per module) fp16 or bf16 runs a
// float32 module in that dtype, as if it had been converted by hand (module.half()), and gives
// back what the module gives:
//   - capture retypes every float32 value of the graph (Note [Tracing in float32] in capture.h),
//     but float32 inputs stay float32 in the graph with a cast after each, and float32 outputs
//     get a cast back before each, so callers pass and receive what the module takes and gives,
//     and the casts fuse into the first and last kernels;
//   - the module's float32 params are converted once, into tensors the program owns, and again
//     whenever they change in place (Note [Derived params are snapshots] in derived_params.h);
//   - kiln's reductions, softmax and norms accumulate in float32 whatever they load, and cuBLAS
//     and cuDNN accumulate 16-bit GEMMs and convolutions in float32;
//   - eager ops that name float32 (dtype arguments) get the new dtype, and torch.finfo(float32)
//     min/max literals become the new dtype's, as the converted module would compute them.
// A module that already has float16/bfloat16 tensors runs in its own dtypes (explain() says so):
// its explicit float32 upcasts (an RMSNorm's) are deliberate. When kiln runs the module itself
// (Note [Never worse than eager], or the module was faster), it runs in float32 as written.
// fp8 and int8 keep activations in 16 bits (a float32 module retyped to float16 as above, a
// 16-bit module in its own dtypes) and run its linears with a weight param as 8-bit GEMMs (Note
// [Quantized linears] in quantized_linear.h); explain() lists each linear and its error.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>

#include "jit/capture/capture.h"
#include "jit/runtime/profile.h"
#include "src/support/options.h"

namespace torch::jit {
struct Module;
}

namespace kiln {
class Session;
}

namespace kiln::jit {

// Explicit shape buckets for one dynamic dim, named as in its DynamicDim (same input and dim).
// `edges` strictly increasing, >= 1: a size v >= 2 is in the bucket of the smallest edge >= v;
// sizes above the last edge run the generic kernels (Note [Buckets] in buckets.h). Dims sharing a
// symbol share the policy. Without a policy a dim uses powers of two.
struct BucketPolicy {
  std::string input;
  int64_t dim = 0;
  std::vector<int64_t> edges;
};

struct Options {
  // Input dims that vary between calls (batch, sequence): symbolic in the IR, bucketed in guards.
  std::vector<DynamicDim> dynamicDims;
  // Bucket edges per dynamic dim (default: powers of two).
  std::vector<BucketPolicy> buckets;
  // Names of the forward() inputs, in order; used in errors and by dynamicDims.
  std::vector<std::string> inputNames;
  // The session (options, caches, tuner) to use; null: Session::defaultSession().
  Session* session = nullptr;
  // Note [Tracing in float32] in capture.h: plans typed in float16/bfloat16 from float32 examples.
  // For ahead-of-time builds only (kiln-warmup on a machine without a GPU, prepare()): such plans
  // are compiled, never run.
  std::optional<ir::DType> retypeTo;
  // Note [Precision]: overrides the session's kiln::Options::precision for this module.
  std::optional<kiln::Precision> precision;
};

class Plan;

// Note [Preparing plans ahead]
// prepare() builds what forward() would need for inputs of given sizes, without running the module
// at those sizes: the guard family is captured on small example inputs (through the capture
// cache, Note [Capture cache]), and the plan for the sizes' bucket is built from it, compiling
// its kernels and the family's generic kernels (Note [Guards and plans]) now. Sizes never become
// tensors: the plan's guard signature and symbols are computed from stride-0 views of one
// element, so preparing batch 2^20 costs what batch 2 does. kiln-warmup is built on it. The plan
// is kept like one forward() built, so a later call of those sizes is a plan hit.
struct PreparedPlan {
  std::shared_ptr<Plan> plan;  // null when these sizes run eagerly (Note [Never worse than eager])
  std::string eagerReason;     // why, when plan is null
  int kernelsCompiled = 0;     // the plan's and the family's generic kernels, by NVRTC now
  int kernelsCached = 0;       // loaded from the kernel cache instead
};

struct ModuleStats {
  uint64_t calls = 0;
  uint64_t planHits = 0;
  uint64_t planMisses = 0;      // plans built (one per new guard signature)
  uint64_t captures = 0;        // traces (new guard families); <= planMisses
  uint64_t capturesCached = 0;  // new guard families loaded from the capture cache instead
  uint64_t plansAlive = 0;
  uint64_t familiesAlive = 0;  // captured programs shared by the plans alive
  uint64_t plansEvicted = 0;
  uint64_t kernelsCompiled = 0;     // by NVRTC in this process, foreground and background
  uint64_t backgroundCompiles = 0;  // the part of kernelsCompiled done in the background
  uint64_t kernelsCached = 0;    // loaded from the kernel cache (memory or disk)
  uint64_t plansServedGeneric = 0;  // new plans that started on generic kernels
  uint64_t swaps = 0;               // specialized kernel sets swapped into plans
  uint64_t backgroundPending = 0;   // background jobs queued or running now
  uint64_t kernelLaunches = 0;
  uint64_t groupFallbacks = 0;  // fusion groups run through ATen
  // Note [CUDA graph replay] in graph_replay.h: graphs captured, and calls served by replaying one.
  uint64_t graphCaptures = 0;
  uint64_t graphReplays = 0;
  // Note [Never worse than eager]: guard families and signatures kiln gave up on, and the calls
  // the module itself served because of them.
  uint64_t eagerFallbacks = 0;
  uint64_t eagerCalls = 0;
  // Note [Plan against the module] in against_module.h: calls of signatures whose plan was timed
  // slower than the module, served by the module.
  uint64_t moduleFasterCalls = 0;
  // Bytes of the module's tensors that kiln holds in another form: merged linears' weights,
  // float32 weights retyped for Options::precision and batchnorms folded into conv weights (Note
  // [Derived params shared by families]), one copy for all plans of the module.
  uint64_t derivedParamBytes = 0;
  double compileSeconds = 0;    // wall time of compile phases, foreground and background
  uint64_t tuningJobs = 0;      // plans tuned (Note [Background tuning] in tuner.h)
  uint64_t variantsTried = 0;   // schedule variants compiled and measured
  uint64_t kernelsTuned = 0;    // incumbents replaced by a faster variant
  // One line per kernel a tuning job measured: its bucket, the incumbent's schedule, the winner's
  // and its speedup (or "kept"), and the variants tried.
  std::vector<std::string> tuning;
  std::string toString() const;
  // Every field above as one JSON object (pretty-printed), keyed by its name here ("planHits",
  // "tuning": the lines as an array).
  std::string toJson() const;
};

class OptimizedModule {
 public:
  // Same calling convention as the module's forward: tensors in, IValue out (a tensor, or a
  // tuple/list of tensors). UserError for non-tensor inputs, naming the input.
  c10::IValue forward(const std::vector<c10::IValue>& inputs) const;
  // Stats, the plans alive with their buckets and kernel state, and the partition of the most
  // recently used plan: groups, kernels, eager leftovers.
  std::string explain() const;
  // The same content as one JSON object (pretty-printed), for tools:
  //   "stats"           ModuleStats::toJson (its "tuning" holds the tuning lines)
  //   "precision"       Note [Precision]: "line" (as explain() gives it), "paramsConverted" and
  //                     "bytesConverted" (of the most recently used plan's program)
  //   "plans"           the plans alive, most recent first: signature, generic, bucket,
  //                     background (for a plan first served by generic kernels "specializing in
  //                     the background" or "swapped in from the background", else null), calls
  //   "eagerFallbacks"  what runs as the module itself: kind ("guard family" or "signature"),
  //                     key, reason
  //   "plan"            Plan::explainJson of the most recently used plan (partition steps,
  //                     groups, kernels, eager leftovers), or null before the first plan
  // Strings are escaped as JSON requires; bytes that are not UTF-8 become U+FFFD.
  std::string explainJson() const;
  ModuleStats stats() const;
  // Runs `inputs` through their plan (built as forward() would) once to warm up, then `reps` more
  // times, timing every step (Note [Profiling steps] in profile.h). UserError when kiln is
  // disabled (KILN_DISABLE) or reps < 1.
  PlanProfile profile(const std::vector<c10::IValue>& inputs, int reps = 20) const;
  // Note [Preparing plans ahead]. `examples`: tensors of the call's dtypes, devices and ranks, at
  // small sizes the module accepts; `shapes`: the sizes to build for, one per input, in the same
  // guard family (static sizes equal, dynamic sizes >= 2 unless the examples' are 0 or 1 there).
  // UserError when they do not fit, or kiln is disabled.
  PreparedPlan prepare(const std::vector<c10::IValue>& examples,
                       const std::vector<std::vector<int64_t>>& shapes) const;

  struct Impl;
  explicit OptimizedModule(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<Impl> impl_;
};

OptimizedModule optimize(const torch::jit::Module& module, const Options& options = {});

// C++ frontend modules: `forward` calls the module (see capture.h's ForwardFn).
OptimizedModule optimize(std::shared_ptr<torch::nn::Module> module, ForwardFn forward,
                         const Options& options = {});

// Convenience for holders whose forward takes one tensor: optimize(torch::nn::Linear(...)).
template <typename Holder>
  requires requires(Holder h, at::Tensor t) {
    h.ptr();
    h->forward(t);
  }
OptimizedModule optimize(Holder holder, const Options& options = {}) {
  ForwardFn fn = [holder](const std::vector<c10::IValue>& in) mutable -> c10::IValue {
    return holder->forward(in.at(0).toTensor());
  };
  return optimize(std::static_pointer_cast<torch::nn::Module>(holder.ptr()), std::move(fn),
                  options);
}

}  // namespace kiln::jit

#pragma once
// The shape-independent part of a plan (Note [Programs and kernel sets] in plan.h): the captured
// graph after passes, its partition, and the bookkeeping Plan::run follows step by step. Built
// once per guard family, shared read-only by that family's plans.
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "jit/capture/capture.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/conv_layout.h"
#include "jit/runtime/gemm_kernels.h"
#include "jit/runtime/layout_kernels.h"
#include "jit/runtime/quantized_linear.h"
#include "src/partition/partition.h"
#include "src/passes/merge_linears.h"

namespace kiln {
class Session;
}  // namespace kiln

namespace kiln::jit {

class FoldedParams;   // jit/runtime/fold_conv_bn.h
class DerivedParams;  // jit/runtime/derived_params.h
class DerivedPool;    // jit/runtime/derived_params.h

// What a step is, whichever kernel runs it: "group #3", "library linear", "view reshape",
// "eager <op>". Plan::stepLabel and the profiler ranges (Note [Profiler ranges]) use it.
std::string describeStep(const partition::Step& step);

class Program {
 public:
  // Passes, partition and step bookkeeping. Params are bound by name to captured.params.
  // `quant` (may be null): run linears with a weight param as 8-bit GEMMs (Note [Quantized
  // linears] in quantized_linear.h). `derived` (may be null): the module's pool of derived params,
  // which the programs of its guard families share (Note [Derived params shared by families]).
  static std::shared_ptr<const Program> build(CapturedGraph captured, const Session& session,
                                              const QuantSettings* quant = nullptr,
                                              std::shared_ptr<DerivedPool> derived = nullptr);

  const ir::Graph& graph() const { return *captured_.graph; }
  const CapturedGraph& captured() const { return captured_; }
  const partition::Partition& partition() const { return partition_; }
  size_t numKernels() const { return groups_.size(); }
  // The fusion group of kernel k (KernelSet::kernels index), and all of them in kernel order:
  // what emitKernels takes.
  const partition::FusionGroup& group(size_t k) const { return *groups_[k]; }
  const std::vector<const partition::FusionGroup*>& groups() const { return groups_; }
  // Batchnorms folded into convolutions (Note [Folding batchnorm into convolutions] in
  // fold_conv_bn.h), or null. Folded params are snapshots of module tensors bound by reference
  // (Note [Folded params are snapshots]): stale once a source changed in place, and recomputed by
  // Plan::run before it uses them.
  const FoldedParams* foldedParams() const { return folds_.get(); }
  bool foldedParamsStale() const;
  // Steps that run on kiln's own GEMM when their kernel set lets them (KernelSet::libraryGemms).
  size_t kilnGemmSteps() const;
  // Note [Kiln GEMM while cuBLAS loads]: the GEMM step `s` runs on now, on CUDA device `device`,
  // under a kernel set that does (`kilnGemms`) or does not let kiln GEMMs run; null: ATen.
  const KilnGemm* gemmFor(size_t s, int device, bool kilnGemms) const;
  // Note [Buffers with known contents] in capture.h: why the params the graph assumes contents of
  // no longer hold them, or nullopt. Cheap while none was written or moved (two loads each);
  // otherwise reads them again (which synchronizes with the device).
  std::optional<std::string> brokenContent() const;
  // Whether a call on CUDA device `device` (negative: any) now runs some linear on its stand-in
  // GEMM (the plan is not settled: no graph is captured, no comparison timed).
  bool standInGemmsRunning(int device) const;
  // Note [Quantized linears]: the linears that run 8-bit (or calibrate), and those that cannot,
  // with why ("<weight> (step 12): its weight is ..."). Both empty without quantisation.
  std::vector<QuantizedLinear::Report> quantReports() const;
  const std::vector<std::string>& quantSkipped() const { return quantSkipped_; }
  // Some linear is still calibrating (no CUDA graph is captured meanwhile).
  bool calibrating() const;
  // Whether the convs run channels-last, and why (Note [Channels-last convolutions]).
  const ConvLayoutChoice& convLayout() const { return convLayout_; }
  // Float32 module tensors the graph reads in float16/bfloat16 (Note [Derived params are
  // snapshots] in derived_params.h), or null. Plan::run refreshes them before it uses them.
  const DerivedParams* retypedParams() const { return retyped_.get(); }
  // The tensors of its retyped and merged params and of its folds (Note [Derived params shared by
  // families]).
  std::vector<at::Tensor> derivedTensors() const;
  // Note [Merged linears] (src/passes/merge_linears.h): what was merged (empty when nothing was).
  const passes::MergedLinears& mergedLinears() const { return mergedLinears_; }
  // Recomputes folded, retyped and merged params whose sources changed in place (Note [Derived
  // params are snapshots]); Plan::run calls it before it binds them.
  void refreshSnapshots() const;

  // Note [Shape-only steps]
  // Traced models compute much from sizes alone: position ids (arange(seq)) and their embedding
  // rows, token-type rows, causal masks, rotary cos/sin tables, run-time scalars. A step whose
  // every input is a param, a constant or the output of another such step computes the same
  // tensors for the same symbol values, so a plan computes them once per symbol values and
  // reuses them (Plan::run: a small LRU per plan, keyed also by the CUDA stream, so a cached
  // tensor is only read on the stream that wrote it, and by a stamp of the params they read
  // (storage and version counter), so weights changed in place are seen). Not shape-only: steps
  // that read a graph input, eager ops that draw random numbers. The whole cache is off, with the
  // reason, when a graph output would be a cached tensor (callers may write to outputs) or when
  // any eager op mutates its arguments (it could write into a cached tensor).
  struct ShapeOnly {
    bool enabled = false;
    std::string why;              // why not enabled (no such steps, or the rule that forbids it)
    std::vector<bool> step;       // per step
    std::vector<int> frontier;    // value ids such steps write that other steps read
    std::vector<int> frontierOf;  // per value id: index into frontier, or -1
    std::vector<int> params;      // kParam value ids such steps read (stamped per call)
    int steps = 0;                // how many steps are shape-only
  };
  const ShapeOnly& shapeOnly() const { return shapeOnly_; }

  // Note [Cats written in place]
  // A cat copies its operands into a new tensor. When an operand is a fusion group's output that
  // nothing else reads, the group's kernel writes it straight into its place in the cat's buffer
  // instead (kernels take strided outputs: Note [Kernel ABI]): the producer allocates the buffer
  // when the first such operand is computed, and the cat step only copies the operands that are
  // not in place yet (inputs, views, outputs of groups that ran eagerly on the CPU or in a
  // fallback, which copy their result into the place). Rotary embeddings end in such a cat (Note
  // [Pointwise ops through cat] in src/passes/split_at_cat.h). Not for shape-only steps (their
  // values are cached per sizes) or operands of another dtype than the cat's.
  struct CatSlot {
    int catId = -1;   // the cat's value id
    int64_t dim = 0;  // the cat's dim
    ir::DType dtype = ir::DType::kFloat32;
    // One shape, so that a call evaluates it once: the cat's result shape (rank dims), then the
    // sizes along dim of the operands before this one, then this operand's size along dim.
    ir::Shape dims;
    size_t rank = 0;
  };
  // The slot of value id, or null.
  const CatSlot* catSlot(int id) const {
    const int k = catSlotOf_.empty() ? -1 : catSlotOf_[static_cast<size_t>(id)];
    return k < 0 ? nullptr : &catSlots_[static_cast<size_t>(k)];
  }
  // Step s is a cat some of whose operands have slots.
  bool catInPlace(size_t s) const { return !catInPlace_.empty() && catInPlace_[s]; }
  size_t numCatSlots() const { return catSlots_.size(); }

 private:
  friend class Plan;
  struct StepRuntime {
    std::vector<int> inputIds;               // value ids read (kFusion: group inputs)
    std::vector<int> outputIds;              // value ids written (kFusion: group outputs)
    std::vector<int> release;                // value ids whose last use is this step
    int kernel = -1;                         // index into KernelSet::kernels (kFusion)
    std::shared_ptr<const KilnGemm> gemm;    // a linear's kiln GEMM (kLibrary), or null
    // Note [Kiln GEMM while cuBLAS loads]: the linear's stand-in while cuBLAS loads, or null.
    std::shared_ptr<const KilnGemm> loadingGemm;
    std::shared_ptr<QuantizedLinear> quant;  // a linear's 8-bit GEMM (kLibrary), or null
    std::string rangeName;  // "kiln::group #3", ... (Note [Profiler ranges] in profiler_range.h)
  };
  Program() = default;
  void markShapeOnlySteps(bool allowed);
  void quantizeLinears(const QuantSettings& settings, const Session& session);
  void mergeLinears(const std::shared_ptr<DerivedPool>& derived);
  void placeCatOperands();
  // The program's kiln GEMM of this spec, made (compiled or loaded) the first time.
  std::shared_ptr<const KilnGemm> kilnGemmOf(const Session& session, ir::DType dtype,
                                             codegen::GemmActivation activation, bool hasBias);

  CapturedGraph captured_;
  struct ContentStamp {  // a param the graph assumes the content of, as last read
    at::Tensor tensor;
    ContentAssumption what;
    std::atomic<int64_t> version{0};
    std::atomic<const void*> data{nullptr};
    std::atomic<bool> holds{true};  // what that reading found
  };
  std::vector<std::unique_ptr<ContentStamp>> contentStamps_;
  mutable std::mutex contentMutex_;
  std::shared_ptr<const FoldedParams> folds_;
  std::shared_ptr<DerivedParams> retyped_;
  std::shared_ptr<DerivedParams> merged_;
  passes::MergedLinears mergedLinears_;
  ConvLayoutChoice convLayout_;
  std::vector<int> convEntryInputs_;  // converted to channels-last at the start of a call
  std::shared_ptr<const LayoutConverter> layout_;  // when channels-last
  partition::Partition partition_;
  std::vector<StepRuntime> runtime_;
  std::vector<const partition::FusionGroup*> groups_;  // of kernel k, in partition_.steps
  std::vector<at::Tensor> constantValues_;  // by value id; defined for kConstant/kParam values
  std::vector<int> outputIds_;
  std::vector<ir::Value*> graphInputs_;  // graph().inputs(), which scans the graph: once
  ShapeOnly shapeOnly_;
  std::vector<int> catSlotOf_;  // per value id: index into catSlots_, or -1
  std::vector<CatSlot> catSlots_;
  std::vector<bool> catInPlace_;  // per step
  std::vector<std::string> quantSkipped_;
  int numValues_ = 0;
  EagerRunner eager_;
};

}  // namespace kiln::jit

#pragma once
// Capture: trace a LibTorch module with example inputs and lower the trace to kiln IR.
//
// This is the only part of kiln that sees torch::jit. Everything behind capture() (the tracer, the
// torch::jit::Graph, the lowering table) may be replaced by a dispatcher-level capture later
// (TorchScript is deprecated upstream); callers only see CapturedGraph.
//
// Note [Tracing records one path]
// Capture runs the module once on the example inputs and records the ATen ops that ran. Control
// flow in the module's C++ (or Python, or TorchScript) code that depends on data or on shapes is
// therefore recorded along the path the examples took: an `if (x.size(1) > 128)` or a loop over a
// tensor's values is baked in. Guards (a later issue) re-capture when a guarded assumption changes;
// until then such modules are correct only for inputs that take the same path.
//
// Note [Symbolic dims in captured graphs]
// The caller declares which input dims are dynamic (CaptureOptions::dynamicDims); each becomes a
// graph symbol (s0, s1, ...) and every shape is expressed over them. The C++ tracer records sizes
// as literals (x.size(0) is a plain int64_t), so view/reshape/expand targets are recovered from
// the concrete trace:
//   - reshape/view: input and output dims are grouped where their concrete products agree; a
//     group's symbolic product is divided over the output dims (merges and splits, -1 included),
//     choosing the assignment that keeps single symbols whole.
//   - expand/slice/eager outputs: a literal equal to the example value of a symbolic dim already
//     in the graph is taken to be that dim.
//   - aten::size / aten::Int / int arithmetic, where a trace has them, are followed exactly.
// A size that cannot be proven symbolic stays concrete. Pick example sizes for dynamic dims that
// are >= 2 and distinct from each other and from static dims (batch 3, seq 7 rather than 2 and 2),
// which makes the recovery unambiguous; ambiguous choices are logged. Guards in a later issue
// re-trace when a concrete assumption changes.
//
// Note [Params by reference]
// Parameters, buffers and tensor constants become kParam nodes. CapturedGraph::params holds the
// very at::Tensor objects of the module (same TensorImpl, same storage, no copies), so updating
// a module's weights in place (load_state_dict, optimizer steps, module.to(dtype) which swaps the
// data of the same tensors) is seen by whoever runs the graph.
//
// Note [Tracing in float32]
// CPU LibTorch lacks many float16 kernels, so on a machine without a GPU a float16 model cannot be
// traced. CaptureOptions::retypeTo traces in float32 and rewrites every float32 type in the IR to
// float16/bfloat16 (inputs, params, intermediates, explicit casts to float32 too). The params stay
// the module's own tensors: convert the module (module->to(kHalf)) before running the graph, or
// let Program::build convert them (Note [Precision] in jit/runtime/optimize.h).
// Two kinds of float32 literal follow the retype rather than keep their value:
//   - dtype arguments of eager ops (aten::zeros(..., dtype=float32)) name the retyped dtype, so
//     eager results have the dtypes the IR says;
//   - +-FLT_MAX, in scalar constants and eager arguments, becomes the new dtype's largest finite
//     value: it is torch.finfo(dtype).min/max, the idiom of attention masks, which a module
//     converted by hand computes for its own dtype. Cast as a number, it would become -inf in
//     float16, and a fully masked row of a softmax NaN.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>

#include "src/ir/graph.h"

namespace torch::jit {
struct Graph;
struct Node;
struct Module;
}  // namespace torch::jit
namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace kiln::jit {

// A dim of an input to treat as symbolic. `input` is the input's name ("x"; inputs are named
// by CaptureOptions::inputNames, else "input0", "input1", ...) ; `dim` may be negative. Dims
// with the same `symbol` share one graph symbol; an empty symbol gets a fresh "s<k>".
struct DynamicDim {
  std::string input;
  int64_t dim = 0;
  std::string symbol;
};

struct CaptureOptions {
  std::vector<DynamicDim> dynamicDims;
  // Names for the tensor inputs, in order (defaults "input0", ...).
  std::vector<std::string> inputNames;
  // Note [Tracing in float32]. Only float16 or bfloat16.
  std::optional<ir::DType> retypeTo;
  // With retypeTo: float32 inputs and outputs keep float32 in the graph, with a cast to retypeTo
  // after each input and back to float32 before each output (Note [Precision] in
  // jit/runtime/optimize.h). Without it, inputs and outputs are retyped too.
  bool castAtBoundary = false;
};

// How the module's result maps onto graph outputs.
struct OutputStructure {
  enum class Kind { kTensor, kTuple, kList };
  Kind kind = Kind::kTensor;
  int count = 1;  // number of graph outputs
};

// One kEager node's call: the traced op and how to build its arguments (lower.h).
struct EagerCall;

// Note [Size assumptions]
// A few lowerings are right only while a relation between symbolic sizes holds that eager would
// handle differently otherwise: x[:, :seq] of a fixed buffer clamps when seq exceeds the buffer,
// kiln's slice does not. Capture records each as lhs <= rhs; a plan checks them when it binds the
// symbols, and a call that breaks one runs eagerly (Note [Never worse than eager] in optimize.h).
struct SizeAssumption {
  ir::SymDim lhs;
  ir::SymDim rhs;
  std::string what;  // for explain() and logs
};

// Note [Buffers with known contents]
// Hugging Face's encoders keep their positions and token types in integer buffers: BERT's
// `position_ids` holds arange(512) and its `token_type_ids` zeros, read as
// embedding(W, position_ids[:, :seq]) and embedding(T, gather(token_type_ids.expand(..), 1,
// positions)). As params these ran as eager gather and embedding steps, and the first call paid
// ATen's one-time load of their kernels (the gather alone 20-27 ms of BERT's warm first call on
// an H100, bench/RESULTS.md, 2026-12-07). Capture therefore reads every small integer param
// (kMaxKnownContentNumel elements at most) once: one that holds a single value (a fill) or
// counts up by one in its elements' order (an arange) is known, and the lowering rules may use
// that (Note [Indexing by aranges] in lower_indexing.cpp): a slice of such an arange is an
// arange, a gather from a fill a fill, and an embedding of a fill one row of the table broadcast.
// Each content a rule relied on is recorded as a ContentAssumption; the rest stay plain params.
// Params are bound by reference (Note [Params by reference]), so the assumption is checked where
// the graph meets the tensors: the capture cache's key holds the contents of the module's small
// integer buffers and a loaded entry re-reads the ones it assumes; Program::build re-reads them;
// and every call compares their version counters and data pointers with the last reading (two
// loads each), reads them again when those moved, and runs the call eagerly (Note [Never worse
// than eager] in jit/runtime/optimize.h) when the content did change.
struct ContentAssumption {
  enum class Kind : uint8_t { kFill, kArange };
  std::string param;  // the param's name (CapturedGraph::paramNames)
  Kind kind = Kind::kFill;
  int64_t first = 0;  // the fill value, or the arange's first element
  int64_t numel = 0;
};
inline constexpr int64_t kMaxKnownContentNumel = int64_t{1} << 16;
// What `t` holds when it is an integer tensor of at most kMaxKnownContentNumel elements that are
// all one value or count up by one (in logical order); nullopt otherwise (param left empty).
// Reads the tensor on the host: a CUDA tensor is copied, which synchronizes.
std::optional<ContentAssumption> knownContent(const at::Tensor& t);
// Whether `t` still holds what `a` says.
bool holdsContent(const at::Tensor& t, const ContentAssumption& a);
// "position_ids holds arange(0, 512)" for messages.
std::string describe(const ContentAssumption& a);

struct CapturedGraph {
  CapturedGraph();
  CapturedGraph(CapturedGraph&&) noexcept;
  CapturedGraph& operator=(CapturedGraph&&) noexcept;
  ~CapturedGraph();

  std::unique_ptr<ir::Graph> graph;
  // The (inlined) trace; keeps the nodes that eager steps run alive.
  std::shared_ptr<torch::jit::Graph> traced;
  // Bound by reference (Note [Params by reference]); index = position in graph->params().
  std::vector<at::Tensor> params;
  std::vector<std::string> paramNames;  // "fc1.weight", "const0", ...
  // index = eager_id attr of the kEager node.
  std::vector<torch::jit::Node*> eagerNodes;
  std::vector<std::unique_ptr<EagerCall>> eagerCalls;  // same index
  // The capture report: ops that became kEager ("aten::cumsum"), unique, sorted, and why (same
  // index): no lowering rule, or the reason the rule declined the first such call.
  std::vector<std::string> unsupportedOps;
  std::vector<std::string> unsupportedReasons;
  std::vector<SizeAssumption> assumptions;
  // Note [Buffers with known contents]: the contents of params that the lowering relied on.
  std::vector<ContentAssumption> contents;
  // Concrete values the symbols had in the example inputs (index = symbol id).
  std::vector<int64_t> exampleSymbolValues;
  std::vector<std::string> inputNames;
  OutputStructure outputs;
  // CaptureOptions::retypeTo of the capture (Note [Tracing in float32]): an eager op whose result
  // is float32 where the graph says this dtype (torch.ones() with the default dtype) is cast to it.
  std::optional<ir::DType> retypedTo;

  // "captured 23 ops (2 eager): aten::cumsum x1; symbols: s0=3, s1=7" style summary.
  std::string report() const;
};

// Note [Tracing in float32]: the ATen dtype of a retype target (float16 or bfloat16).
at::ScalarType retypedScalarType(ir::DType to);
// Note [Tracing in float32]: the float32 value `v` as a graph retyped to `to` (at::kHalf or
// at::kBFloat16) holds it: +-FLT_MAX saturates to the largest finite value of `to`, anything else
// is returned as it is (the conversion itself rounds it).
double retypedFloat(double v, at::ScalarType to);

// Traces `module.forward(exampleInputs)`. Inputs must be tensors. The module's parameters and
// buffers (recursively) become kParam; the module is not modified.
CapturedGraph capture(torch::jit::Module& module, const std::vector<c10::IValue>& exampleInputs,
                      const CaptureOptions& options = {});

// C++ frontend: traces `forward(exampleInputs)`, which should call the module (e.g.
// [&](auto in) { return net->forward(in[0].toTensor()); }). The module's parameters and buffers
// become kParam; other tensors the callable touches become params too (as constants).
using ForwardFn = std::function<c10::IValue(const std::vector<c10::IValue>&)>;
CapturedGraph capture(const std::shared_ptr<torch::nn::Module>& module, const ForwardFn& forward,
                      const std::vector<c10::IValue>& exampleInputs,
                      const CaptureOptions& options = {});

// Note [Tracing records one path]: why `module`'s forward cannot be captured as one graph (a
// prim::If or prim::Loop whose condition is not a constant), or nullopt.
std::optional<std::string> controlFlowIn(const torch::jit::Module& module);

// Runs one kEager node with ATen: `inputs` are the node's IR operands (tensors, in order),
// `symbols` the call's symbol values (Note [Run-time scalars] in lower.h); returns one tensor per
// IR output.
std::vector<at::Tensor> runEagerNode(const CapturedGraph& captured, int64_t eagerId,
                                     const std::vector<at::Tensor>& inputs,
                                     const std::vector<int64_t>& symbols);
// Same, reading eager_id from the node; usable as jit::EagerRunner (jit/eval/aten_eval.h).
std::vector<at::Tensor> runEagerNode(const CapturedGraph& captured, const ir::Node& node,
                                     const std::vector<at::Tensor>& inputs,
                                     const std::vector<int64_t>& symbols);

// Whether eager call `eagerId` writes into any of its arguments (its schema is mutable); false for
// kiln's own calls and an id out of range.
bool eagerCallMutates(const CapturedGraph& captured, int64_t eagerId);

// Note [Eager calls in the capture cache]
// A kEager node runs an EagerCall (lower.h), which the IR text cannot hold: an ATen operator, a
// stack template of constants and the slots that fill it per call. encodeEagerCalls writes them
// as bytes: per call the operator's name and overload (the operator is found again by name in
// the registry, and only dispatcher (c10) operators are stored, which need no traced node to
// run), the slots and results as text, and the stack template value by value with its exact
// type (None, bool, int, double by its bits, int/bool/double lists, device, string; a tensor
// constant pickled). nullopt, with the reason in *why, when a call cannot be stored faithfully:
// an operator that is not a c10 operator, or a value of another kind. A capture with such a call
// is traced again in every process, as before.
std::optional<std::string> encodeEagerCalls(const CapturedGraph& captured, std::string* why);
// Fills captured.eagerCalls (eagerNodes become null: no traced graph stands behind them) from
// encodeEagerCalls' bytes, checked against the graph's kEager nodes (ids, operand and stack
// indices). UserError naming what is wrong when the bytes are malformed or do not fit.
void decodeEagerCalls(std::string_view bytes, CapturedGraph& captured);

}  // namespace kiln::jit

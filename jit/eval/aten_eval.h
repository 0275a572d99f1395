#pragma once
// Evaluation of kiln IR with ATen: the eager path of the runtime. Library ops (GEMM, conv, SDPA),
// views and eager nodes always run here; fusion groups run here when their kernel is unavailable
// (no GPU, compile error). Every IR op therefore has an ATen form with PyTorch eager semantics,
// dtype promotion included (Note [Constants are Python scalars]).
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include <ATen/ATen.h>

#include "src/ir/graph.h"

namespace kiln::jit {

// Value of a symbol that no input determines (e.g. one that only a data-dependent eager output
// has). concreteShape rejects shapes that use one.
inline constexpr int64_t kUnboundSymbol = -1;

// Concrete values for the graph's symbols (index = symbol id), inferred from the sizes of the
// input tensors, given in graph.inputs() order. Dims that are a single symbol bind it; dims linear
// in one unbound symbol (2*s0+1) solve for it; every dim is then checked. UserError when the input
// count, an input's rank or a static dim does not match, or a symbol gets two values, naming the
// input ("input 1 (\"mask\"): dim 2: expected 128, got 64 (expected f16[s0, 128], got [2, 64])").
std::vector<int64_t> bindSymbols(const ir::Graph& graph, const std::vector<at::Tensor>& inputs);
// The same with the graph's inputs given (graph.inputs(), which scans the graph; Program keeps it).
std::vector<int64_t> bindSymbols(const ir::Graph& graph, std::span<ir::Value* const> declared,
                                 const std::vector<at::Tensor>& inputs);

// The shape with every dim evaluated. InternalError if a dim uses a symbol without a value.
std::vector<int64_t> concreteShape(const ir::Shape& shape, const std::vector<int64_t>& symbols);
// The same with kUnboundSymbol where a dim uses a symbol without a value.
std::vector<int64_t> partialShape(const ir::Shape& shape, const std::vector<int64_t>& symbols);

// Runs a kEager node (the capture module owns how) on its operands with the call's symbol values;
// returns one tensor per node output.
using EagerRunner = std::function<std::vector<at::Tensor>(
    const ir::Node&, const std::vector<at::Tensor>&, const std::vector<int64_t>& symbols)>;

// Evaluates one node on its operands (one tensor per node input, in order). Operands produced by
// kConstant nodes are wrapped-number tensors (makeScalarOperand); anything else is a plain tensor.
// Returns one tensor per node output; each is checked against the node's declared dtype and shape
// (InternalError on a mismatch: the IR and eager disagree, and a wrong tensor must not escape).
// kInput/kParam nodes are the caller's business (InternalError here); kEager nodes go to runEager
// (InternalError when it is empty). `device`: where a node without operands (kFill) puts its
// result, the device of the call.
std::vector<at::Tensor> evalNode(const ir::Node& node, const std::vector<at::Tensor>& inputs,
                                 const std::vector<int64_t>& symbols, const EagerRunner& runEager,
                                 at::Device device);

// Evaluates the whole graph: inputs in graph.inputs() order, params in graph.params() order (used
// as given, by reference, never copied). Checks input count, dtypes and shapes (UserError naming
// the input) and params likewise. Intermediates are released right after their last use, so peak
// memory is what eager execution of the same graph would hold. Returns graph.outputs() in order.
std::vector<at::Tensor> evalGraph(const ir::Graph& graph, const std::vector<at::Tensor>& inputs,
                                  const std::vector<at::Tensor>& params,
                                  const EagerRunner& runEager = {});

// Note [Constants are Python scalars]
// A kConstant is a rank-0 literal that capture took from a Python number (x * 0.5, x + 1). In eager
// PyTorch such a number becomes a "wrapped number" 0-dim CPU tensor (double, int64 or bool), which
// type promotion ranks below every dimensioned or 0-dim tensor of the same category: f16 * 0.5
// stays f16, i32 + 1 stays i32, i64 * 0.5 becomes the default float. kiln evaluates constants to
// exactly that tensor, so the Tensor overloads of ATen promote as eager did. Where an op has no
// use for a Python scalar (views, reductions, library ops) or all operands are constants, the
// constant is materialized as a real 0-dim tensor of its IR dtype instead.

// The wrapped-number tensor a constant of `dtype` with `value` evaluates to.
at::Tensor makeScalarOperand(double value, ir::DType dtype);
bool isScalarOperand(const at::Tensor& t);

// dtype conversions between kiln IR and ATen. toIrDType: InternalError for a dtype kiln lacks.
at::ScalarType toAtenDType(ir::DType dtype);
ir::DType toIrDType(at::ScalarType type);

// The version counter of `t`, which in-place writes bump; 0 for an inference tensor, which has
// none (_version() throws on it), so writes into those go unseen.
inline int64_t tensorVersion(const at::Tensor& t) {
  return t.is_inference() ? 0 : t._version();
}

}  // namespace kiln::jit

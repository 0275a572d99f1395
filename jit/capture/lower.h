#pragma once
// Internal to jit/capture: lowering a traced torch::jit::Graph to kiln IR.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/stack.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/runtime/operator.h>

#include "jit/capture/capture.h"

namespace kiln::jit {

// Note [Eager calls]
// A kEager node runs the traced op again. Its non-tensor arguments are either constants the trace
// recorded (dtypes, flags, literal dims), kept in stackTemplate, or values the trace computed at
// run time (Note [Run-time scalars]), recomputed for every call from its slots. Tensor operands,
// also inside tensor lists, are filled from the node's IR operands. Outputs that were a tensor list
// unpacked by the trace (split) become one IR output per element.
//
// Note [Run-time scalars]
// Traced models compute many non-tensor arguments from input sizes: view sizes, arange(seq),
// new_ones([batch, seq]), slice ends. Capture follows aten::size, aten::Int, prim::NumToTensor and
// integer arithmetic (on ints and on the 0-dim tensors Python traces make of them) exactly, so such
// a value is a SymDim over the graph's symbols: lowered ops get it as a symbolic shape, and an
// eager op gets it evaluated with the call's symbol values. A value the sizes do not determine (an
// int read from a tensor, aten::Int(mask.sum())) is read from that tensor when the call runs, as
// eager does. Fixing either at its example value would be right for the example shape only.
struct EagerCall {
  // One run-time scalar: a SymDim of the symbols, or the value of a 0-dim tensor operand.
  struct Scalar {
    ir::SymDim sym;
    int operand = -1;  // >= 0: read from this IR operand (a 0-dim tensor) when the call runs
    enum class Type : uint8_t { kInt, kDouble, kBool } type = Type::kInt;
  };
  struct Slot {
    size_t stackIndex = 0;
    enum class Kind : uint8_t {
      kTensor,        // operands[0]
      kTensorList,    // operands
      kOptionalList,  // Tensor?[] (None entries are -1)
      kScalar,        // scalars[0]
      kIntList,       // scalars, each an int
    } kind = Kind::kTensor;
    std::vector<int> operands;  // IR operand indices
    std::vector<Scalar> scalars;
  };
  // The op (mutable: its call operator is non-const); null for kiln's own kiln::sym_scalar
  // (a run-time int as a 0-dim int64 tensor, as prim::NumToTensor makes it).
  mutable torch::jit::Operation op{nullptr};
  std::vector<c10::IValue> stackTemplate;
  std::vector<Slot> slots;
  // The op's results that are IR outputs, by position on its output stack: a tensor, or a tensor
  // list unpacked by the trace (one IR output per element). Unused results are left out.
  std::vector<size_t> results;
  std::string name;      // "aten::cumsum"
  std::string overload;  // the schema's overload name ("dim"), for finding `op` again
};

struct LowerRequest {
  std::shared_ptr<torch::jit::Graph> traced;  // inputs: params first, then the tensor inputs
  std::vector<at::Tensor> params;
  std::vector<std::string> paramNames;
  std::vector<at::Tensor> inputs;
  CaptureOptions options;
  // True for a module's own graph (Note [Capturing TorchScript from its graph]): Python's tracer
  // recorded every size it read as aten::size, so an int literal in a size list is a constant.
  // False for the C++ tracer, which records sizes as literals that may stand for a symbol.
  bool literalsAreConstants = false;
};

// Fills result.graph, params (used ones, in graph order), eager nodes, report, outputs.
void lowerTrace(const LowerRequest& request, CapturedGraph& result);

}  // namespace kiln::jit

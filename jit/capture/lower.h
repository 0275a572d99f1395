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
// A kEager node runs the traced op again with the same non-tensor arguments the trace recorded
// (constants: dims, scalars, dtypes). Tensor operands, also inside tensor lists, are filled from
// the node's IR operands at run time. Outputs that were a tensor list unpacked by the trace
// (split) become one IR output per element.
struct EagerCall {
  struct Slot {
    size_t stackIndex = 0;
    bool isList = false;
    bool optionalElements = false;  // Tensor?[] (None entries are -1)
    std::vector<int> operands;      // IR operand indices
  };
  mutable torch::jit::Operation op{nullptr};  // its call operator is non-const
  std::vector<c10::IValue> stackTemplate;
  std::vector<Slot> slots;
  std::string name;  // "aten::cumsum"
};

struct LowerRequest {
  std::shared_ptr<torch::jit::Graph> traced;  // inputs: params first, then the tensor inputs
  std::vector<at::Tensor> params;
  std::vector<std::string> paramNames;
  std::vector<at::Tensor> inputs;
  CaptureOptions options;
};

// Fills result.graph, params (used ones, in graph order), eager nodes, report, outputs.
void lowerTrace(const LowerRequest& request, CapturedGraph& result);

}  // namespace kiln::jit

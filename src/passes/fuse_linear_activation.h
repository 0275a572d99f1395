#pragma once
// relu(linear(x, w, b)) and gelu_tanh(linear(x, w, b)) become linear(x, w, b) {activation = ...}:
// one cuBLASLt GEMM with the bias and the activation in its epilogue (Note [Library epilogues] in
// jit/eval/aten_eval_ops.cpp), so the GEMM's output is written once and never read back for the
// activation. Only when the linear has a bias and the activation is its only user. Erf gelu is
// left alone: cuBLASLt has no epilogue for it, and the partitioner fuses it into the kiln kernel
// that follows the GEMM instead.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. Replaced nodes are left for eliminateDeadCode.
bool fuseLinearActivation(ir::Graph& graph);

}  // namespace kiln::passes

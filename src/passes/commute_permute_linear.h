#pragma once
// Note [Linear after a permute]
// linear(permute(a, p), w, b), where p leaves the last dim in place, equals
// permute(linear(a, w, b), p): linear maps the last dim and nothing else. ATen's linear takes its
// fused path (one GEMM with the bias in the epilogue) only for a contiguous input; on a permuted
// one it copies the input for the matmul and adds the bias in a second pass over the output.
// nn.MultiheadAttention with batch_first (the encoder block) permutes [b, s, h] to [s, b, h] right
// before its QKV projection: after the rewrite the GEMM reads the contiguous tensor and the permute
// is a view of its output. Exact: the same products and sums, only the layout differs.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. The replaced nodes are left for eliminateDeadCode.
bool commutePermuteLinear(ir::Graph& graph);

}  // namespace kiln::passes

#pragma once
// Activations (and a residual add) that a library call can apply in its own epilogue move into
// it, so the library op's output is written once and never read back by a separate kernel (Note
// [Library epilogues] in jit/eval/aten_eval_ops.cpp):
//   relu(linear(x, w, b)), gelu_tanh(linear(x, w, b))  -> linear(x, w, b) {activation}   cuBLASLt
//   relu(conv2d(x, w[, b]) [+ c] [+ z])                -> conv2d(x, w, b', [z]) {relu}    cuDNN
// c is a per-output-channel term ([C, 1, 1] or [1, C, 1, 1]: the shift a folded batchnorm leaves,
// Note [Folding batchnorm into convolutions]) that becomes the conv's bias b' (only when the conv
// has none), z a tensor of the conv output's shape (a residual). Only when every intermediate is
// read by the next op alone. Erf gelu has no cuBLASLt epilogue: it moves into the linear
//   gelu(linear(x, w, b))  -> linear(x, w, b) {activation = gelu}   kiln's GEMM
// only when `geluEpilogue` says the target runs kiln's own GEMM (Note [Kiln GEMM] in
// codegen/emit_gemm.h), for f16/bf16 with a static K that is a multiple of 8 (TMA's 16-byte row
// strides). Otherwise the partitioner fuses it into the kiln kernel that follows the GEMM.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. Replaced nodes are left for eliminateDeadCode.
bool fuseLibraryEpilogues(ir::Graph& graph, bool geluEpilogue = false);

}  // namespace kiln::passes

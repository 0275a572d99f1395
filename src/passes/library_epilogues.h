#pragma once
// Activations (and a residual add) that a library call can apply in its own epilogue move into
// it, so the library op's output is written once and never read back by a separate kernel (Note
// [Library epilogues] in jit/eval/aten_eval_ops.cpp):
//   relu(linear(x, w, b)), gelu_tanh(linear(x, w, b))  -> linear(x, w, b) {activation}   cuBLASLt
//   relu(conv2d(x, w[, b]) [+ c...] [+ z])             -> conv2d(x, w, b', [z]) {relu}    cuDNN
// (Note [Conv epilogue terms] below). Only when every intermediate is read by the next op
// alone. Erf gelu has no cuBLASLt epilogue: it moves into the linear
//   gelu(linear(x, w, b))  -> linear(x, w, b) {activation = gelu}   kiln's GEMM
// only when `geluEpilogue` says the target runs kiln's own GEMM (Note [Kiln GEMM] in
// codegen/emit_gemm.h), for f16/bf16 with a static K that is a multiple of 8 (TMA's 16-byte row
// strides). Otherwise the partitioner fuses it into the kiln kernel that follows the GEMM.
//
// Note [Conv epilogue terms]
// The terms summed under the relu, through at most four adds: the conv itself, per-output-channel
// terms c ([C, 1, 1] or [1, C, 1, 1]: the shift a folded batchnorm leaves, Note [Folding batchnorm
// into convolutions]) and at most one residual z of the conv output's shape. The conv's bias (if
// any) and every c, each reshaped to [C], are summed into the bias b' (a few [C]-sized adds, in
// 16 bits when the conv is: each sum rounds once more than eager's order would). A ResNet
// downsample block's end, relu((conv3 + s3) + (convd + sd)) after folding, is one conv whose
// residual is the other conv's output and whose bias is s3 + sd. Before, its three adds made it a
// kiln kernel that read both channels-last conv outputs through their strides and wrote a
// contiguous result (Note [Channels-last convolutions]): 0.42 ms of ResNet-50's 2.65 ms at batch
// 32 for the first block alone on an H100 (kiln-real-bench --profile, 2026-12-07).
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. Replaced nodes are left for eliminateDeadCode.
bool fuseLibraryEpilogues(ir::Graph& graph, bool geluEpilogue = false);

}  // namespace kiln::passes

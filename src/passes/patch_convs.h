#pragma once
// Note [Patch convolutions as GEMMs]
// A convolution whose kernel equals its stride (no padding, no dilation, one group, kernel larger
// than 1x1) reads every input pixel once: each output pixel is the dot product of one kh x kw
// patch with each filter. That is a GEMM, and it is how a Vision Transformer embeds its patches
// (ViT-B/16: 16x16, stride 16). The library convolution takes it poorly: on an H100 ViT-B/16's
// patch embedding was one conv of 0.111 ms at batch 1 (kiln-real-bench --profile, 2026-12-07),
// 15% of the whole call, for a 196 x 768 x 768 product. This pass rewrites
//   conv2d(x, w[, b])  ->  permute(reshape(linear(reshape(permute(reshape(x, [N, C, oh, kh, ow,
//                          kw]), [0, 2, 4, 1, 3, 5]), [N*oh*ow, C*kh*kw]), reshape(w, [O,
//                          C*kh*kw])[, b]), [N, oh, ow, O]), [0, 3, 1, 2])
// The input's reshape and the permute are views; the second reshape is the only copy (the
// patches gathered, one pass over x); the weight's reshape is a view of the param. The result is
// [N, O, oh, ow] with the strides of [N, oh, ow, O], which is what a ViT reads next
// (flatten(2).transpose(1, 2): a view of it). Only where H and W are static multiples of the
// kernel, and not for a conv whose result is a graph output (the caller would get strides eager
// does not give) or that already carries an epilogue (activation, residual). Not exact: the GEMM
// accumulates in its own order, as the convolution's algorithm does in its own.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. Replaced nodes are left for eliminateDeadCode.
bool patchConvsAsGemms(ir::Graph& graph);

}  // namespace kiln::passes

#pragma once
// Note [Pointwise ops in channels-last programs]
// In a program whose convolutions run channels-last (Note [Channels-last convolutions] in
// jit/runtime/conv_layout.h), a conv's output is [N, C, H, W] with the strides of [N, H, W, C].
// A kiln kernel over the logical domain [N, C, H, W] reads such a tensor through its strides: along
// the innermost dim W consecutive elements are C apart, so no access is coalesced and the vector
// path is off, and its output is allocated contiguous NCHW, which the next conv has to convert
// back. On an H100 ResNet-50's downsample ends ran that way at 0.42 ms for 0.05 ms worth of traffic
// (bench/RESULTS.md, 2026-12-07; Note [Conv epilogue terms] removed those, but every CNN with
// another activation, a squeeze-and-excitation product or a pre-activation batchnorm has them).
// This pass moves each such pointwise op into the memory order:
//   op(a, b, ...) -> permute(op(permute(a, [0, 2, 3, 1]), ...), [0, 3, 1, 2])
// Operands of lower rank are reshaped to rank 4 first (a view), scalars stay. The operands'
// permutes are views that read the conv outputs contiguously; the result is written contiguous in
// [N, H, W, C], and the permute back is a channels-last view of it, which the next conv reads as it
// is. A permute back that feeds the next rewritten op cancels against that op's permute, so a chain
// of pointwise ops is one kernel over [N, H, W, C]. Only ops with a 4-d result whose operands of
// that full shape are all known channels-last: conv outputs, graph inputs a conv reads (converted
// at the call's entry) and [N, H, W, C] values permuted to [N, C, H, W] (this pass's results, and
// Note [Patch convolutions as GEMMs]'s), which the rewrite reads without the permute; not values of
// [N, C, 1, 1] (pooled), whose layout does not matter. Exact: the same elementwise ops on the same
// elements.
#include <vector>

#include "src/ir/graph.h"

namespace kiln::passes {

// The 4-d graph inputs a conv2d reads directly (its input, or its residual operand 3), once each,
// in the order of the convs: what a channels-last program converts at a call's entry (Note
// [Channels-last convolutions] in jit/runtime/conv_layout.h).
std::vector<const ir::Value*> convEntryInputs(const ir::Graph& graph);

// Returns true if the graph changed. Replaced nodes are left for eliminateDeadCode.
bool channelsLastPointwise(ir::Graph& graph);

}  // namespace kiln::passes

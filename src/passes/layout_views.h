#pragma once
// Layout rewrites of view chains, so that views stay views at run time (issue 9, "Layout").
//
// kiln's IR has logical tensors only; at run time a reshape is a view when the strides allow it
// and a copy otherwise (at::reshape). Model code written for one layout often merges dims, moves
// them, and splits them again, and the merge is then a copy of the whole tensor. Both rules below
// turn a chain into one whose reshapes split before they merge. Every rewrite is exact: it picks
// the same elements in the same order, so results are bitwise equal; only which steps copy can
// change, and never for the worse (Note [Split before merge]).
//
// Note [Split before merge]
// reshape(permute(reshape(x, S1), p), S2), where the inner reshape merges dims that S2 splits
// again, becomes reshape(permute(reshape(x, F), p'), S2) over the common refinement F of x's and
// S1's dims (each dim of either is a run of F's factors; refine() in layout_views.cpp). The inner
// reshape now only splits (always a view) and the outer one only merges runs of factors that were
// merged before too, so it copies only where the old chain did. nn.MultiheadAttention reaches SDPA
// this way: q [s, b, h*d] -> [s, b*h, d] (a copy, b and h are not adjacent in memory) ->
// [b*h, s, d] -> [b, h, s, d]; after the rewrite q is a strided view of the QKV projection.
//
// Note [Linear rows in source order]
// linear maps the last dim and treats every other element as an independent row, so the order
// of its rows is free: linear(reshape(permute(a, p), [rows..., E])) equals the same rows in a's
// order, linear(reshape(permute(a, q), [a's row factors..., E])), permuted back afterwards. q
// keeps a's row factors in a's order and moves E's factors last, in the order E flattens them
// (the weight's layout). When p only moved rows (the permute nn.MultiheadAttention applies to
// batch_first inputs), q is the identity: the GEMM reads a itself and takes ATen's fused
// GEMM+bias path, which needs a contiguous input. When a comes from attention, whose fused kernels
// write [b, s, h, d] and return the [b, h, s, d] view of it, the head merge before the output
// projection becomes a view too. Fires only when the row order changes and the new input reads a
// in its memory order (a's logical order, or [b, s, h, d] for attention's output): otherwise the
// copy would only move, to a tensor of another size.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. Replaced nodes are left for eliminateDeadCode.
bool rewriteLayoutViews(ir::Graph& graph);

}  // namespace kiln::passes

#pragma once
// Canonicalization: rewrites that give equal computations one spelling, so CSE, the partitioner
// and codegen have fewer forms to recognize. Every rewrite here is exact: the result is bitwise
// what the original computed (Note [Exact canonicalization]).
//
// Rules:
//   reshape/expand to the input's own shape, identity permute, cast to the same dtype -> the input
//   mul(x, 1), div(x, 1), sub(x, +0), add(x, -0)                                        -> x
//     only when the result type equals x's type (no broadcast, no promotion). add(x, +0) is kept:
//     it turns -0 into +0.
//   reshape(reshape(x)) -> reshape(x); permute(permute(x)) -> permute(x) with composed perm
//   commutative binary ops (add, mul, eq, ne: ir::isCommutative) put a constant operand on the
//   right negative dims in softmax/log_softmax/cat/permute/reduction attrs become non-negative, and
//   reduction dims are sorted (op_kind.h promises normalized dims)
//
// Note [Composite normalizations] (op_kind.h): softmax, log_softmax and layer_norm are kept as
// single composite ops here, never decomposed into max/sub/exp/sum/div or mean/var/rsqrt. Codegen
// has careful row kernels for them and the partitioner fuses prologues/epilogues around them;
// decomposing would only force later stages to pattern-match them back together. gelu (both forms)
// is likewise a single pointwise op.
//
// Note [Exact canonicalization]
// A pass that silently changes numerics makes every later accuracy bug ambiguous. Rewrites that
// would be "almost" exact (x + 0, x * 0 -> 0, cast(cast(x)), reassociating constants) are not done.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. Nodes made dead are left for eliminateDeadCode.
bool canonicalize(ir::Graph& graph);

}  // namespace kiln::passes

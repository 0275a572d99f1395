#pragma once
// Pointwise ops moved through concatenations and slices, so that what a cat joins is computed
// straight into the cat's buffer.
//
// Note [Pointwise ops through cat]
// Rotary embeddings (Llama, Mistral, Qwen2, GPT-NeoX, ...) compute
//   rotate_half(x) = cat(neg(x[..., h:]), x[..., :h])      out = x * cos + rotate_half(x) * sin
// which runs as a neg kernel, a copy for the cat, and a kernel for the rest: six passes over x's
// size. Three exact rewrites turn it into one cat of two pointwise results, each computed from
// strided views of x, cos and sin; the runtime then has each kernel write its half of the cat's
// buffer (Note [Cats written in place] in jit/runtime/plan.h), two passes in all:
//   R1  op(cat(a_1..a_n, d), y..)  ->  cat(op(a_1, y[part 1]..), .., op(a_n, y[part n]..), d)
//       when the cat is read by that op only, has at most kMaxCatParts parts of one shape, static
//       along d, and every other operand y spans d fully (sliced to each part) or broadcasts
//       along it;
//   R2  slice(op(x, y..), d, o, l)  ->  op(slice(x), slice(y)..)    (step 1; x and y sliced the
//       same way where they span d) when every reader of op's result is such a slice, so nothing
//       is computed twice;
//   R3  slice(cat(a_1..a_n, d), d, o, l)  ->  a_k    when [o, o + l) is exactly part k.
// Each is exact: the same scalar ops on the same elements (Note [Exact canonicalization]). R1 wants
// parts of one shape because those become one kernel (Note [Cat operands in one group] in
// src/partition/partition.cpp); DenseNet's cats of feature maps of different widths, followed by
// batchnorm and relu, would become one kernel per part instead of a copy and one kernel.
#include "src/ir/graph.h"

namespace kiln::passes {

constexpr int kMaxCatParts = 4;

// Returns true if the graph changed. Replaced nodes are left for eliminateDeadCode.
bool splitAtCat(ir::Graph& graph);

}  // namespace kiln::passes

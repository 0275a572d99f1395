#pragma once
// Common-subexpression elimination. Traced graphs repeat work (the same constant per use site, the
// same permute or reshape of a weight in every head, `x.size(0)`-driven views); merging equal nodes
// shrinks kernels and, for views, lets the partitioner see that two consumers read one value.
//
// Two nodes are equal when kind, operands (by identity), attributes and result types are equal.
// Inputs, params and eager nodes are never merged (eager ops may be impure). The first node in
// graph order survives, so the result stays topologically ordered.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed.
bool eliminateCommonSubexpressions(ir::Graph& graph);

}  // namespace kiln::passes

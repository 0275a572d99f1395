#pragma once
// Dead-code elimination. Capture and the other passes leave values nobody reads (folded constants,
// replaced views, traced-but-unused shape arithmetic); removing them keeps the partitioner from
// building kernels whose results are thrown away.
//
// Inputs and params are never removed: they are the graph's calling convention. An eager node is
// kept when it has no outputs or carries `has_side_effects = true` (it exists for what it does, not
// what it returns); every other node whose outputs are unused and not graph outputs goes.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed.
bool eliminateDeadCode(ir::Graph& graph);

}  // namespace kiln::passes

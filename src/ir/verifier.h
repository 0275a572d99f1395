#pragma once
// Checks a graph's invariants; passes and capture run it in tests and debug builds.
//
// Structural problems (node order indices, operands defined after their use or outside the graph,
// use lists out of sync with operands, inputs/params not forming a prefix, undefined graph outputs)
// are kiln bugs: InternalError. Op-level problems (operand count, result count, attributes,
// result types that disagree with shape inference, malformed explicit types of cast/reshape/
// expand/slice/constant) throw UserError, since they usually come from text or capture input.
// Messages name the node ("node 7: %5 = add(...)") and what was expected vs found.
#include "src/ir/graph.h"

namespace kiln::ir {

void verify(const Graph& graph);

}  // namespace kiln::ir

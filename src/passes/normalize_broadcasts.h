#pragma once
// Broadcast normalization: makes broadcasts implicit. Capture often materializes a broadcast as an
// explicit expand (`bias.expand_as(x) + x`, masks expanded to the score shape). Pointwise ops
// broadcast by themselves, so an expand that only feeds such ops is dropped and its users read the
// smaller tensor directly. The partitioner then sees one pointwise cluster whose inputs have
// broadcast strides, instead of a view in the middle, and no kernel reads a materialized copy.
//
// An expand is dropped only when every user is a pointwise op whose result type is unchanged by
// reading the unexpanded input (re-inferred with shape inference), and it is not a graph output.
// Unary pointwise users (and cast) would shrink their result, so they keep the expand.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed.
bool normalizeBroadcasts(ir::Graph& graph);

}  // namespace kiln::passes

#pragma once
// Counting a graph's nodes by kind, for pass tests that check what a rewrite left.
#include "src/ir/graph.h"

namespace kiln::testing {

inline int countOf(const ir::Graph& g, ir::OpKind kind) {
  int n = 0;
  for (const auto& node : g.nodes()) n += node->kind() == kind;
  return n;
}

}  // namespace kiln::testing

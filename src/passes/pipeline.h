#pragma once
// The default pass pipeline run on every captured graph before partitioning.
#include "src/ir/graph.h"

namespace kiln::passes {

// Runs canonicalize, foldConstants, normalizeBroadcasts, eliminateCommonSubexpressions and
// eliminateDeadCode repeatedly until none changes the graph (at most kMaxPipelineRounds rounds;
// each pass only shrinks or normalizes the graph, so this converges in a few rounds in practice),
// then verifies the result (an InternalError there is a pass bug).
// Returns the number of rounds that changed something.
struct PassOptions {
  // Erf gelu after a 16-bit linear moves into the linear (fuseLibraryEpilogues): the target runs
  // kiln's own GEMM (Note [Kiln GEMM] in codegen/emit_gemm.h).
  bool geluGemmEpilogue = false;
};
int runDefaultPasses(ir::Graph& graph, const PassOptions& options = {});

constexpr int kMaxPipelineRounds = 16;

}  // namespace kiln::passes

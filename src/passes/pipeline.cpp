#include "src/passes/pipeline.h"

#include "src/ir/verifier.h"
#include "src/passes/canonicalize.h"
#include "src/passes/eliminate_common_subexpressions.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/passes/fold_constants.h"
#include "src/passes/fuse_attention.h"
#include "src/passes/layout_views.h"
#include "src/passes/library_epilogues.h"
#include "src/passes/normalize_broadcasts.h"
#include "src/passes/patch_convs.h"
#include "src/passes/split_at_cat.h"
#include "src/support/log.h"

namespace kiln::passes {

int runDefaultPasses(ir::Graph& graph, const PassOptions& options) {
  int rounds = 0;
  while (rounds < kMaxPipelineRounds) {
    bool changed = false;
    changed = canonicalize(graph) || changed;
    changed = foldConstants(graph) || changed;
    changed = normalizeBroadcasts(graph) || changed;
    changed = splitAtCat(graph) || changed;
    changed = fuseAttention(graph) || changed;
    changed = additiveAttentionMasks(graph) || changed;
    changed = rewriteLayoutViews(graph) || changed;
    changed = patchConvsAsGemms(graph) || changed;
    changed = fuseLibraryEpilogues(graph, options.geluGemmEpilogue) || changed;
    changed = eliminateCommonSubexpressions(graph) || changed;
    changed = eliminateDeadCode(graph) || changed;
    if (!changed) break;
    ++rounds;
  }
  if (rounds == kMaxPipelineRounds)
    KILN_LOG_DEBUG("pass pipeline stopped after {} rounds without reaching a fixed point", rounds);
  ir::verify(graph);
  return rounds;
}

}  // namespace kiln::passes

#include "src/passes/normalize_broadcasts.h"

#include "src/ir/shape_inference.h"
#include "src/support/error.h"

namespace kiln::passes {

namespace {

bool userKeepsType(const ir::Use& use, ir::Value* replacement) {
  const ir::Node* user = use.user;
  if (user->category() != ir::OpCategory::kPointwise || ir::needsExplicitType(user->kind()))
    return false;
  std::vector<ir::Value*> operands = user->inputs();
  operands[static_cast<size_t>(use.index)] = replacement;
  try {
    return ir::inferType(user->kind(), operands, user->attrs()) == user->output()->type();
  } catch (const UserError&) {
    return false;
  }
}

}  // namespace

bool normalizeBroadcasts(ir::Graph& graph) {
  bool changed = false;
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    ir::Node* node = graph.nodes()[i].get();
    if (node->kind() != ir::OpKind::kExpand) continue;
    ir::Value* out = node->output();
    ir::Value* in = node->input(0);
    if (out->uses().empty() || graph.isGraphOutput(out)) continue;
    // Check each use with the other uses unchanged: an op reading the expand twice, e.g.
    // add(e, e), must keep it (both operands shrinking would shrink the result).
    bool ok = true;
    for (const ir::Use& u : out->uses()) ok = ok && userKeepsType(u, in);
    if (!ok) continue;
    std::vector<ir::Use> uses = out->uses();
    for (const ir::Use& u : uses) {
      u.user->replaceInput(u.index, in);
      // Re-check after rewiring in case the same user had another operand on this expand.
      if (!(ir::inferType(u.user->kind(), u.user->inputs(), u.user->attrs()) ==
            u.user->output()->type())) {
        u.user->replaceInput(u.index, out);
      }
    }
    if (out->uses().empty()) {
      graph.erase(node);
      --i;
    }
    changed = true;
  }
  return changed;
}

}  // namespace kiln::passes

#include "src/passes/fuse_linear_activation.h"

#include <vector>

namespace kiln::passes {

using ir::Node;
using ir::OpKind;

bool fuseLinearActivation(ir::Graph& graph) {
  bool changed = false;
  std::vector<Node*> candidates;
  for (const auto& n : graph.nodes())
    if (n->kind() == OpKind::kRelu || n->kind() == OpKind::kGeluTanh) candidates.push_back(n.get());
  for (Node* act : candidates) {
    Node* linear = act->input(0)->producer();
    if (linear == nullptr || linear->kind() != OpKind::kLinear || linear->inputs().size() != 3 ||
        linear->attrs().has("activation"))
      continue;
    if (linear->output()->uses().size() != 1 || graph.isGraphOutput(linear->output())) continue;
    ir::Attrs attrs = linear->attrs();
    attrs.set("activation", std::string(act->kind() == OpKind::kRelu ? "relu" : "gelu_tanh"));
    Node* fused = graph.insertBefore(act, OpKind::kLinear, linear->inputs(), attrs);
    graph.replaceAllUsesWith(act->output(), fused->output());
    changed = true;
  }
  return changed;
}

}  // namespace kiln::passes

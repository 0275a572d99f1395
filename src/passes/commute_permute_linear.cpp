#include "src/passes/commute_permute_linear.h"

#include <vector>

#include "src/support/error.h"

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Value;

bool commutePermuteLinear(ir::Graph& graph) {
  bool changed = false;
  std::vector<Node*> candidates;
  for (const auto& n : graph.nodes())
    if (n->kind() == OpKind::kLinear) candidates.push_back(n.get());
  for (Node* linear : candidates) {
    const Node* permute = linear->input(0)->producer();
    if (permute == nullptr || permute->kind() != OpKind::kPermute) continue;
    const std::vector<int64_t>& perm = permute->attrs().getInts("perm");
    if (perm.size() < 3 || perm.back() != static_cast<int64_t>(perm.size()) - 1) continue;
    std::vector<Value*> ins = linear->inputs();
    ins[0] = permute->input(0);
    try {
      Node* inner = graph.insertBefore(linear, OpKind::kLinear, ins, linear->attrs());
      Node* outer = graph.insertBefore(linear, OpKind::kPermute, {inner->output()},
                                       ir::Attrs{{"perm", perm}});
      if (outer->output()->type() != linear->output()->type()) {
        graph.erase(outer);
        graph.erase(inner);
        continue;
      }
      graph.replaceAllUsesWith(linear->output(), outer->output());
      changed = true;
    } catch (const UserError&) {
      // Shapes the unpermuted linear does not take: leave it.
    }
  }
  return changed;
}

}  // namespace kiln::passes

#include "src/passes/eliminate_dead_code.h"

namespace kiln::passes {

namespace {
bool removable(const ir::Graph& graph, const ir::Node& node) {
  switch (node.kind()) {
    case ir::OpKind::kInput:
    case ir::OpKind::kParam:
      return false;
    case ir::OpKind::kEager: {
      if (node.outputs().empty()) return false;
      const ir::AttrValue* v = node.attrs().find("has_side_effects");
      if (v != nullptr && std::holds_alternative<bool>(*v) && std::get<bool>(*v)) return false;
      break;
    }
    default:
      break;
  }
  for (const ir::Value* v : node.outputs())
    if (!v->uses().empty() || graph.isGraphOutput(v)) return false;
  return true;
}
}  // namespace

bool eliminateDeadCode(ir::Graph& graph) {
  bool changed = false;
  // Backwards, so a chain of dead nodes goes in one sweep.
  for (size_t i = graph.nodes().size(); i-- > 0;) {
    ir::Node* node = graph.nodes()[i].get();
    if (removable(graph, *node)) {
      graph.erase(node);
      changed = true;
    }
  }
  return changed;
}

}  // namespace kiln::passes

#include "src/passes/eliminate_common_subexpressions.h"

#include <unordered_map>

#include "src/support/hash.h"

namespace kiln::passes {

namespace {

uint64_t nodeHash(const ir::Node& n) {
  uint64_t h = hashCombine(kFnvOffset, static_cast<uint64_t>(n.kind()));
  for (const ir::Value* v : n.inputs()) h = hashCombine(h, static_cast<uint64_t>(v->id()));
  h = hashCombine(h, n.attrs().hash());
  for (const ir::Value* v : n.outputs()) {
    h = hashCombine(h, static_cast<uint64_t>(v->dtype()));
    for (const ir::SymDim& d : v->shape()) h = hashCombine(h, d.hash());
  }
  return h;
}

bool sameNode(const ir::Node& a, const ir::Node& b) {
  if (a.kind() != b.kind() || a.inputs() != b.inputs() || !(a.attrs() == b.attrs()) ||
      a.outputs().size() != b.outputs().size())
    return false;
  for (size_t i = 0; i < a.outputs().size(); ++i)
    if (!(a.outputs()[i]->type() == b.outputs()[i]->type())) return false;
  return true;
}

}  // namespace

bool eliminateCommonSubexpressions(ir::Graph& graph) {
  bool changed = false;
  std::unordered_multimap<uint64_t, ir::Node*> seen;
  for (size_t i = 0; i < graph.nodes().size();) {
    ir::Node* node = graph.nodes()[i].get();
    ir::OpKind k = node->kind();
    if (k == ir::OpKind::kInput || k == ir::OpKind::kParam || k == ir::OpKind::kEager) {
      ++i;
      continue;
    }
    uint64_t h = nodeHash(*node);
    ir::Node* match = nullptr;
    auto [lo, hi] = seen.equal_range(h);
    for (auto it = lo; it != hi && match == nullptr; ++it)
      if (sameNode(*it->second, *node)) match = it->second;
    if (match == nullptr) {
      seen.emplace(h, node);
      ++i;
      continue;
    }
    for (size_t o = 0; o < node->outputs().size(); ++o)
      graph.replaceAllUsesWith(node->outputs()[o], match->outputs()[o]);
    graph.erase(node);  // the node at i is gone; the next one moved into its slot
    changed = true;
  }
  return changed;
}

}  // namespace kiln::passes

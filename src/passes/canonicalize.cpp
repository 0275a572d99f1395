#include "src/passes/canonicalize.h"

#include <algorithm>
#include <cmath>

#include "src/ir/shape_inference.h"

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Value;

namespace {

std::optional<double> constantValue(const Value* v) {
  if (v->producer()->kind() != OpKind::kConstant || v->rank() != 0) return std::nullopt;
  return v->producer()->attrs().getDouble("value");
}

bool isIdentityPerm(const std::vector<int64_t>& perm) {
  for (size_t i = 0; i < perm.size(); ++i)
    if (perm[i] != static_cast<int64_t>(i)) return false;
  return true;
}

// Replaces node's single output by v everywhere; the node becomes dead.
bool forward(ir::Graph& graph, Node* node, Value* v) {
  if (!(node->output()->type() == v->type())) return false;
  if (node->output()->uses().empty() && !graph.isGraphOutput(node->output())) return false;
  graph.replaceAllUsesWith(node->output(), v);
  return true;
}

// The value a binary op returns unchanged, if any (Note [Exact canonicalization]).
Value* binaryIdentity(const Node* n) {
  Value* x = n->input(0);
  std::optional<double> c = constantValue(n->input(1));
  if (!c) return nullptr;
  switch (n->kind()) {
    case OpKind::kMul:
    case OpKind::kDiv:
      return *c == 1.0 ? x : nullptr;
    case OpKind::kSub:
      return *c == 0.0 && !std::signbit(*c) ? x : nullptr;
    case OpKind::kAdd:
      // Integers have no signed zero; for floats only -0 is an exact identity.
      if (*c == 0.0 && (std::signbit(*c) || !ir::isFloating(x->dtype()))) return x;
      return nullptr;
    default:
      return nullptr;
  }
}

bool normalizeDims(Node* n) {
  if (n->inputs().empty()) return false;
  ir::Attrs& attrs = n->mutableAttrs();
  int64_t rank = n->input(0)->rank();
  auto fixInt = [&](const char* name) {
    const ir::AttrValue* v = attrs.find(name);
    if (v == nullptr || !std::holds_alternative<int64_t>(*v)) return false;
    int64_t d = std::get<int64_t>(*v);
    if (d >= 0 || d + rank < 0) return false;
    attrs.set(name, d + rank);
    return true;
  };
  auto fixInts = [&](const char* name, bool sort) {
    const ir::AttrValue* v = attrs.find(name);
    if (v == nullptr || !std::holds_alternative<std::vector<int64_t>>(*v)) return false;
    std::vector<int64_t> dims = std::get<std::vector<int64_t>>(*v);
    for (int64_t& d : dims)
      if (d < 0 && d + rank >= 0) d += rank;
    if (sort) std::sort(dims.begin(), dims.end());
    if (dims == std::get<std::vector<int64_t>>(*v)) return false;
    attrs.set(name, std::move(dims));
    return true;
  };
  switch (n->category()) {
    case ir::OpCategory::kReduction:
      return fixInts("dims", true);
    default:
      break;
  }
  switch (n->kind()) {
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax:
    case OpKind::kCat:
      return fixInt("dim");
    case OpKind::kPermute:
      return fixInts("perm", false);
    default:
      return false;
  }
}

bool rewrite(ir::Graph& graph, Node* n) {
  bool changed = normalizeDims(n);
  switch (n->kind()) {
    case OpKind::kReshape: {
      Value* x = n->input(0);
      if (x->shape() == n->output()->shape()) return forward(graph, n, x) || changed;
      if (x->producer()->kind() == OpKind::kReshape) {
        n->replaceInput(0, x->producer()->input(0));
        return true;
      }
      return changed;
    }
    case OpKind::kExpand:
      if (n->input(0)->shape() == n->output()->shape())
        return forward(graph, n, n->input(0)) || changed;
      return changed;
    case OpKind::kCast:
      if (n->input(0)->dtype() == n->output()->dtype())
        return forward(graph, n, n->input(0)) || changed;
      return changed;
    case OpKind::kPermute: {
      const std::vector<int64_t>& perm = n->attrs().getInts("perm");
      if (isIdentityPerm(perm)) return forward(graph, n, n->input(0)) || changed;
      Node* inner = n->input(0)->producer();
      if (inner->kind() == OpKind::kPermute) {
        // out[i] = mid[perm[i]] = x[innerPerm[perm[i]]]
        std::vector<int64_t> innerPerm = inner->attrs().getInts("perm");
        for (int64_t& d : innerPerm)
          if (d < 0) d += inner->input(0)->rank();
        std::vector<int64_t> composed;
        for (int64_t p : perm) composed.push_back(innerPerm[static_cast<size_t>(p)]);
        n->replaceInput(0, inner->input(0));
        n->mutableAttrs().set("perm", composed);
        return true;
      }
      return changed;
    }
    default:
      break;
  }
  if (n->category() == ir::OpCategory::kPointwise && n->inputs().size() == 2) {
    if (ir::isCommutative(n->kind()) && constantValue(n->input(0)) && !constantValue(n->input(1))) {
      Value* a = n->input(0);
      Value* b = n->input(1);
      n->replaceInput(0, b);
      n->replaceInput(1, a);
      changed = true;
    }
    if (Value* x = binaryIdentity(n)) return forward(graph, n, x) || changed;
  }
  return changed;
}

}  // namespace

bool canonicalize(ir::Graph& graph) {
  bool changed = false;
  for (size_t i = 0; i < graph.nodes().size(); ++i)
    changed = rewrite(graph, graph.nodes()[i].get()) || changed;
  return changed;
}

}  // namespace kiln::passes

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

// Note [Views of generators]: a view (reshape, expand, permute, slice) of a fill or an arange,
// and an integer cast of an arange, is itself a fill or an arange of the view's type, so the
// view leaves the graph and the generator fuses into whatever reads it (an arange viewed as
// [1, S] and as [S, 1] for a causal mask: two aranges, compared in one kernel). An expand only
// when pointwise ops read it (elsewhere the generator would write every expanded element).
// Returns the new generator's value, or nullptr when the view is not one of these or nothing
// reads it.
Value* generatorView(ir::Graph& graph, Node* n) {
  if (n->inputs().size() != 1) return nullptr;
  if (n->output()->uses().empty() && !graph.isGraphOutput(n->output())) return nullptr;
  const Node* g = n->input(0)->producer();
  const OpKind kind = n->kind();
  const bool view = kind == OpKind::kReshape || kind == OpKind::kExpand ||
                    kind == OpKind::kPermute || kind == OpKind::kSlice;
  const ir::TensorType& type = n->output()->type();
  if (kind == OpKind::kExpand) {
    // An expand is free and a generator of its shape writes every element: only where it fuses.
    if (graph.isGraphOutput(n->output())) return nullptr;
    for (const ir::Use& use : n->output()->uses())
      if (use.user->category() != ir::OpCategory::kPointwise) return nullptr;
  }
  if (g->kind() == OpKind::kFill && view)
    return graph.insertBefore(n, OpKind::kFill, {}, g->attrs(), type)->output();
  if (g->kind() != OpKind::kArange) return nullptr;
  if (kind == OpKind::kCast && type.dtype != ir::DType::kInt64 && type.dtype != ir::DType::kInt32)
    return nullptr;
  if (!view && kind != OpKind::kCast) return nullptr;
  const ir::Shape& in = n->input(0)->shape();
  const int64_t dim = g->attrs().getInt("dim");
  int64_t start = g->attrs().getInt("start");
  int64_t step = g->attrs().getInt("step");
  auto fill = [&] {  // an arange of one element along its dim: every element is `start`
    ir::Attrs a;
    a.set("value", static_cast<double>(start));
    return graph.insertBefore(n, OpKind::kFill, {}, std::move(a), type)->output();
  };
  int64_t out = dim;
  switch (kind) {
    case OpKind::kCast:
      break;
    case OpKind::kExpand:
      if (in[static_cast<size_t>(dim)].isOne()) return fill();
      out = dim + static_cast<int64_t>(type.shape.size() - in.size());
      break;
    case OpKind::kPermute: {
      const std::vector<int64_t>& perm = n->attrs().getInts("perm");
      out = std::find(perm.begin(), perm.end(), dim) - perm.begin();
      break;
    }
    case OpKind::kSlice:
      if (n->attrs().getInt("start") < 0 || n->attrs().getInt("step") < 1) return nullptr;
      if (n->attrs().getInt("dim") == dim) {
        start += step * n->attrs().getInt("start");
        step *= n->attrs().getInt("step");
        if (type.shape[static_cast<size_t>(dim)].isOne()) return fill();
      }
      break;
    default: {  // reshape: the arange alone along one dim, before and after
      if (in[static_cast<size_t>(dim)].isOne()) return fill();
      for (size_t i = 0; i < in.size(); ++i)
        if (static_cast<int64_t>(i) != dim && !in[i].isOne()) return nullptr;
      out = -1;
      for (size_t i = 0; i < type.shape.size(); ++i) {
        if (type.shape[i].isOne()) continue;
        if (out >= 0 || type.shape[i] != in[static_cast<size_t>(dim)]) return nullptr;
        out = static_cast<int64_t>(i);
      }
      if (out < 0) return nullptr;
      break;
    }
  }
  ir::Attrs a;
  a.set("start", start);
  a.set("step", step);
  a.set("dim", out);
  return graph.insertBefore(n, OpKind::kArange, {}, std::move(a), type)->output();
}

bool rewrite(ir::Graph& graph, Node* n) {
  bool changed = normalizeDims(n);
  if (Value* g = generatorView(graph, n)) {
    graph.replaceAllUsesWith(n->output(), g);
    return true;
  }
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

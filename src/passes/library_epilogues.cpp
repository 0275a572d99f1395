#include "src/passes/library_epilogues.h"

#include <optional>
#include <vector>

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::Value;

namespace {

bool onlyFeedsNext(const ir::Graph& graph, const Value* v) {
  return v->uses().size() == 1 && !graph.isGraphOutput(v);
}

// What kiln's GEMM takes (Note [Kiln GEMM]): 16-bit operands, K static and a multiple of 8.
bool kilnGemmCan(const Node* linear) {
  const ir::DType dtype = linear->output()->dtype();
  const Shape& w = linear->input(1)->shape();
  return (dtype == ir::DType::kFloat16 || dtype == ir::DType::kBFloat16) && w.size() == 2 &&
         w[1].isConstant() && w[1].constant() % 8 == 0;
}

std::string activationName(OpKind kind) {
  switch (kind) {
    case OpKind::kRelu:
      return "relu";
    case OpKind::kGeluTanh:
      return "gelu_tanh";
    default:
      return "gelu";
  }
}

bool fuseLinear(ir::Graph& graph, Node* act) {
  Node* linear = act->input(0)->producer();
  if (linear == nullptr || linear->kind() != OpKind::kLinear || linear->inputs().size() != 3 ||
      linear->attrs().has("activation") || !onlyFeedsNext(graph, linear->output()))
    return false;
  if (act->kind() == OpKind::kGelu && !kilnGemmCan(linear)) return false;
  ir::Attrs attrs = linear->attrs();
  attrs.set("activation", activationName(act->kind()));
  Node* fused = graph.insertBefore(act, OpKind::kLinear, linear->inputs(), attrs);
  graph.replaceAllUsesWith(act->output(), fused->output());
  return true;
}

// Whether `v` broadcasts over a conv output [N, C, H, W] as a per-channel term with C channels.
bool isChannelTerm(const Value* v, const SymDim& channels) {
  const Shape& s = v->shape();
  if (s.size() == 3) return s[0] == channels && s[1].isOne() && s[2].isOne();
  if (s.size() == 4) return s[0].isOne() && s[1] == channels && s[2].isOne() && s[3].isOne();
  return false;
}

// relu(conv + c... + [z]) over at most four adds, in any order and nesting (Note [Conv epilogue
// terms] in library_epilogues.h).
bool fuseConv(ir::Graph& graph, Node* relu) {
  constexpr int kMaxAdds = 4;
  // The terms summed under the relu, through adds whose results feed only the next op.
  std::vector<Value*> terms;
  std::vector<Value*> pending = {relu->input(0)};
  int adds = 0;
  while (!pending.empty()) {
    Value* v = pending.back();
    pending.pop_back();
    Node* p = v->producer();
    if (p != nullptr && p->kind() == OpKind::kAdd && onlyFeedsNext(graph, v)) {
      if (++adds > kMaxAdds) return false;
      pending.push_back(p->input(0));
      pending.push_back(p->input(1));
    } else {
      terms.push_back(v);
    }
  }
  Node* conv = nullptr;
  for (Value* t : terms) {
    Node* p = t->producer();
    if (p != nullptr && p->kind() == OpKind::kConv2d && !p->attrs().has("activation") &&
        onlyFeedsNext(graph, t)) {
      conv = p;
      break;
    }
  }
  if (conv == nullptr || conv->inputs().size() > 3) return false;
  const Value* out = conv->output();
  std::vector<Value*> channels;
  Value* residual = nullptr;
  for (Value* t : terms) {
    if (t == out) continue;
    if (t->dtype() == out->dtype() && isChannelTerm(t, out->shape()[1])) {
      channels.push_back(t);
    } else if (residual == nullptr && t->type() == out->type()) {
      residual = t;
    } else {
      return false;
    }
  }
  Value* bias = conv->inputs().size() == 3 ? conv->input(2) : nullptr;
  if (bias != nullptr && !channels.empty() && bias->dtype() != out->dtype()) return false;
  // The residual operand comes after a bias operand.
  if (bias == nullptr && channels.empty() && residual != nullptr) return false;
  const ir::TensorType perChannel{out->dtype(), {out->shape()[1]}};
  for (Value* c : channels) {
    Value* v = graph.insertBefore(relu, OpKind::kReshape, {c}, {}, perChannel)->output();
    bias = bias == nullptr
               ? v
               : graph.insertBefore(relu, OpKind::kAdd, {bias, v}, {}, perChannel)->output();
  }
  std::vector<Value*> ins = {conv->input(0), conv->input(1)};
  if (bias != nullptr) ins.push_back(bias);
  if (residual != nullptr) ins.push_back(residual);
  ir::Attrs attrs = conv->attrs();
  attrs.set("activation", std::string("relu"));
  Node* fused = graph.insertBefore(relu, OpKind::kConv2d, ins, attrs);
  graph.replaceAllUsesWith(relu->output(), fused->output());
  return true;
}

}  // namespace

bool fuseLibraryEpilogues(ir::Graph& graph, bool geluEpilogue) {
  bool changed = false;
  std::vector<Node*> candidates;
  for (const auto& n : graph.nodes())
    if (n->kind() == OpKind::kRelu || n->kind() == OpKind::kGeluTanh ||
        (geluEpilogue && n->kind() == OpKind::kGelu))
      candidates.push_back(n.get());
  for (Node* act : candidates) {
    if (fuseLinear(graph, act)) {
      changed = true;
    } else if (act->kind() == OpKind::kRelu && fuseConv(graph, act)) {
      changed = true;
    }
  }
  return changed;
}

}  // namespace kiln::passes

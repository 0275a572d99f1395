#include "jit/runtime/index_views.h"

#include <algorithm>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "jit/capture/lower.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/support/log.h"

namespace kiln::jit {

namespace {

using ir::Node;
using ir::OpKind;
using ir::Value;

// The eager call behind kEager node `n`, or null.
const EagerCall* callOf(const CapturedGraph& captured, const Node* n) {
  if (n == nullptr || n->kind() != OpKind::kEager || !n->attrs().has("eager_id")) return nullptr;
  const int64_t id = n->attrs().getInt("eager_id");
  if (id < 0 || static_cast<size_t>(id) >= captured.eagerCalls.size()) return nullptr;
  return captured.eagerCalls[static_cast<size_t>(id)].get();
}

// The int the call's stack holds at `index` on every call: a constant of the template, or a
// run-time scalar slot whose expression is a constant; else null.
std::optional<int64_t> stackInt(const EagerCall& call, size_t index) {
  for (const EagerCall::Slot& s : call.slots) {
    if (s.stackIndex != index) continue;
    if (s.kind == EagerCall::Slot::Kind::kScalar && s.scalars.size() == 1 &&
        s.scalars[0].operand < 0 && s.scalars[0].type == EagerCall::Scalar::Type::kInt &&
        s.scalars[0].sym.isConstant())
      return s.scalars[0].sym.constant();
    return std::nullopt;
  }
  if (index >= call.stackTemplate.size() || !call.stackTemplate[index].isInt()) return std::nullopt;
  return call.stackTemplate[index].toInt();
}

// `v` is arange(0, n) with step 1 (n its length), possibly reshaped: the arange's length, else
// null.
std::optional<ir::SymDim> identityArange(const CapturedGraph& captured, const Value* v) {
  while (v->producer() != nullptr && v->producer()->kind() == OpKind::kReshape)
    v = v->producer()->input(0);
  const EagerCall* call = callOf(captured, v->producer());
  if (call == nullptr || call->name != "aten::arange" || v->rank() != 1 ||
      (v->dtype() != ir::DType::kInt64 && v->dtype() != ir::DType::kInt32))
    return std::nullopt;
  // arange(end, ...), arange.start(start, end, ...), arange.start_step(start, end, step, ...).
  if (call->overload == "start" || call->overload == "start_step") {
    if (stackInt(*call, 0) != 0) return std::nullopt;
    if (call->overload == "start_step" && stackInt(*call, 2) != 1) return std::nullopt;
  } else if (!call->overload.empty()) {
    return std::nullopt;
  }
  return v->shape()[0];
}

// The one dim of `shape` that is not the constant 1, or null.
std::optional<size_t> onlyDim(const ir::Shape& shape) {
  std::optional<size_t> d;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i].isOne()) continue;
    if (d) return std::nullopt;
    d = i;
  }
  return d;
}

// Rewrites one aten::index node; else why it is not the pattern of the note.
std::optional<std::string> rewrite(CapturedGraph& captured, Node* n) {
  const EagerCall* call = callOf(captured, n);
  if (n->outputs().size() != 1) return "more than one output";
  const EagerCall::Slot* self = nullptr;
  const EagerCall::Slot* list = nullptr;
  for (const EagerCall::Slot& s : call->slots) {
    if (s.stackIndex == 0 && s.kind == EagerCall::Slot::Kind::kTensor) self = &s;
    if (s.stackIndex == 1 && (s.kind == EagerCall::Slot::Kind::kOptionalList ||
                              s.kind == EagerCall::Slot::Kind::kTensorList))
      list = &s;
  }
  if (self == nullptr || list == nullptr || self->operands.size() != 1)
    return "not index(Tensor, Tensor?[]) as kiln records it";
  Value* x = n->input(static_cast<size_t>(self->operands[0]));
  const Value* out = n->output();
  const size_t k = list->operands.size();
  if (k == 0 || static_cast<int64_t>(k) != x->rank() || out->dtype() != x->dtype())
    return "not every dim of x is indexed";
  const int64_t rank = out->rank();
  std::vector<size_t> position(k);  // d_j of the note
  std::vector<bool> taken(static_cast<size_t>(rank), false);
  for (size_t j = 0; j < k; ++j) {
    if (list->operands[j] < 0) return "a None in the index list";
    const Value* idx = n->input(static_cast<size_t>(list->operands[j]));
    const std::optional<ir::SymDim> length = identityArange(captured, idx);
    const std::optional<size_t> d = onlyDim(idx->shape());
    if (!length) {
      const Value* a = idx;
      while (a->producer() != nullptr && a->producer()->kind() == OpKind::kReshape)
        a = a->producer()->input(0);
      const EagerCall* c = callOf(captured, a->producer());
      return fmt::format(
          "index {} is not a reshaped arange(0, n){}", j,
          c == nullptr ? std::string() : fmt::format(" ({}.{})", c->name, c->overload));
    }
    if (!d || idx->rank() != rank || !(*length == x->shape()[j]) ||
        !(idx->shape()[*d] == x->shape()[j]) || taken[*d])
      return fmt::format("index {} does not span dim {} of x alone", j, j);
    taken[*d] = true;
    position[j] = *d;
  }
  for (int64_t i = 0; i < rank; ++i) {
    const ir::SymDim& s = out->shape()[static_cast<size_t>(i)];
    const auto j = std::find(position.begin(), position.end(), static_cast<size_t>(i));
    if (j == position.end() ? !s.isOne()
                            : !(s == x->shape()[static_cast<size_t>(j - position.begin())]))
      return "the output's shape is not x's dims in the index positions";
  }
  ir::Graph& g = *captured.graph;
  // x's dims in the order they take in the output.
  std::vector<int64_t> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return position[static_cast<size_t>(a)] < position[static_cast<size_t>(b)];
  });
  Value* v = x;
  if (!std::is_sorted(position.begin(), position.end()))
    v = g.insertBefore(n, OpKind::kPermute, {v}, {{"perm", order}})->output();
  Value* view = g.insertBefore(n, OpKind::kReshape, {v}, {}, out->type())->output();
  g.replaceAllUsesWith(n->output(), view);
  return std::nullopt;
}

}  // namespace

int indexByArangesToViews(CapturedGraph& captured) {
  if (captured.graph == nullptr) return 0;
  std::vector<Node*> candidates;
  for (const auto& n : captured.graph->nodes())
    if (n->kind() == OpKind::kEager) candidates.push_back(n.get());
  int rewritten = 0;
  for (Node* n : candidates) {
    const EagerCall* call = callOf(captured, n);
    if (call == nullptr || call->name != "aten::index") continue;
    if (std::optional<std::string> why = rewrite(captured, n))
      KILN_LOG_DEBUG("kiln: aten::index %{} stays eager: {}", n->output()->id(), *why);
    else
      ++rewritten;
  }
  if (rewritten == 0) return 0;
  passes::eliminateDeadCode(*captured.graph);  // the index nodes, and aranges no one else reads
  // The report (unsupportedOps and its reasons, same index) lists an op as eager only while a
  // node still runs it.
  std::vector<std::string> ops, reasons;
  for (size_t i = 0; i < captured.unsupportedOps.size(); ++i) {
    const std::string& op = captured.unsupportedOps[i];
    const bool left = std::any_of(captured.graph->nodes().begin(), captured.graph->nodes().end(),
                                  [&](const auto& n) {
                                    const EagerCall* c = callOf(captured, n.get());
                                    return c != nullptr && c->name == op;
                                  });
    if (!left) continue;
    ops.push_back(op);
    if (i < captured.unsupportedReasons.size()) reasons.push_back(captured.unsupportedReasons[i]);
  }
  captured.unsupportedOps = std::move(ops);
  captured.unsupportedReasons = std::move(reasons);
  KILN_LOG_DEBUG("kiln: {} index op(s) by aranges became views", rewritten);
  return rewritten;
}

}  // namespace kiln::jit

#include "src/ir/verifier.h"

#include <algorithm>
#include <unordered_set>

#include "src/ir/printer.h"
#include "src/ir/shape_inference.h"
#include "src/support/error.h"

namespace kiln::ir {

namespace {

class Verifier {
 public:
  explicit Verifier(const Graph& g) : g_(g) {}

  void run() {
    const auto& nodes = g_.nodes();
    bool pastBoundary = false;
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node* n = nodes[i].get();
      if (n->index() != static_cast<int>(i))
        structural(*n, fmt::format("index() is {}, but the node is at position {}", n->index(), i));
      bool boundary = n->kind() == OpKind::kInput || n->kind() == OpKind::kParam;
      if (boundary && pastBoundary)
        structural(*n, "inputs and params must precede all other nodes");
      pastBoundary = pastBoundary || !boundary;
      for (size_t j = 0; j < n->inputs().size(); ++j) {
        const Value* v = n->inputs()[j];
        if (v == nullptr) structural(*n, fmt::format("operand {} is null", j));
        if (!defined_.count(v))
          structural(*n, fmt::format("operand {} (%{}) is not defined before its use", j, v->id()));
        if (std::count(v->uses().begin(), v->uses().end(),
                       Use{const_cast<Node*>(n), static_cast<int>(j)}) != 1)
          structural(*n, fmt::format("use list of operand {} does not record this use once", j));
      }
      for (const Value* v : n->outputs()) {
        if (v->producer() != n)
          structural(*n, fmt::format("output %{} has another producer", v->id()));
        defined_.insert(v);
      }
    }
    // Every recorded use must be a real operand slot.
    for (const auto& n : nodes) {
      for (const Value* v : n->outputs()) {
        for (const Use& u : v->uses()) {
          bool ok = u.user != nullptr && u.user->index() >= 0 &&
                    static_cast<size_t>(u.user->index()) < nodes.size() &&
                    nodes[static_cast<size_t>(u.user->index())].get() == u.user && u.index >= 0 &&
                    static_cast<size_t>(u.index) < u.user->inputs().size() &&
                    u.user->inputs()[static_cast<size_t>(u.index)] == v;
          if (!ok)
            structural(*n,
                       fmt::format("output %{} has a stale use (operand {})", v->id(), u.index));
        }
      }
    }
    for (size_t i = 0; i < g_.outputs().size(); ++i)
      if (!defined_.count(g_.outputs()[i]))
        throw InternalError(fmt::format("verify: graph output {} is not defined by a node", i));

    names_.emplace(g_);
    for (const auto& n : nodes) checkOp(*n);
  }

 private:
  std::string describe(const Node& n) const {
    if (names_) return fmt::format("node {}: {}", n.index(), printNode(g_, *names_, n));
    return fmt::format("node {} ({})", n.index(), toString(n.kind()));
  }
  [[noreturn]] void structural(const Node& n, const std::string& msg) const {
    throw InternalError(fmt::format("verify: {}: {}", describe(n), msg));
  }
  [[noreturn]] void bad(const Node& n, const std::string& msg) const {
    throw UserError(fmt::format("verify: {}: {}", describe(n), msg));
  }

  void checkOp(const Node& n) {
    Arity a = arityOf(n.kind());
    int count = static_cast<int>(n.inputs().size());
    if (count < a.min || (a.max >= 0 && count > a.max))
      bad(n, fmt::format("{} takes {}..{} operands, got {}", toString(n.kind()), a.min,
                         a.max < 0 ? std::string("n") : std::to_string(a.max), count));
    if (n.kind() != OpKind::kEager && n.outputs().size() != 1)
      bad(n, fmt::format("expected 1 result, got {}", n.outputs().size()));
    if (n.kind() == OpKind::kLinear) {
      if (const AttrValue* act = n.attrs().find("activation")) {
        const auto* name = std::get_if<std::string>(act);
        if (name == nullptr || (*name != "relu" && *name != "gelu_tanh" && *name != "gelu"))
          bad(n, "attribute 'activation' must be \"relu\", \"gelu_tanh\" or \"gelu\"");
        if (n.inputs().size() != 3) bad(n, "an activation needs the bias operand");
      }
    }
    if (n.kind() == OpKind::kConv2d) {
      const AttrValue* act = n.attrs().find("activation");
      if (act != nullptr) {
        const auto* name = std::get_if<std::string>(act);
        if (name == nullptr || *name != "relu") bad(n, "attribute 'activation' must be \"relu\"");
      }
      if (n.inputs().size() == 4 && act == nullptr)
        bad(n, "a residual operand needs an activation");
    }
    if (!needsExplicitType(n.kind())) {
      TensorType inferred;
      try {
        inferred = inferType(n.kind(), n.inputs(), n.attrs());
      } catch (const UserError& e) {
        bad(n, e.what());
      }
      if (!(inferred == n.output()->type()))
        bad(n, fmt::format("result type is {}, but shape inference gives {}",
                           printType(g_, n.output()->type()), printType(g_, inferred)));
      return;
    }
    const Attrs& at = n.attrs();
    auto requireAttr = [&](std::string_view name, size_t index, const char* type) {
      const AttrValue* v = at.find(name);
      if (v == nullptr || v->index() != index)
        bad(n, fmt::format("needs a {} attribute '{}'", type, name));
    };
    if (n.kind() == OpKind::kEager) {
      requireAttr("schema", 3, "string");
      return;
    }
    const TensorType& out = n.output()->type();
    switch (n.kind()) {
      case OpKind::kInput:
        requireAttr("name", 3, "string");
        requireAttr("index", 1, "int");
        return;
      case OpKind::kParam:
        requireAttr("name", 3, "string");
        return;
      case OpKind::kConstant: {
        const AttrValue* v = at.find("value");
        if (v == nullptr ||
            !(std::holds_alternative<double>(*v) || std::holds_alternative<int64_t>(*v)))
          bad(n, "needs a numeric attribute 'value'");
        if (out.rank() != 0)
          bad(n, fmt::format("constants are rank 0, got {}", printType(g_, out)));
        return;
      }
      case OpKind::kFill: {
        const AttrValue* v = at.find("value");
        if (v == nullptr ||
            !(std::holds_alternative<double>(*v) || std::holds_alternative<int64_t>(*v)))
          bad(n, "needs a numeric attribute 'value'");
        return;
      }
      case OpKind::kArange: {
        requireAttr("start", 1, "int");
        requireAttr("step", 1, "int");
        requireAttr("dim", 1, "int");
        const int64_t dim = at.getInt("dim");
        if (dim < 0 || dim >= static_cast<int64_t>(out.shape.size()))
          bad(n, fmt::format("dim {} out of range for {}", dim, printType(g_, out)));
        if (out.dtype != DType::kInt64 && out.dtype != DType::kInt32)
          bad(n, "an arange is int64 or int32");
        return;
      }
      case OpKind::kCast:
        if (n.input(0)->shape() != out.shape)
          bad(n, fmt::format("cast must keep the shape {}", printType(g_, n.input(0)->type())));
        return;
      case OpKind::kReshape:
        if (n.input(0)->dtype() != out.dtype) bad(n, "reshape must keep the dtype");
        if (numel(n.input(0)->shape()) != numel(out.shape))
          bad(n, fmt::format("reshape from {} to {} changes the element count ({} vs {})",
                             printType(g_, n.input(0)->type()), printType(g_, out),
                             printDim(g_, numel(n.input(0)->shape())),
                             printDim(g_, numel(out.shape))));
        return;
      case OpKind::kExpand:
        if (n.input(0)->dtype() != out.dtype) bad(n, "expand must keep the dtype");
        if (!broadcastsTo(n.input(0)->shape(), out.shape))
          bad(n, fmt::format("cannot expand {} to {}", printType(g_, n.input(0)->type()),
                             printType(g_, out)));
        return;
      case OpKind::kSlice: {
        requireAttr("dim", 1, "int");
        requireAttr("start", 1, "int");
        requireAttr("step", 1, "int");
        const Shape& in = n.input(0)->shape();
        if (n.input(0)->dtype() != out.dtype) bad(n, "slice must keep the dtype");
        if (in.size() != out.shape.size()) bad(n, "slice must keep the rank");
        int64_t dim = at.getInt("dim");
        if (dim < 0 || dim >= static_cast<int64_t>(in.size()))
          bad(n, fmt::format("dim {} out of range for rank {}", dim, in.size()));
        int64_t start = at.getInt("start"), step = at.getInt("step");
        if (step < 1 || start < 0) bad(n, "needs start >= 0 and step >= 1");
        for (size_t i = 0; i < in.size(); ++i) {
          if (static_cast<int64_t>(i) == dim) continue;
          if (in[i] != out.shape[i])
            bad(n, fmt::format("slice changes dim {} ({} vs {})", i, printDim(g_, in[i]),
                               printDim(g_, out.shape[i])));
        }
        const SymDim& len = out.shape[static_cast<size_t>(dim)];
        const SymDim& full = in[static_cast<size_t>(dim)];
        if (len.isConstant() && full.isConstant() && len.constant() > 0 &&
            start + (len.constant() - 1) * step >= full.constant())
          bad(n, fmt::format("slice of {} elements from {} step {} exceeds dim size {}",
                             len.constant(), start, step, full.constant()));
        return;
      }
      default:
        return;
    }
  }

  const Graph& g_;
  std::unordered_set<const Value*> defined_;
  std::optional<ValueNames> names_;
};

}  // namespace

void verify(const Graph& graph) {
  Verifier(graph).run();
}

}  // namespace kiln::ir

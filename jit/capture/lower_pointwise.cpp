// Lowering rules for elementwise ops (Note [Lowering table] in lower_rules.h).
#include <string>
#include <utility>

#include "jit/capture/lower_rules.h"
#include "jit/capture/lowerer.h"

namespace kiln::jit {
namespace {

namespace tj = torch::jit;
using ir::Attrs;
using ir::OpKind;

// Ops that are one IR op of the same operands (binary ones when called with two).
struct Elementwise {
  const char* name;
  OpKind kind;
  bool binary;
};
constexpr Elementwise kElementwise[] = {
    {"aten::neg", OpKind::kNeg, false},        {"aten::abs", OpKind::kAbs, false},
    {"aten::exp", OpKind::kExp, false},        {"aten::log", OpKind::kLog, false},
    {"aten::sqrt", OpKind::kSqrt, false},      {"aten::rsqrt", OpKind::kRsqrt, false},
    {"aten::tanh", OpKind::kTanh, false},      {"aten::sigmoid", OpKind::kSigmoid, false},
    {"aten::relu", OpKind::kRelu, false},      {"aten::silu", OpKind::kSilu, false},
    {"aten::erf", OpKind::kErf, false},        {"aten::mul", OpKind::kMul, true},
    {"aten::maximum", OpKind::kMaximum, true}, {"aten::minimum", OpKind::kMinimum, true},
    {"aten::eq", OpKind::kEq, true},           {"aten::ne", OpKind::kNe, true},
    {"aten::lt", OpKind::kLt, true},           {"aten::le", OpKind::kLe, true},
    {"aten::gt", OpKind::kGt, true},           {"aten::ge", OpKind::kGe, true},
    {"aten::sin", OpKind::kSin, false},        {"aten::cos", OpKind::kCos, false},
};

LoweringRule unary(OpKind kind) {
  return [kind](Lowerer& l, const tj::Node* n) { return l.emit(kind, {l.operand(n, 0)}); };
}

LoweringRule binary(OpKind kind) {
  const bool compares = kind == OpKind::kEq || kind == OpKind::kNe || kind == OpKind::kLt ||
                        kind == OpKind::kLe || kind == OpKind::kGt || kind == OpKind::kGe;
  return [kind, compares](Lowerer& l, const tj::Node* n) -> ir::Value* {
    if (n->inputs().size() != 2) return nullptr;
    if (compares)
      if (ir::Value* decided = comparisonOfArange(l, n, kind)) return decided;
    return l.emit(kind, {l.operand(n, 0), l.operand(n, 1)});
  };
}

// contiguous, clone, detach, ... and dropout in eval mode: the input itself.
LoweringRule identity(bool dropout) {
  return [dropout](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    if (dropout && in.size() >= 3 && l.boolArg(in[2]))
      throw NotLowerable{"dropout in training mode"};
    return l.operand(n, 0);
  };
}

ir::Value* cast(Lowerer& l, const tj::Node* n) {
  return l.castTo(l.operand(n, 0), l.tracedDType(n->outputs()[0]));
}

// add/sub: a op alpha*b; rsub: b - alpha*a.
LoweringRule addSub(OpKind kind, bool reversed) {
  return [kind, reversed](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    ir::Value* a = reversed ? l.operand(n, 1) : l.operand(n, 0);
    ir::Value* b = reversed ? l.operand(n, 0) : l.operand(n, 1);
    if (in.size() >= 3 && l.doubleArg(in[2]) != 1.0)
      b = l.emit(OpKind::kMul, {b, l.constant(*l.constIValue(in[2]))});
    return l.emit(kind, {a, b});
  };
}

ir::Value* divide(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  if (in.size() == 3 && !l.isNone(in[2])) throw NotLowerable{"div with rounding_mode"};
  return l.emit(OpKind::kDiv, {l.operand(n, 0), l.operand(n, 1)});
}

ir::Value* power(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  if (in[1]->node()->kind() == c10::prim::Constant && !l.constIValue(in[1])->isTensor() &&
      isTensorValue(in[0])) {
    return l.emit(OpKind::kPowScalar, {l.operand(n, 0)}, {{"exponent", l.doubleArg(in[1])}});
  }
  return l.emit(OpKind::kPow, {l.operand(n, 0), l.operand(n, 1)});
}

ir::Value* gelu(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  std::string approx = "none";
  if (in.size() >= 2) {
    auto iv = l.constIValue(in[1]);
    if (iv && iv->isString()) approx = iv->toStringRef();
  }
  if (approx == "tanh") return l.emit(OpKind::kGeluTanh, {l.operand(n, 0)});
  if (approx != "none") throw NotLowerable{"gelu approximate=" + approx};
  return l.emit(OpKind::kGelu, {l.operand(n, 0)});
}

// clamp(x, min, max), clamp_min(x, min), clamp_max(x, max): `bounds` names the attrs of the
// arguments after x. Scalar bounds only.
LoweringRule clamp(std::vector<const char*> bounds) {
  return [bounds = std::move(bounds)](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    Attrs attrs;
    for (size_t i = 1; i <= bounds.size(); ++i) {
      if (i >= in.size() || l.isNone(in[i])) continue;
      if (isTensorValue(in[i])) throw NotLowerable{"clamp with tensor bounds"};
      attrs.set(bounds[i - 1], l.doubleArg(in[i]));
    }
    return l.emit(OpKind::kClamp, {l.operand(n, 0)}, std::move(attrs));
  };
}

// a & b and a | b (and their logical_ and bitwise_ spellings) on bool tensors: minimum and maximum,
// which have the same truth tables (HF attention masks combine theirs so). On integers they are
// bitwise ops, which stay eager.
LoweringRule boolean(OpKind kind) {
  return [kind](Lowerer& l, const tj::Node* n) -> ir::Value* {
    if (n->inputs().size() != 2) return nullptr;
    ir::Value* a = l.operand(n, 0);
    ir::Value* b = l.operand(n, 1);
    if (a->dtype() != ir::DType::kBool || b->dtype() != ir::DType::kBool)
      throw NotLowerable{"a bitwise op on tensors that are not bool"};
    return l.emit(kind, {a, b});
  };
}

ir::Value* where(Lowerer& l, const tj::Node* n) {
  if (n->inputs().size() != 3) return nullptr;
  return l.emit(OpKind::kWhere, {l.operand(n, 0), l.operand(n, 1), l.operand(n, 2)});
}

// masked_fill(x, mask, value) = where(mask, value, x).
ir::Value* maskedFill(Lowerer& l, const tj::Node* n) {
  if (n->inputs().size() != 3) return nullptr;
  return l.emit(OpKind::kWhere, {l.operand(n, 1), l.operand(n, 2), l.operand(n, 0)});
}

// hardsigmoid(x) = min(max(x + 3, 0), 6) / 6 and hardswish(x) = x * that, in ATen's order of
// operations (MobileNetV3, LeViT); relu6 and hardtanh(x, lo, hi) are clamps.
ir::Value* hardSigmoidOf(Lowerer& l, ir::Value* x) {
  ir::Value* shifted = l.emit(OpKind::kAdd, {x, l.constant(c10::IValue(3.0))});
  return l.emit(OpKind::kClamp, {shifted}, {{"min", 0.0}, {"max", 6.0}});
}

ir::Value* hardSigmoid(Lowerer& l, const tj::Node* n) {
  return l.emit(OpKind::kDiv, {hardSigmoidOf(l, l.operand(n, 0)), l.constant(c10::IValue(6.0))});
}

ir::Value* hardSwish(Lowerer& l, const tj::Node* n) {
  ir::Value* x = l.operand(n, 0);
  ir::Value* scaled = l.emit(OpKind::kMul, {x, hardSigmoidOf(l, x)});
  return l.emit(OpKind::kDiv, {scaled, l.constant(c10::IValue(6.0))});
}

ir::Value* hardTanh(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  const double lo = in.size() >= 2 ? l.doubleArg(in[1]) : -1.0;
  const double hi = in.size() >= 3 ? l.doubleArg(in[2]) : 1.0;
  return l.emit(OpKind::kClamp, {l.operand(n, 0)}, {{"min", lo}, {"max", hi}});
}

ir::Value* relu6(Lowerer& l, const tj::Node* n) {
  return l.emit(OpKind::kClamp, {l.operand(n, 0)}, {{"min", 0.0}, {"max", 6.0}});
}

// reciprocal(x) = 1 / x (XLNet); ATen computes 1 / x too.
ir::Value* reciprocal(Lowerer& l, const tj::Node* n) {
  return l.emit(OpKind::kDiv, {l.constant(c10::IValue(1.0)), l.operand(n, 0)});
}

// min(a, b) / max(a, b) of two tensors (min.other, max.other: T5's relative position buckets);
// the one-tensor forms reduce and stay eager.
LoweringRule minMaxOther(OpKind kind) {
  return [kind](Lowerer& l, const tj::Node* n) -> ir::Value* {
    if (n->inputs().size() != 2 || n->outputs().size() != 1 || !isTensorValue(n->inputs()[1]))
      return nullptr;
    return l.emit(kind, {l.operand(n, 0), l.operand(n, 1)});
  };
}

// logical_not(x) = (x == 0), and bitwise_not on bool tensors, its only case that is logical
// (DeBERTa's masks); ~ on integers stays eager.
LoweringRule logicalNot(bool bitwise) {
  return [bitwise](Lowerer& l, const tj::Node* n) -> ir::Value* {
    ir::Value* x = l.operand(n, 0);
    if (bitwise && x->dtype() != ir::DType::kBool)
      throw NotLowerable{"bitwise_not of a tensor that is not bool"};
    return l.emit(OpKind::kEq, {x, l.constant(c10::IValue(false))});
  };
}

}  // namespace

void addPointwiseRules(LoweringTable& table) {
  for (const Elementwise& op : kElementwise)
    table.add(op.name, op.binary ? binary(op.kind) : unary(op.kind));
  for (const char* name :
       {"aten::contiguous", "aten::clone", "aten::detach", "aten::alias", "aten::lift_fresh"})
    table.add(name, identity(/*dropout=*/false));
  for (const char* name : {"aten::dropout", "aten::feature_dropout", "aten::alpha_dropout"})
    table.add(name, identity(/*dropout=*/true));
  for (const char* name :
       {"aten::to", "aten::type_as", "aten::_to_copy", "aten::_cast_Float", "aten::_cast_Half"})
    table.add(name, cast);
  for (const char* name : {"aten::__and__", "aten::bitwise_and", "aten::logical_and"})
    table.add(name, boolean(OpKind::kMinimum));
  for (const char* name : {"aten::__or__", "aten::bitwise_or", "aten::logical_or"})
    table.add(name, boolean(OpKind::kMaximum));
  table.add("aten::add", addSub(OpKind::kAdd, /*reversed=*/false));
  table.add("aten::sub", addSub(OpKind::kSub, /*reversed=*/false));
  table.add("aten::rsub", addSub(OpKind::kSub, /*reversed=*/true));
  table.add("aten::div", divide);
  table.add("aten::pow", power);
  table.add("aten::gelu", gelu);
  table.add("aten::clamp", clamp({"min", "max"}));
  table.add("aten::clamp_min", clamp({"min"}));
  table.add("aten::clamp_max", clamp({"max"}));
  table.add("aten::where", where);
  table.add("aten::masked_fill", maskedFill);
  table.add("aten::hardsigmoid", hardSigmoid);
  table.add("aten::hardswish", hardSwish);
  table.add("aten::hardtanh", hardTanh);
  table.add("aten::relu6", relu6);
  table.add("aten::reciprocal", reciprocal);
  table.add("aten::min", minMaxOther(OpKind::kMinimum));
  table.add("aten::max", minMaxOther(OpKind::kMaximum));
  table.add("aten::logical_not", logicalNot(/*bitwise=*/false));
  table.add("aten::bitwise_not", logicalNot(/*bitwise=*/true));
}

}  // namespace kiln::jit

#include "src/passes/fold_constants.h"

#include <cmath>
#include <limits>
#include <optional>

namespace kiln::passes {

using ir::DType;
using ir::OpKind;

namespace {

// Rounds a finite float to `bits` significant bits with minimum normal exponent `minExp`
// (frexp convention), RNE. Overflow past maxFinite rounds to infinity.
float roundSignificand(float f, int bits, int minExp, float overflowAt) {
  if (!std::isfinite(f) || f == 0.0f) return f;
  float a = std::fabs(f);
  if (a >= overflowAt) return std::copysign(std::numeric_limits<float>::infinity(), f);
  int e;
  std::frexp(a, &e);
  if (e < minExp) e = minExp;  // subnormal: fixed quantum
  float q = std::ldexp(1.0f, e - bits);
  return std::copysign(std::nearbyint(a / q) * q, f);
}

bool isIntegral(DType d) {
  return d == DType::kInt32 || d == DType::kInt64;
}

}  // namespace

double roundToDType(double v, DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return v != 0.0 ? 1.0 : 0.0;
    case DType::kInt32:
      return static_cast<double>(static_cast<int32_t>(static_cast<int64_t>(std::trunc(v))));
    case DType::kInt64:
      return static_cast<double>(static_cast<int64_t>(std::trunc(v)));
    case DType::kFloat32:
      return static_cast<double>(static_cast<float>(v));
    case DType::kFloat16:
      // 11 significant bits, min normal 2^-14 (frexp exponent -13), max 65504; 65520 rounds up.
      return roundSignificand(static_cast<float>(v), 11, -13, 65520.0f);
    case DType::kBFloat16:
      // 8 significant bits, float32's exponent range; halfway above the max rounds to inf.
      return roundSignificand(static_cast<float>(v), 8, -125, 3.3961514e38f);
  }
  return v;
}

namespace {

bool foldable(OpKind k) {
  switch (k) {
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv:
    case OpKind::kNeg:
    case OpKind::kAbs:
    case OpKind::kRelu:
    case OpKind::kSqrt:
    case OpKind::kMaximum:
    case OpKind::kMinimum:
    case OpKind::kEq:
    case OpKind::kNe:
    case OpKind::kLt:
    case OpKind::kLe:
    case OpKind::kGt:
    case OpKind::kGe:
    case OpKind::kWhere:
    case OpKind::kClamp:
    case OpKind::kCast:
      return true;
    default:
      return false;
  }
}

// Computes node's result from operand values (already rounded to their dtypes). `math` is the
// dtype the arithmetic runs in (the promoted operand dtype), `out` the result dtype.
std::optional<double> evaluate(const ir::Node& n, const std::vector<double>& x, DType math,
                               DType out) {
  auto arith = [&](auto op) -> std::optional<double> {
    if (isIntegral(math) || math == DType::kBool) {
      int64_t a = static_cast<int64_t>(x[0]);
      int64_t b = x.size() > 1 ? static_cast<int64_t>(x[1]) : 0;
      return static_cast<double>(op(a, b));
    }
    float a = static_cast<float>(x[0]);
    float b = x.size() > 1 ? static_cast<float>(x[1]) : 0.0f;
    return static_cast<double>(op(a, b));
  };
  switch (n.kind()) {
    case OpKind::kAdd:
      return arith([](auto a, auto b) { return a + b; });
    case OpKind::kSub:
      return arith([](auto a, auto b) { return a - b; });
    case OpKind::kMul:
      return arith([](auto a, auto b) { return a * b; });
    case OpKind::kDiv:
      // Integer operands divide as floats (torch's true division); the result dtype says f32.
      return static_cast<double>(static_cast<float>(x[0]) / static_cast<float>(x[1]));
    case OpKind::kNeg:
      return arith([](auto a, auto) { return -a; });
    case OpKind::kAbs:
      if (ir::isFloating(math)) return static_cast<double>(std::fabs(static_cast<float>(x[0])));
      return arith([](auto a, auto) { return a < 0 ? -a : a; });
    case OpKind::kRelu:
      if (std::isnan(x[0])) return x[0];
      if (x[0] == 0.0) return std::nullopt;  // relu(-0) is -0 or +0 depending on the kernel
      return arith([](auto a, auto) { return a > 0 ? a : decltype(a){0}; });
    case OpKind::kSqrt:
      return static_cast<double>(std::sqrt(static_cast<float>(x[0])));
    case OpKind::kMaximum:
    case OpKind::kMinimum: {
      // torch.maximum/minimum propagate NaN.
      if (std::isnan(x[0]) || std::isnan(x[1])) return std::numeric_limits<double>::quiet_NaN();
      // A -0/+0 tie returns an operand by position on the device; leave it alone.
      if (x[0] == 0.0 && x[1] == 0.0 && std::signbit(x[0]) != std::signbit(x[1]))
        return std::nullopt;
      return n.kind() == OpKind::kMaximum ? std::max(x[0], x[1]) : std::min(x[0], x[1]);
    }
    case OpKind::kEq:
      return x[0] == x[1];
    case OpKind::kNe:
      return x[0] != x[1];
    case OpKind::kLt:
      return x[0] < x[1];
    case OpKind::kLe:
      return x[0] <= x[1];
    case OpKind::kGt:
      return x[0] > x[1];
    case OpKind::kGe:
      return x[0] >= x[1];
    case OpKind::kWhere:
      return x[0] != 0.0 ? x[1] : x[2];
    case OpKind::kClamp: {
      // torch.clamp: NaN stays NaN; min applied before max.
      double v = x[0];
      if (std::isnan(v)) return v;
      if (v == 0.0) return std::nullopt;  // signed-zero ties, as for maximum
      if (auto lo = n.attrs().getDoubleOpt("min")) v = std::max(v, roundToDType(*lo, out));
      if (auto hi = n.attrs().getDoubleOpt("max")) v = std::min(v, roundToDType(*hi, out));
      return v;
    }
    case OpKind::kCast:
      if (isIntegral(out) && !std::isfinite(x[0])) return std::nullopt;  // undefined in C++/CUDA
      return x[0];
    default:
      return std::nullopt;
  }
}

}  // namespace

bool foldConstants(ir::Graph& graph) {
  bool changed = false;
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    ir::Node* node = graph.nodes()[i].get();
    if (!foldable(node->kind()) || node->outputs().size() != 1 || node->output()->rank() != 0)
      continue;
    std::vector<double> values;
    bool allConstant = !node->inputs().empty();
    DType math = DType::kBool;
    for (size_t j = 0; j < node->inputs().size(); ++j) {
      const ir::Value* in = node->inputs()[j];
      if (in->producer()->kind() != OpKind::kConstant || in->rank() != 0) {
        allConstant = false;
        break;
      }
      values.push_back(roundToDType(in->producer()->attrs().getDouble("value"), in->dtype()));
      // where's condition does not take part in promotion.
      if (!(node->kind() == OpKind::kWhere && j == 0))
        math = j == 0 || (node->kind() == OpKind::kWhere && j == 1)
                   ? in->dtype()
                   : ir::promote(math, in->dtype());
    }
    if (!allConstant) continue;
    DType out = node->output()->dtype();
    if (node->kind() == OpKind::kCast) math = out;
    std::optional<double> result = evaluate(*node, values, math, out);
    if (!result) continue;
    ir::Value* folded = graph.addConstant(roundToDType(*result, out), out);
    std::vector<ir::Node*> operands;
    for (ir::Value* in : node->inputs()) operands.push_back(in->producer());
    graph.replaceAllUsesWith(node->output(), folded);
    graph.erase(node);
    for (ir::Node* op : operands) {
      bool stillThere = false;
      for (const auto& n : graph.nodes()) stillThere = stillThere || n.get() == op;
      if (stillThere && op->output()->uses().empty() && !graph.isGraphOutput(op->output()))
        graph.erase(op);
    }
    changed = true;
    i = 0;  // indices shifted (a constant was added in front, operands removed): rescan
  }
  return changed;
}

}  // namespace kiln::passes

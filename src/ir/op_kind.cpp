#include "src/ir/op_kind.h"

#include <array>

#include "src/support/error.h"

namespace kiln::ir {

namespace {

struct OpInfo {
  OpKind kind;
  std::string_view name;
  OpCategory category;
  Arity arity;
};

using C = OpCategory;
using K = OpKind;

// One row per OpKind, in enum order (checked by the static_assert below and a unit test).
constexpr std::array<OpInfo, kNumOpKinds> kOps = {{
    {K::kInput, "input", C::kBoundary, {0, 0}},
    {K::kParam, "param", C::kBoundary, {0, 0}},
    {K::kConstant, "constant", C::kBoundary, {0, 0}},
    {K::kNeg, "neg", C::kPointwise, {1, 1}},
    {K::kAbs, "abs", C::kPointwise, {1, 1}},
    {K::kExp, "exp", C::kPointwise, {1, 1}},
    {K::kLog, "log", C::kPointwise, {1, 1}},
    {K::kSqrt, "sqrt", C::kPointwise, {1, 1}},
    {K::kRsqrt, "rsqrt", C::kPointwise, {1, 1}},
    {K::kTanh, "tanh", C::kPointwise, {1, 1}},
    {K::kSigmoid, "sigmoid", C::kPointwise, {1, 1}},
    {K::kRelu, "relu", C::kPointwise, {1, 1}},
    {K::kGelu, "gelu", C::kPointwise, {1, 1}},
    {K::kGeluTanh, "gelu_tanh", C::kPointwise, {1, 1}},
    {K::kSilu, "silu", C::kPointwise, {1, 1}},
    {K::kErf, "erf", C::kPointwise, {1, 1}},
    {K::kSin, "sin", C::kPointwise, {1, 1}},
    {K::kCos, "cos", C::kPointwise, {1, 1}},
    {K::kClamp, "clamp", C::kPointwise, {1, 1}},
    {K::kPowScalar, "pow_scalar", C::kPointwise, {1, 1}},
    {K::kCast, "cast", C::kPointwise, {1, 1}},
    {K::kFill, "fill", C::kPointwise, {0, 0}},
    {K::kArange, "arange", C::kPointwise, {0, 0}},
    {K::kAdd, "add", C::kPointwise, {2, 2}},
    {K::kSub, "sub", C::kPointwise, {2, 2}},
    {K::kMul, "mul", C::kPointwise, {2, 2}},
    {K::kDiv, "div", C::kPointwise, {2, 2}},
    {K::kMaximum, "maximum", C::kPointwise, {2, 2}},
    {K::kMinimum, "minimum", C::kPointwise, {2, 2}},
    {K::kPow, "pow", C::kPointwise, {2, 2}},
    {K::kEq, "eq", C::kPointwise, {2, 2}},
    {K::kNe, "ne", C::kPointwise, {2, 2}},
    {K::kLt, "lt", C::kPointwise, {2, 2}},
    {K::kLe, "le", C::kPointwise, {2, 2}},
    {K::kGt, "gt", C::kPointwise, {2, 2}},
    {K::kGe, "ge", C::kPointwise, {2, 2}},
    {K::kWhere, "where", C::kPointwise, {3, 3}},
    {K::kEmbedding, "embedding", C::kGather, {2, 2}},
    {K::kSum, "sum", C::kReduction, {1, 1}},
    {K::kMean, "mean", C::kReduction, {1, 1}},
    {K::kAmax, "amax", C::kReduction, {1, 1}},
    {K::kAmin, "amin", C::kReduction, {1, 1}},
    {K::kSoftmax, "softmax", C::kNormalization, {1, 1}},
    {K::kLogSoftmax, "log_softmax", C::kNormalization, {1, 1}},
    {K::kLayerNorm, "layer_norm", C::kNormalization, {1, 3}},
    {K::kReshape, "reshape", C::kView, {1, 1}},
    {K::kPermute, "permute", C::kView, {1, 1}},
    {K::kExpand, "expand", C::kView, {1, 1}},
    {K::kSlice, "slice", C::kView, {1, 1}},
    {K::kCat, "cat", C::kView, {1, -1}},
    {K::kMatMul, "matmul", C::kLibrary, {2, 2}},
    {K::kLinear, "linear", C::kLibrary, {2, 3}},
    {K::kAddmm, "addmm", C::kLibrary, {3, 3}},
    {K::kBmm, "bmm", C::kLibrary, {2, 2}},
    {K::kBaddbmm, "baddbmm", C::kLibrary, {3, 3}},
    {K::kSdpa, "sdpa", C::kLibrary, {3, 4}},
    {K::kConv2d, "conv2d", C::kLibrary, {2, 4}},
    {K::kEager, "eager", C::kEager, {0, -1}},
}};

constexpr bool tableInEnumOrder() {
  for (size_t i = 0; i < kOps.size(); ++i)
    if (static_cast<size_t>(kOps[i].kind) != i) return false;
  return true;
}
static_assert(tableInEnumOrder(), "kOps must list every OpKind in enum order");

const OpInfo& info(OpKind kind) {
  auto i = static_cast<size_t>(kind);
  KILN_CHECK(i < kOps.size(), "bad OpKind {}", i);
  return kOps[i];
}

}  // namespace

std::string_view toString(OpKind kind) {
  return info(kind).name;
}

std::optional<OpKind> parseOpKind(std::string_view name) {
  for (const OpInfo& op : kOps)
    if (op.name == name) return op.kind;
  return std::nullopt;
}

OpCategory categoryOf(OpKind kind) {
  return info(kind).category;
}

Arity arityOf(OpKind kind) {
  return info(kind).arity;
}

bool isCommutative(OpKind kind) {
  switch (kind) {
    // maximum/minimum are left out: with a -0/+0 tie, kernels return one operand by position.
    case K::kAdd:
    case K::kMul:
    case K::kEq:
    case K::kNe:
      return true;
    default:
      return false;
  }
}

bool isComparison(OpKind kind) {
  switch (kind) {
    case K::kEq:
    case K::kNe:
    case K::kLt:
    case K::kLe:
    case K::kGt:
    case K::kGe:
      return true;
    default:
      return false;
  }
}

}  // namespace kiln::ir

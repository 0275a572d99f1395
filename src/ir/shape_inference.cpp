#include "src/ir/shape_inference.h"

#include <algorithm>

#include "src/support/error.h"

#include <fmt/ranges.h>

namespace kiln::ir {

namespace {

std::string operandTypes(const std::vector<Value*>& inputs) {
  std::string out;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i) out += ", ";
    out += inputs[i]->type().toString();
  }
  return out;
}

[[noreturn]] void fail(OpKind kind, const std::vector<Value*>& inputs, const std::string& why) {
  throw UserError(fmt::format("{}({}): {}", toString(kind), operandTypes(inputs), why));
}

// Attribute readers that report bad user input (text written by a test, a capture bug that
// reaches here) as UserError naming the op instead of an InternalError.
int64_t intAttr(OpKind kind, const Attrs& attrs, std::string_view name,
                std::optional<int64_t> dflt = std::nullopt) {
  const AttrValue* v = attrs.find(name);
  if (v == nullptr) {
    if (dflt) return *dflt;
    throw UserError(fmt::format("{}: missing int attribute '{}'", toString(kind), name));
  }
  if (const int64_t* i = std::get_if<int64_t>(v)) return *i;
  throw UserError(fmt::format("{}: attribute '{}' must be an int", toString(kind), name));
}

bool boolAttr(OpKind kind, const Attrs& attrs, std::string_view name, bool dflt) {
  const AttrValue* v = attrs.find(name);
  if (v == nullptr) return dflt;
  if (const bool* b = std::get_if<bool>(v)) return *b;
  throw UserError(fmt::format("{}: attribute '{}' must be a bool", toString(kind), name));
}

std::optional<std::vector<int64_t>> intsAttr(OpKind kind, const Attrs& attrs,
                                             std::string_view name) {
  const AttrValue* v = attrs.find(name);
  if (v == nullptr) return std::nullopt;
  if (const auto* l = std::get_if<std::vector<int64_t>>(v)) return *l;
  if (const int64_t* i = std::get_if<int64_t>(v)) return std::vector<int64_t>{*i};
  throw UserError(fmt::format("{}: attribute '{}' must be an int list", toString(kind), name));
}

void checkNumericAttr(OpKind kind, const Attrs& attrs, std::string_view name, bool required) {
  const AttrValue* v = attrs.find(name);
  if (v == nullptr) {
    if (required) throw UserError(fmt::format("{}: missing attribute '{}'", toString(kind), name));
    return;
  }
  if (!std::holds_alternative<double>(*v) && !std::holds_alternative<int64_t>(*v))
    throw UserError(fmt::format("{}: attribute '{}' must be a number", toString(kind), name));
}

int category(DType d) {
  if (d == DType::kBool) return 0;
  if (isFloating(d)) return 2;
  return 1;
}

// Note [Shape inference rules]: rank-0 operands only win across categories.
DType resultDType(const std::vector<Value*>& operands) {
  std::optional<DType> ranked, zero;
  for (const Value* v : operands) {
    auto& slot = v->rank() > 0 ? ranked : zero;
    slot = slot ? promote(*slot, v->dtype()) : v->dtype();
  }
  if (!ranked) return *zero;
  if (!zero) return *ranked;
  return category(*zero) > category(*ranked) ? *zero : *ranked;
}

void checkSameDType(OpKind kind, const std::vector<Value*>& inputs) {
  for (const Value* v : inputs)
    if (v->dtype() != inputs[0]->dtype())
      fail(kind, inputs,
           fmt::format("operands must have the same dtype, got {} and {}",
                       toString(inputs[0]->dtype()), toString(v->dtype())));
}

void checkRank(OpKind kind, const std::vector<Value*>& inputs, size_t i, int64_t minRank,
               int64_t maxRank, const char* role) {
  int64_t r = inputs[i]->rank();
  if (r < minRank || r > maxRank) {
    std::string want = minRank == maxRank ? fmt::format("rank {}", minRank)
                                          : fmt::format("rank {}..{}", minRank, maxRank);
    fail(kind, inputs, fmt::format("{} (operand {}) must have {}, got rank {}", role, i, want, r));
  }
}

Shape slice(const Shape& s, size_t begin, size_t end) {
  return Shape(s.begin() + static_cast<std::ptrdiff_t>(begin),
               s.begin() + static_cast<std::ptrdiff_t>(end));
}

void checkDimEq(OpKind kind, const std::vector<Value*>& inputs, const SymDim& a, const SymDim& b,
                const char* what) {
  if (a != b)
    fail(kind, inputs, fmt::format("{} mismatch: {} vs {}", what, a.toString(), b.toString()));
}

TensorType inferPointwise(OpKind kind, const std::vector<Value*>& inputs, const Attrs& attrs) {
  Shape shape = inputs[0]->shape();
  for (size_t i = 1; i < inputs.size(); ++i)
    shape = broadcastShapes(shape, inputs[i]->shape(),
                            fmt::format("{}({})", toString(kind), operandTypes(inputs)));
  switch (kind) {
    case OpKind::kNeg:
    case OpKind::kAbs:
    case OpKind::kRelu:
      return {inputs[0]->dtype(), shape};
    case OpKind::kClamp:
      checkNumericAttr(kind, attrs, "min", false);
      checkNumericAttr(kind, attrs, "max", false);
      return {inputs[0]->dtype(), shape};
    case OpKind::kPowScalar: {
      checkNumericAttr(kind, attrs, "exponent", true);
      DType d = inputs[0]->dtype();
      double e = attrs.getDouble("exponent");
      if (!isFloating(d) && e != static_cast<double>(static_cast<int64_t>(e))) d = DType::kFloat32;
      return {d, shape};
    }
    case OpKind::kExp:
    case OpKind::kLog:
    case OpKind::kSqrt:
    case OpKind::kRsqrt:
    case OpKind::kTanh:
    case OpKind::kSigmoid:
    case OpKind::kGelu:
    case OpKind::kGeluTanh:
    case OpKind::kSilu:
    case OpKind::kErf:
    case OpKind::kSin:
    case OpKind::kCos: {
      DType d = inputs[0]->dtype();
      return {isFloating(d) ? d : DType::kFloat32, shape};
    }
    case OpKind::kEq:
    case OpKind::kNe:
    case OpKind::kLt:
    case OpKind::kLe:
    case OpKind::kGt:
    case OpKind::kGe:
      return {DType::kBool, shape};
    case OpKind::kDiv: {
      DType d = resultDType(inputs);
      return {isFloating(d) ? d : DType::kFloat32, shape};
    }
    case OpKind::kWhere: {
      if (inputs[0]->dtype() != DType::kBool)
        fail(kind, inputs,
             fmt::format("condition must be bool, got {}", toString(inputs[0]->dtype())));
      return {resultDType({inputs[1], inputs[2]}), shape};
    }
    default:
      return {resultDType(inputs), shape};
  }
}

TensorType inferReduction(OpKind kind, const std::vector<Value*>& inputs, const Attrs& attrs) {
  const Value* x = inputs[0];
  auto dims = intsAttr(kind, attrs, "dims");
  bool keepdim = boolAttr(kind, attrs, "keepdim", false);
  std::vector<bool> reduced(static_cast<size_t>(x->rank()), !dims || dims->empty());
  if (dims) {
    for (int64_t d : *dims) {
      int64_t n = normalizeDim(d, x->rank(), toString(kind));
      if (reduced[static_cast<size_t>(n)])
        fail(kind, inputs, fmt::format("dim {} listed twice", d));
      reduced[static_cast<size_t>(n)] = true;
    }
  }
  Shape shape;
  for (size_t i = 0; i < reduced.size(); ++i) {
    if (!reduced[i])
      shape.push_back(x->shape()[i]);
    else if (keepdim)
      shape.push_back(1);
  }
  DType d = x->dtype();
  if (kind == OpKind::kSum && !isFloating(d)) d = DType::kInt64;
  if (kind == OpKind::kMean && !isFloating(d))
    fail(kind, inputs, fmt::format("mean needs a floating input, got {}", toString(d)));
  return {d, shape};
}

TensorType inferMatMul(OpKind kind, const std::vector<Value*>& inputs) {
  const Shape& a = inputs[0]->shape();
  const Shape& b = inputs[1]->shape();
  if (a.empty() || b.empty()) fail(kind, inputs, "operands must have rank >= 1");
  Shape a2 = a.size() == 1 ? Shape{1, a[0]} : a;
  Shape b2 = b.size() == 1 ? Shape{b[0], 1} : b;
  checkDimEq(kind, inputs, a2.back(), b2[b2.size() - 2], "contraction dim");
  Shape out = broadcastShapes(slice(a2, 0, a2.size() - 2), slice(b2, 0, b2.size() - 2),
                              fmt::format("{} batch dims", toString(kind)));
  if (a.size() > 1) out.push_back(a2[a2.size() - 2]);
  if (b.size() > 1) out.push_back(b2.back());
  return {inputs[0]->dtype(), out};
}

TensorType inferLibrary(OpKind kind, const std::vector<Value*>& inputs, const Attrs& attrs) {
  std::string what = fmt::format("{}({})", toString(kind), operandTypes(inputs));
  switch (kind) {
    case OpKind::kMatMul:
      checkSameDType(kind, inputs);
      return inferMatMul(kind, inputs);
    case OpKind::kLinear: {
      checkSameDType(kind, inputs);
      checkRank(kind, inputs, 0, 1, 64, "input");
      checkRank(kind, inputs, 1, 2, 2, "weight");
      const Shape& x = inputs[0]->shape();
      const Shape& w = inputs[1]->shape();
      checkDimEq(kind, inputs, x.back(), w[1], "in_features");
      if (inputs.size() == 3) {
        checkRank(kind, inputs, 2, 1, 1, "bias");
        checkDimEq(kind, inputs, inputs[2]->shape()[0], w[0], "out_features");
      }
      Shape out = slice(x, 0, x.size() - 1);
      out.push_back(w[0]);
      return {inputs[0]->dtype(), out};
    }
    case OpKind::kAddmm:
    case OpKind::kBaddbmm: {
      checkSameDType(kind, inputs);
      checkNumericAttr(kind, attrs, "beta", false);
      checkNumericAttr(kind, attrs, "alpha", false);
      int64_t r = kind == OpKind::kAddmm ? 2 : 3;
      checkRank(kind, inputs, 1, r, r, "mat1");
      checkRank(kind, inputs, 2, r, r, "mat2");
      TensorType t = inferMatMul(kind, {inputs[1], inputs[2]});
      if (kind == OpKind::kBaddbmm)
        checkDimEq(kind, inputs, inputs[1]->shape()[0], inputs[2]->shape()[0], "batch dim");
      if (!broadcastsTo(inputs[0]->shape(), t.shape))
        fail(kind, inputs,
             fmt::format("bias {} does not broadcast to {}", toString(inputs[0]->shape()),
                         toString(t.shape)));
      return t;
    }
    case OpKind::kBmm:
      checkSameDType(kind, inputs);
      checkRank(kind, inputs, 0, 3, 3, "batch1");
      checkRank(kind, inputs, 1, 3, 3, "batch2");
      checkDimEq(kind, inputs, inputs[0]->shape()[0], inputs[1]->shape()[0], "batch dim");
      return inferMatMul(kind, inputs);
    case OpKind::kSdpa: {
      checkSameDType(kind, {inputs[0], inputs[1], inputs[2]});
      for (size_t i = 0; i < 3; ++i) checkRank(kind, inputs, i, 2, 64, "q/k/v");
      const Shape& q = inputs[0]->shape();
      const Shape& k = inputs[1]->shape();
      const Shape& v = inputs[2]->shape();
      if (q.size() != k.size() || q.size() != v.size())
        fail(kind, inputs, "q, k and v must have the same rank");
      checkDimEq(kind, inputs, q.back(), k.back(), "q/k embedding dim");
      checkDimEq(kind, inputs, k[k.size() - 2], v[v.size() - 2], "k/v sequence length");
      Shape batch = broadcastShapes(slice(q, 0, q.size() - 2), slice(k, 0, k.size() - 2), what);
      batch = broadcastShapes(batch, slice(v, 0, v.size() - 2), what);
      Shape scores = batch;
      scores.push_back(q[q.size() - 2]);
      scores.push_back(k[k.size() - 2]);
      if (inputs.size() == 4) {
        DType md = inputs[3]->dtype();
        if (md != DType::kBool && md != inputs[0]->dtype())
          fail(kind, inputs,
               fmt::format("mask must be bool or {}, got {}", toString(inputs[0]->dtype()),
                           toString(md)));
        if (!broadcastsTo(inputs[3]->shape(), scores))
          fail(kind, inputs,
               fmt::format("mask {} does not broadcast to scores {}", toString(inputs[3]->shape()),
                           toString(scores)));
      }
      checkNumericAttr(kind, attrs, "scale", false);
      boolAttr(kind, attrs, "is_causal", false);
      Shape out = batch;
      out.push_back(q[q.size() - 2]);
      out.push_back(v.back());
      return {inputs[0]->dtype(), out};
    }
    case OpKind::kConv2d: {
      checkSameDType(kind, inputs);
      checkRank(kind, inputs, 0, 4, 4, "input");
      checkRank(kind, inputs, 1, 4, 4, "weight");
      const Shape& x = inputs[0]->shape();
      const Shape& w = inputs[1]->shape();
      int64_t groups = intAttr(kind, attrs, "groups", 1);
      if (groups < 1) fail(kind, inputs, fmt::format("groups must be >= 1, got {}", groups));
      checkDimEq(kind, inputs, x[1], w[1] * SymDim(groups),
                 "input channels (weight dim 1 * groups)");
      if (inputs.size() >= 3) {
        checkRank(kind, inputs, 2, 1, 1, "bias");
        checkDimEq(kind, inputs, inputs[2]->shape()[0], w[0], "out channels");
      }
      auto pair = [&](const char* name, int64_t dflt) {
        (void)intsAttr(kind, attrs, name);  // the attribute's type
        const std::optional<std::array<int64_t, 2>> v = conv2dPair(attrs, name, dflt);
        if (!v) fail(kind, inputs, fmt::format("attribute '{}' must have 1 or 2 entries", name));
        return *v;
      };
      auto stride = pair("stride", 1), padding = pair("padding", 0), dilation = pair("dilation", 1);
      Shape out{x[0], w[0]};
      for (size_t i = 0; i < 2; ++i) {
        if (stride[i] < 1 || dilation[i] < 1 || padding[i] < 0)
          fail(kind, inputs, "stride and dilation must be >= 1, padding >= 0");
        const SymDim& in = x[2 + i];
        const SymDim& kdim = w[2 + i];
        if (!kdim.isConstant()) fail(kind, inputs, "kernel size must be a constant");
        SymDim span = in + SymDim(2 * padding[i] - dilation[i] * (kdim.constant() - 1) - 1);
        if (span.isConstant()) {
          if (span.constant() < 0)
            fail(kind, inputs, fmt::format("kernel larger than padded input in dim {}", 2 + i));
          out.push_back(span.constant() / stride[i] + 1);
        } else {
          auto q = span.divExact(SymDim(stride[i]));
          if (!q)
            throw Unsupported(fmt::format("{}: output size of symbolic dim {} with stride {}", what,
                                          in.toString(), stride[i]));
          out.push_back(*q + SymDim(1));
        }
      }
      if (inputs.size() == 4 && inputs[3]->shape() != out)
        fail(kind, inputs, "the residual operand must have the output's shape");
      return {inputs[0]->dtype(), out};
    }
    default:
      KILN_CHECK(false, "not a library op: {}", toString(kind));
  }
  return {};
}

}  // namespace

int64_t normalizeDim(int64_t dim, int64_t rank, std::string_view what) {
  int64_t n = dim < 0 ? dim + rank : dim;
  if (n < 0 || n >= rank)
    throw UserError(fmt::format("{}: dim {} out of range for rank {}", what, dim, rank));
  return n;
}

std::optional<std::array<int64_t, 2>> conv2dPair(const Attrs& attrs, std::string_view name,
                                                 int64_t dflt) {
  if (!attrs.has(name)) return std::array<int64_t, 2>{dflt, dflt};
  const std::vector<int64_t>& v = attrs.getInts(name);
  if (v.size() == 1) return std::array<int64_t, 2>{v[0], v[0]};
  if (v.size() == 2) return std::array<int64_t, 2>{v[0], v[1]};
  return std::nullopt;
}

Shape broadcastShapes(const Shape& a, const Shape& b, std::string_view what) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    // Align from the right.
    const SymDim* da = i < a.size() ? &a[a.size() - 1 - i] : nullptr;
    const SymDim* db = i < b.size() ? &b[b.size() - 1 - i] : nullptr;
    SymDim& o = out[n - 1 - i];
    if (da == nullptr || *da == SymDim(1)) {
      o = db ? *db : *da;
    } else if (db == nullptr || *db == SymDim(1) || *da == *db) {
      o = *da;
    } else {
      throw UserError(fmt::format("{}: shapes {} and {} do not broadcast ({} vs {})", what,
                                  toString(a), toString(b), da->toString(), db->toString()));
    }
  }
  return out;
}

bool broadcastsTo(const Shape& from, const Shape& to) {
  if (from.size() > to.size()) return false;
  size_t off = to.size() - from.size();
  for (size_t i = 0; i < from.size(); ++i)
    if (from[i] != SymDim(1) && from[i] != to[off + i]) return false;
  return true;
}

bool needsExplicitType(OpKind kind) {
  switch (kind) {
    case OpKind::kInput:
    case OpKind::kParam:
    case OpKind::kConstant:
    case OpKind::kCast:
    case OpKind::kFill:
    case OpKind::kArange:
    case OpKind::kReshape:
    case OpKind::kExpand:
    case OpKind::kSlice:
    case OpKind::kEager:
      return true;
    default:
      return false;
  }
}

TensorType inferType(OpKind kind, const std::vector<Value*>& inputs, const Attrs& attrs) {
  if (needsExplicitType(kind))
    throw UserError(fmt::format("{}: the output type must be given explicitly", toString(kind)));
  Arity arity = arityOf(kind);
  int n = static_cast<int>(inputs.size());
  if (n < arity.min || (arity.max >= 0 && n > arity.max)) {
    std::string want = arity.max < 0            ? fmt::format("at least {}", arity.min)
                       : arity.min == arity.max ? fmt::format("{}", arity.min)
                                                : fmt::format("{} to {}", arity.min, arity.max);
    throw UserError(fmt::format("{}: expected {} operand(s), got {}", toString(kind), want, n));
  }
  for (const Value* v : inputs) KILN_CHECK(v != nullptr, "{}: null operand", toString(kind));

  switch (categoryOf(kind)) {
    case OpCategory::kPointwise:
      return inferPointwise(kind, inputs, attrs);
    case OpCategory::kReduction:
      return inferReduction(kind, inputs, attrs);
    case OpCategory::kLibrary:
      return inferLibrary(kind, inputs, attrs);
    default:
      break;
  }
  const Value* x = inputs[0];
  switch (kind) {
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax: {
      normalizeDim(intAttr(kind, attrs, "dim"), x->rank(), toString(kind));
      return {isFloating(x->dtype()) ? x->dtype() : DType::kFloat32, x->shape()};
    }
    case OpKind::kLayerNorm: {
      int64_t nd = intAttr(kind, attrs, "normalized_ndim");
      if (nd < 1 || nd > x->rank())
        fail(kind, inputs,
             fmt::format("normalized_ndim {} out of range for rank {}", nd, x->rank()));
      checkNumericAttr(kind, attrs, "eps", false);
      if (!isFloating(x->dtype())) fail(kind, inputs, "input must be floating point");
      Shape normalized =
          slice(x->shape(), x->shape().size() - static_cast<size_t>(nd), x->shape().size());
      for (size_t i = 1; i < inputs.size(); ++i)
        if (inputs[i]->shape() != normalized)
          fail(kind, inputs,
               fmt::format("{} must have shape {}, got {}", i == 1 ? "weight" : "bias",
                           toString(normalized), toString(inputs[i]->shape())));
      return x->type();
    }
    case OpKind::kPermute: {
      auto perm = intsAttr(kind, attrs, "perm");
      if (!perm) fail(kind, inputs, "missing attribute 'perm'");
      if (static_cast<int64_t>(perm->size()) != x->rank())
        fail(kind, inputs, fmt::format("perm has {} entries for rank {}", perm->size(), x->rank()));
      std::vector<bool> seen(perm->size(), false);
      Shape out;
      for (int64_t p : *perm) {
        int64_t d = normalizeDim(p, x->rank(), "permute");
        if (seen[static_cast<size_t>(d)])
          fail(kind, inputs,
               fmt::format("perm {} repeats dim {}", fmt::format("[{}]", fmt::join(*perm, ", ")),
                           p));
        seen[static_cast<size_t>(d)] = true;
        out.push_back(x->shape()[static_cast<size_t>(d)]);
      }
      return {x->dtype(), out};
    }
    case OpKind::kEmbedding: {  // Note [Embeddings in kernels] in codegen/emit_cuda.cpp
      const Value* ids = inputs[1];
      if (x->rank() != 2) fail(kind, inputs, "the table must have rank 2");
      if (ids->dtype() != DType::kInt64 && ids->dtype() != DType::kInt32)
        fail(kind, inputs, "ids must be int64 or int32");
      if (ids->rank() < 1 || !ids->shape().back().isOne())
        fail(kind, inputs, "ids must end in a dim of size 1");
      Shape out(ids->shape().begin(), ids->shape().end() - 1);
      out.push_back(x->shape()[1]);
      return {x->dtype(), out};
    }
    case OpKind::kCat: {
      int64_t d = normalizeDim(intAttr(kind, attrs, "dim"), x->rank(), "cat");
      Shape out = x->shape();
      std::vector<Value*> all(inputs.begin(), inputs.end());
      for (size_t i = 1; i < inputs.size(); ++i) {
        const Shape& s = inputs[i]->shape();
        if (s.size() != out.size()) fail(kind, inputs, "operands must have the same rank");
        for (size_t j = 0; j < s.size(); ++j) {
          if (static_cast<int64_t>(j) == d)
            out[j] = out[j] + s[j];
          else
            checkDimEq(kind, inputs, out[j], s[j], "non-cat dim");
        }
      }
      DType dt = x->dtype();
      for (const Value* v : inputs) dt = promote(dt, v->dtype());
      return {dt, out};
    }
    default:
      KILN_CHECK(false, "no shape rule for {}", toString(kind));
  }
  return {};
}

}  // namespace kiln::ir

// evalGraph/evalNode against the same computation written directly with ATen. Both sides make
// the same ATen calls, so results must match bit for bit (NaNs included) unless noted.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/intrusive_ptr.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "jit/eval/aten_eval.h"
#include "src/support/error.h"

namespace kiln::jit {
namespace {

using ir::DType;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::TensorType;

Shape staticShape(at::IntArrayRef sizes) {
  return Shape(sizes.begin(), sizes.end());
}

TensorType typeOf(const at::Tensor& t) {
  return {toIrDType(t.scalar_type()), staticShape(t.sizes())};
}

void expectSame(const at::Tensor& got, const at::Tensor& want) {
  ASSERT_TRUE(got.defined());
  EXPECT_EQ(got.scalar_type(), want.scalar_type());
  ASSERT_EQ(got.sizes(), want.sizes());
  if (want.scalar_type() == at::kBool || !at::isFloatingType(want.scalar_type())) {
    EXPECT_TRUE(at::equal(got, want)) << "got\n" << got << "\nwant\n" << want;
  } else {
    EXPECT_TRUE(
        at::allclose(got.to(at::kDouble), want.to(at::kDouble), 0.0, 0.0, /*equal_nan=*/true))
        << "max abs diff "
        << (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
  }
}

at::Tensor randn(std::vector<int64_t> sizes, at::ScalarType type = at::kFloat) {
  return at::randn(sizes).to(type);
}

// A graph under test plus the tensors bound to its inputs and params.
class Case {
 public:
  ir::Graph g;
  std::vector<at::Tensor> inputs, params;

  // An input typed like `t`; dims listed in `symbolic` become symbols (shared by position in
  // `syms`, created on demand).
  ir::Value* input(const at::Tensor& t, std::vector<std::pair<int, int>> symbolic = {}) {
    TensorType type = typeOf(t);
    for (auto [dim, sym] : symbolic) type.shape[static_cast<size_t>(dim)] = symbol(sym);
    inputs.push_back(t);
    return g.addInput(fmt::format("in{}", inputs.size() - 1), type);
  }
  ir::Value* param(const at::Tensor& t) {
    params.push_back(t);
    return g.addParam(fmt::format("p{}", params.size() - 1), typeOf(t));
  }
  SymDim symbol(int i) {
    while (static_cast<int>(syms_.size()) <= i) syms_.push_back(g.newSymbol());
    return syms_[static_cast<size_t>(i)];
  }
  ir::Value* op(OpKind kind, std::vector<ir::Value*> in, TensorType out, ir::Attrs attrs = {}) {
    return g.op(kind, std::move(in), std::move(attrs), std::move(out));
  }
  std::vector<at::Tensor> run(std::vector<ir::Value*> outputs, const EagerRunner& runner = {}) {
    g.setOutputs(std::move(outputs));
    return evalGraph(g, inputs, params, runner);
  }
  at::Tensor run1(ir::Value* output, const EagerRunner& runner = {}) {
    return run({output}, runner).at(0);
  }

 private:
  std::vector<SymDim> syms_;
};

class EvalByDType : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  void SetUp() override { at::manual_seed(0); }
};

std::string dtypeName(const ::testing::TestParamInfo<at::ScalarType>& info) {
  return std::string(c10::toString(info.param));
}

// --- pointwise --------------------------------------------------------------------------------

TEST_P(EvalByDType, Unary) {
  const at::ScalarType dt = GetParam();
  struct Op {
    OpKind kind;
    std::function<at::Tensor(const at::Tensor&)> ref;
  };
  std::vector<Op> ops = {
      {OpKind::kNeg, [](const at::Tensor& x) { return at::neg(x); }},
      {OpKind::kAbs, [](const at::Tensor& x) { return at::abs(x); }},
      {OpKind::kExp, [](const at::Tensor& x) { return at::exp(x); }},
      {OpKind::kLog, [](const at::Tensor& x) { return at::log(x); }},
      {OpKind::kSqrt, [](const at::Tensor& x) { return at::sqrt(x); }},
      {OpKind::kRsqrt, [](const at::Tensor& x) { return at::rsqrt(x); }},
      {OpKind::kTanh, [](const at::Tensor& x) { return at::tanh(x); }},
      {OpKind::kSigmoid, [](const at::Tensor& x) { return at::sigmoid(x); }},
      {OpKind::kRelu, [](const at::Tensor& x) { return at::relu(x); }},
      {OpKind::kGelu, [](const at::Tensor& x) { return at::gelu(x); }},
      {OpKind::kGeluTanh, [](const at::Tensor& x) { return at::gelu(x, "tanh"); }},
      {OpKind::kSilu, [](const at::Tensor& x) { return at::silu(x); }},
      {OpKind::kErf, [](const at::Tensor& x) { return at::erf(x); }},
      {OpKind::kSin, [](const at::Tensor& x) { return at::sin(x); }},
      {OpKind::kCos, [](const at::Tensor& x) { return at::cos(x); }},
  };
  at::Tensor x = randn({5, 7}, dt);
  for (const Op& op : ops) {
    SCOPED_TRACE(std::string(ir::toString(op.kind)));
    Case c;
    ir::Value* in = c.input(x, {{0, 0}});
    at::Tensor want = op.ref(x);
    expectSame(c.run1(c.op(op.kind, {in}, {typeOf(want).dtype, {c.symbol(0), 7}})), want);
  }
}

TEST_P(EvalByDType, GeluModesDiffer) {
  // Guards against both gelu kinds mapping to the same ATen call.
  at::Tensor x = randn({64}, GetParam());
  Case c;
  ir::Value* in = c.input(x);
  at::Tensor erf = c.run1(c.op(OpKind::kGelu, {in}, typeOf(x)));
  Case c2;
  ir::Value* in2 = c2.input(x);
  at::Tensor tanh = c2.run1(c2.op(OpKind::kGeluTanh, {in2}, typeOf(x)));
  expectSame(erf, at::gelu(x, "none"));
  expectSame(tanh, at::gelu(x, "tanh"));
  if (GetParam() == at::kFloat) {
    EXPECT_FALSE(at::equal(erf, tanh));
  }
}

TEST_P(EvalByDType, BinaryWithBroadcast) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({3, 1, 5}, dt);
  at::Tensor b = randn({4, 5}, dt).abs() + 0.5;
  struct Op {
    OpKind kind;
    std::function<at::Tensor(const at::Tensor&, const at::Tensor&)> ref;
  };
  std::vector<Op> ops = {
      {OpKind::kAdd, [](auto& x, auto& y) { return at::add(x, y); }},
      {OpKind::kSub, [](auto& x, auto& y) { return at::sub(x, y); }},
      {OpKind::kMul, [](auto& x, auto& y) { return at::mul(x, y); }},
      {OpKind::kDiv, [](auto& x, auto& y) { return at::div(x, y); }},
      {OpKind::kMaximum, [](auto& x, auto& y) { return at::maximum(x, y); }},
      {OpKind::kMinimum, [](auto& x, auto& y) { return at::minimum(x, y); }},
      {OpKind::kPow, [](auto& x, auto& y) { return at::pow(x, y); }},
      {OpKind::kEq, [](auto& x, auto& y) { return at::eq(x, y); }},
      {OpKind::kNe, [](auto& x, auto& y) { return at::ne(x, y); }},
      {OpKind::kLt, [](auto& x, auto& y) { return at::lt(x, y); }},
      {OpKind::kLe, [](auto& x, auto& y) { return at::le(x, y); }},
      {OpKind::kGt, [](auto& x, auto& y) { return at::gt(x, y); }},
      {OpKind::kGe, [](auto& x, auto& y) { return at::ge(x, y); }},
  };
  for (const Op& op : ops) {
    SCOPED_TRACE(std::string(ir::toString(op.kind)));
    Case c;
    ir::Value* x = c.input(a, {{0, 0}});
    ir::Value* y = c.input(b);
    at::Tensor want = op.ref(a, b);
    at::Tensor got = c.run1(c.op(op.kind, {x, y}, {typeOf(want).dtype, {c.symbol(0), 4, 5}}));
    expectSame(got, want);
    if (op.kind >= OpKind::kEq) {
      EXPECT_EQ(got.scalar_type(), at::kBool);
    }
  }
}

TEST_P(EvalByDType, ConstantsActLikePythonScalars) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({4, 6}, dt).abs() + 0.25;
  struct Op {
    OpKind kind;
    bool constFirst;
    std::function<at::Tensor(const at::Tensor&)>
        ref;  // what Python computes for x op 0.5 / 0.5 op x
  };
  std::vector<Op> ops = {
      {OpKind::kMul, false, [](auto& x) { return x * 0.5; }},
      {OpKind::kAdd, false, [](auto& x) { return x + 0.5; }},
      {OpKind::kSub, false, [](auto& x) { return x - 0.5; }},
      {OpKind::kSub, true, [](auto& x) { return at::rsub(x, 0.5); }},
      {OpKind::kDiv, false, [](auto& x) { return x / 0.5; }},
      {OpKind::kPow, false, [](auto& x) { return at::pow(x, 0.5); }},
      {OpKind::kPow, true, [](auto& x) { return at::pow(0.5, x); }},
      {OpKind::kMaximum, false, [](auto& x) { return at::clamp_min(x, 0.5); }},
      {OpKind::kGt, false, [](auto& x) { return x > 0.5; }},
      {OpKind::kLe, true, [](auto& x) { return x >= 0.5; }},
  };
  for (const Op& op : ops) {
    SCOPED_TRACE(fmt::format("{} const first {}", ir::toString(op.kind), op.constFirst));
    Case c;
    ir::Value* x = c.input(a);
    ir::Value* k = c.g.addConstant(0.5, DType::kFloat32);
    at::Tensor want = op.ref(a);
    // x_f16 * 0.5 stays f16: the constant's f32 type must not promote.
    EXPECT_EQ(want.scalar_type(), op.kind >= OpKind::kEq ? at::kBool : dt);
    std::vector<ir::Value*> operands = op.constFirst ? std::vector{k, x} : std::vector{x, k};
    expectSame(c.run1(c.op(op.kind, operands, typeOf(want))), want);
  }
}

TEST_P(EvalByDType, PowScalarAndWhere) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({3, 8}, dt);
  at::Tensor cond = randn({3, 8}) > 0;
  {
    Case c;
    ir::Value* x = c.input(a);
    expectSame(c.run1(c.op(OpKind::kPowScalar, {x}, typeOf(a), {{"exponent", 2.0}})),
               at::pow(a, 2.0));
  }
  {
    Case c;
    ir::Value* x = c.input(a);
    expectSame(c.run1(c.op(OpKind::kPowScalar, {x}, typeOf(a), {{"exponent", 3.0}})),
               at::pow(a, 3));
  }
  {
    Case c;
    ir::Value* p = c.input(cond);
    ir::Value* x = c.input(a);
    ir::Value* k = c.g.addConstant(-1e4, DType::kFloat32);
    at::Tensor want = at::where(cond, a, -1e4);
    EXPECT_EQ(want.scalar_type(), dt);
    expectSame(c.run1(c.op(OpKind::kWhere, {p, x, k}, typeOf(want))), want);
  }
  {
    Case c;
    at::Tensor b = randn({8}, dt);
    ir::Value* p = c.input(cond);
    ir::Value* x = c.input(a);
    ir::Value* y = c.input(b);
    at::Tensor want = at::where(cond, a, b);
    expectSame(c.run1(c.op(OpKind::kWhere, {p, x, y}, typeOf(want))), want);
  }
}

TEST_P(EvalByDType, ClampAndCast) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({2, 9}, dt);
  struct Clamp {
    ir::Attrs attrs;
    at::Tensor want;
  };
  std::vector<Clamp> clamps = {
      {{{"min", -0.5}}, at::clamp(a, -0.5, std::nullopt)},
      {{{"max", 0.25}}, at::clamp(a, std::nullopt, 0.25)},
      {{{"min", -0.5}, {"max", 0.25}}, at::clamp(a, -0.5, 0.25)},
  };
  for (const Clamp& cl : clamps) {
    SCOPED_TRACE(cl.attrs.toString());
    Case c;
    ir::Value* x = c.input(a);
    expectSame(c.run1(c.op(OpKind::kClamp, {x}, typeOf(a), cl.attrs)), cl.want);
  }
  for (at::ScalarType to : {at::kFloat, at::kHalf, at::kBFloat16, at::kInt, at::kLong, at::kBool}) {
    SCOPED_TRACE(c10::toString(to));
    Case c;
    ir::Value* x = c.input(a);
    expectSame(c.run1(c.op(OpKind::kCast, {x}, {toIrDType(to), staticShape(a.sizes())})), a.to(to));
  }
}

// --- reductions and normalizations --------------------------------------------------------------

TEST_P(EvalByDType, Reductions) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({3, 4, 5}, dt);
  struct Red {
    OpKind kind;
    std::function<at::Tensor(const at::Tensor&, std::vector<int64_t>, bool)> ref;
  };
  std::vector<Red> reds = {
      {OpKind::kSum, [](auto& x, auto d, bool k) { return at::sum(x, d, k); }},
      {OpKind::kMean, [](auto& x, auto d, bool k) { return at::mean(x, d, k); }},
      {OpKind::kAmax, [](auto& x, auto d, bool k) { return at::amax(x, d, k); }},
      {OpKind::kAmin, [](auto& x, auto d, bool k) { return at::amin(x, d, k); }},
  };
  for (const Red& r : reds) {
    for (std::vector<int64_t> dims : {std::vector<int64_t>{2}, std::vector<int64_t>{0, 2}}) {
      for (bool keep : {false, true}) {
        SCOPED_TRACE(
            fmt::format("{} dims {} keepdim {}", ir::toString(r.kind), fmt::join(dims, ","), keep));
        Case c;
        ir::Value* x = c.input(a, {{0, 0}});
        at::Tensor want = r.ref(a, dims, keep);
        at::Tensor got =
            c.run1(c.op(r.kind, {x}, typeOf(want), {{"dims", dims}, {"keepdim", keep}}));
        expectSame(got, want);
      }
    }
  }
}

TEST_P(EvalByDType, SoftmaxAndLogSoftmax) {
  at::Tensor a = randn({4, 3, 10}, GetParam());
  for (int64_t dim : {2, 1}) {
    Case c;
    ir::Value* x = c.input(a, {{0, 0}});
    ir::Value* s = c.op(OpKind::kSoftmax, {x}, typeOf(a), {{"dim", dim}});
    ir::Value* l = c.op(OpKind::kLogSoftmax, {x}, typeOf(a), {{"dim", dim}});
    std::vector<at::Tensor> out = c.run({s, l});
    expectSame(out[0], at::softmax(a, dim));
    expectSame(out[1], at::log_softmax(a, dim));
  }
}

TEST_P(EvalByDType, LayerNorm) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({2, 3, 4, 8}, dt);
  at::Tensor w1 = randn({8}, dt), b1 = randn({8}, dt);
  at::Tensor w2 = randn({4, 8}, dt), b2 = randn({4, 8}, dt);
  {
    Case c;
    ir::Value* x = c.input(a, {{0, 0}});
    ir::Value* w = c.param(w1);
    ir::Value* b = c.param(b1);
    ir::Value* y = c.op(OpKind::kLayerNorm, {x, w, b}, typeOf(a),
                        {{"normalized_ndim", int64_t{1}}, {"eps", 1e-5}});
    expectSame(c.run1(y), at::layer_norm(a, {8}, w1, b1, 1e-5));
  }
  {
    Case c;
    ir::Value* x = c.input(a);
    ir::Value* w = c.param(w2);
    ir::Value* b = c.param(b2);
    ir::Value* y = c.op(OpKind::kLayerNorm, {x, w, b}, typeOf(a),
                        {{"normalized_ndim", int64_t{2}}, {"eps", 1e-3}});
    expectSame(c.run1(y), at::layer_norm(a, {4, 8}, w2, b2, 1e-3));
  }
  {
    Case c;
    ir::Value* x = c.input(a);
    ir::Value* y =
        c.op(OpKind::kLayerNorm, {x}, typeOf(a), {{"normalized_ndim", int64_t{1}}, {"eps", 1e-6}});
    expectSame(c.run1(y), at::layer_norm(a, {8}, {}, {}, 1e-6));
  }
  {
    Case c;
    ir::Value* x = c.input(a);
    ir::Value* w = c.param(w1);
    ir::Value* y = c.op(OpKind::kLayerNorm, {x, w}, typeOf(a),
                        {{"normalized_ndim", int64_t{1}}, {"eps", 1e-5}});
    expectSame(c.run1(y), at::layer_norm(a, {8}, w1, {}, 1e-5));
  }
}

// --- views
// ----------------------------------------------------------------------------------------

TEST_P(EvalByDType, Views) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({6, 12}, dt);
  Case c;
  ir::Value* x = c.input(a, {{0, 0}});
  SymDim s0 = c.symbol(0);
  DType t = toIrDType(dt);
  ir::Value* r = c.op(OpKind::kReshape, {x}, {t, {s0 * 3, 2, 2}});
  ir::Value* p =
      c.op(OpKind::kPermute, {r}, {t, {2, s0 * 3, 2}}, {{"perm", std::vector<int64_t>{2, 0, 1}}});
  at::Tensor b = randn({6, 1, 4}, dt);
  ir::Value* y = c.input(b, {{0, 0}});
  ir::Value* e = c.op(OpKind::kExpand, {y}, {t, {s0, 3, 4}});
  ir::Value* sl = c.op(OpKind::kSlice, {x}, {t, {s0, 4}},
                       {{"dim", int64_t{1}}, {"start", int64_t{1}}, {"step", int64_t{3}}});
  ir::Value* sl2 = c.op(OpKind::kSlice, {x}, {t, {s0 - 2, 12}},
                        {{"dim", int64_t{0}}, {"start", int64_t{2}}, {"step", int64_t{1}}});
  ir::Value* cat = c.op(OpKind::kCat, {x, sl}, {t, {s0, 16}}, {{"dim", int64_t{1}}});
  std::vector<at::Tensor> out = c.run({r, p, e, sl, sl2, cat});
  expectSame(out[0], a.reshape({18, 2, 2}));
  expectSame(out[1], a.reshape({18, 2, 2}).permute({2, 0, 1}));
  expectSame(out[2], b.expand({6, 3, 4}));
  expectSame(out[3], a.slice(1, 1, 12, 3));
  expectSame(out[4], a.slice(0, 2));
  expectSame(out[5], at::cat({a, a.slice(1, 1, 12, 3)}, 1));

  // A new batch size reuses the same graph: shapes follow the symbol.
  at::Tensor a2 = randn({3, 12}, dt), b2 = randn({3, 1, 4}, dt);
  std::vector<at::Tensor> out2 = evalGraph(c.g, {a2, b2}, {});
  expectSame(out2[0], a2.reshape({9, 2, 2}));
  expectSame(out2[2], b2.expand({3, 3, 4}));
  expectSame(out2[4], a2.slice(0, 2));
}

// --- library ops
// ------------------------------------------------------------------------------------

TEST_P(EvalByDType, Gemms) {
  const at::ScalarType dt = GetParam();
  at::Tensor a = randn({5, 8}, dt), b = randn({8, 3}, dt), bias = randn({5, 3}, dt);
  at::Tensor w = randn({3, 8}, dt), bl = randn({3}, dt);
  at::Tensor ba = randn({2, 5, 8}, dt), bb = randn({2, 8, 3}, dt), bbias = randn({2, 5, 3}, dt);
  Case c;
  ir::Value* A = c.input(a, {{0, 0}});
  ir::Value* B = c.param(b);
  ir::Value* Bias = c.input(bias, {{0, 0}});
  ir::Value* W = c.param(w);
  ir::Value* Bl = c.param(bl);
  ir::Value* BA = c.input(ba);
  ir::Value* BB = c.input(bb);
  ir::Value* BBias = c.input(bbias);
  DType t = toIrDType(dt);
  SymDim s0 = c.symbol(0);
  std::vector<ir::Value*> outs = {
      c.op(OpKind::kMatMul, {A, B}, {t, {s0, 3}}),
      c.op(OpKind::kMatMul, {BA, B}, {t, {2, 5, 3}}),
      c.op(OpKind::kLinear, {A, W, Bl}, {t, {s0, 3}}),
      c.op(OpKind::kLinear, {A, W}, {t, {s0, 3}}),
      c.op(OpKind::kAddmm, {Bias, A, B}, {t, {s0, 3}}, {{"beta", 0.5}, {"alpha", 2.0}}),
      c.op(OpKind::kAddmm, {Bl, A, B}, {t, {s0, 3}}),
      c.op(OpKind::kBmm, {BA, BB}, {t, {2, 5, 3}}),
      c.op(OpKind::kBaddbmm, {BBias, BA, BB}, {t, {2, 5, 3}}, {{"beta", 0.25}, {"alpha", 1.5}}),
  };
  std::vector<at::Tensor> out = c.run(outs);
  expectSame(out[0], at::matmul(a, b));
  expectSame(out[1], at::matmul(ba, b));
  expectSame(out[2], at::linear(a, w, bl));
  expectSame(out[3], at::linear(a, w));
  expectSame(out[4], at::addmm(bias, a, b, 0.5, 2.0));
  expectSame(out[5], at::addmm(bl, a, b));
  expectSame(out[6], at::bmm(ba, bb));
  expectSame(out[7], at::baddbmm(bbias, ba, bb, 0.25, 1.5));
}

TEST_P(EvalByDType, Sdpa) {
  const at::ScalarType dt = GetParam();
  at::Tensor q = randn({2, 3, 7, 16}, dt), k = randn({2, 3, 7, 16}, dt),
             v = randn({2, 3, 7, 16}, dt);
  at::Tensor boolMask = randn({7, 7}) > -0.5;
  at::Tensor addMask = randn({2, 1, 7, 7}, dt);
  Case c;
  ir::Value* Q = c.input(q, {{2, 0}});
  ir::Value* K = c.input(k, {{2, 0}});
  ir::Value* V = c.input(v, {{2, 0}});
  ir::Value* M = c.input(boolMask, {{0, 0}, {1, 0}});
  ir::Value* AM = c.input(addMask, {{2, 0}, {3, 0}});
  TensorType out{toIrDType(dt), {2, 3, c.symbol(0), 16}};
  std::vector<ir::Value*> outs = {
      c.op(OpKind::kSdpa, {Q, K, V}, out, {{"is_causal", false}}),
      c.op(OpKind::kSdpa, {Q, K, V}, out, {{"is_causal", true}}),
      c.op(OpKind::kSdpa, {Q, K, V, M}, out, {{"is_causal", false}, {"scale", 0.3}}),
      c.op(OpKind::kSdpa, {Q, K, V, AM}, out, {{"is_causal", false}}),
  };
  std::vector<at::Tensor> got = c.run(outs);
  expectSame(got[0], at::scaled_dot_product_attention(q, k, v));
  expectSame(got[1], at::scaled_dot_product_attention(q, k, v, {}, 0.0, true));
  expectSame(got[2], at::scaled_dot_product_attention(q, k, v, boolMask, 0.0, false, 0.3));
  expectSame(got[3], at::scaled_dot_product_attention(q, k, v, addMask));
  EXPECT_FALSE(at::equal(got[0], got[1]));
}

TEST_P(EvalByDType, Conv2d) {
  const at::ScalarType dt = GetParam();
  at::Tensor x = randn({2, 4, 9, 11}, dt);
  at::Tensor w = randn({6, 2, 3, 3}, dt), b = randn({6}, dt);
  at::Tensor w1 = randn({5, 4, 1, 1}, dt);
  at::Tensor want = at::conv2d(x, w, b, {2, 1}, {1, 2}, {1, 2}, 2);
  at::Tensor want1 = at::conv2d(x, w1);
  Case c;
  ir::Value* X = c.input(x, {{0, 0}});
  ir::Value* W = c.param(w);
  ir::Value* B = c.param(b);
  ir::Value* W1 = c.param(w1);
  ir::Value* y = c.op(OpKind::kConv2d, {X, W, B}, typeOf(want),
                      {{"stride", std::vector<int64_t>{2, 1}},
                       {"padding", std::vector<int64_t>{1, 2}},
                       {"dilation", std::vector<int64_t>{1, 2}},
                       {"groups", int64_t{2}}});
  ir::Value* y1 = c.op(OpKind::kConv2d, {X, W1}, typeOf(want1),
                       {{"stride", std::vector<int64_t>{1, 1}},
                        {"padding", std::vector<int64_t>{0, 0}},
                        {"dilation", std::vector<int64_t>{1, 1}},
                        {"groups", int64_t{1}}});
  std::vector<at::Tensor> got = c.run({y, y1});
  expectSame(got[0], want);
  expectSame(got[1], want1);
}

// --- small models -------------------------------------------------------------------------------

TEST_P(EvalByDType, Mlp) {
  const at::ScalarType dt = GetParam();
  at::Tensor x = randn({5, 16}, dt);
  at::Tensor w1 = randn({32, 16}, dt), b1 = randn({32}, dt), w2 = randn({16, 32}, dt),
             b2 = randn({16}, dt);
  at::Tensor g = randn({16}, dt), be = randn({16}, dt);
  Case c;
  ir::Value* X = c.input(x, {{0, 0}});
  SymDim s0 = c.symbol(0);
  DType t = toIrDType(dt);
  ir::Value* h = c.op(OpKind::kLinear, {X, c.param(w1), c.param(b1)}, {t, {s0, 32}});
  ir::Value* a = c.op(OpKind::kGeluTanh, {h}, {t, {s0, 32}});
  ir::Value* o = c.op(OpKind::kLinear, {a, c.param(w2), c.param(b2)}, {t, {s0, 16}});
  ir::Value* k = c.g.addConstant(0.5, DType::kFloat32);
  ir::Value* sc = c.op(OpKind::kMul, {o, k}, {t, {s0, 16}});
  ir::Value* r = c.op(OpKind::kAdd, {sc, X}, {t, {s0, 16}});
  ir::Value* y = c.op(OpKind::kLayerNorm, {r, c.param(g), c.param(be)}, {t, {s0, 16}},
                      {{"normalized_ndim", int64_t{1}}, {"eps", 1e-5}});
  at::Tensor got = c.run1(y);
  at::Tensor want = at::layer_norm(
      at::linear(at::gelu(at::linear(x, w1, b1), "tanh"), w2, b2) * 0.5 + x, {16}, g, be, 1e-5);
  expectSame(got, want);
}

TEST_P(EvalByDType, AttentionBlock) {
  // x [B, s0, 32] -> qkv linear -> heads -> masked sdpa -> merge heads -> out proj -> residual.
  const at::ScalarType dt = GetParam();
  const int64_t kB = 2, kT = 5, kH = 4, kD = 8, kE = kH * kD;
  at::Tensor x = randn({kB, kT, kE}, dt);
  at::Tensor wqkv = randn({3 * kE, kE}, dt) * 0.2, bqkv = randn({3 * kE}, dt);
  at::Tensor wo = randn({kE, kE}, dt) * 0.2, bo = randn({kE}, dt);
  at::Tensor mask = randn({kB, kT}) > -0.7;  // key padding mask, true = attend
  mask.select(1, 0).fill_(true);
  Case c;
  ir::Value* X = c.input(x, {{1, 0}});
  ir::Value* M = c.input(mask, {{1, 0}});
  SymDim s = c.symbol(0);
  DType t = toIrDType(dt);
  ir::Value* qkv = c.op(OpKind::kLinear, {X, c.param(wqkv), c.param(bqkv)}, {t, {kB, s, 3 * kE}});
  ir::Value* r = c.op(OpKind::kReshape, {qkv}, {t, {kB, s, 3, kH, kD}});
  ir::Value* p = c.op(OpKind::kPermute, {r}, {t, {3, kB, kH, s, kD}},
                      {{"perm", std::vector<int64_t>{2, 0, 3, 1, 4}}});
  auto head = [&](int64_t i) {
    ir::Value* sl = c.op(OpKind::kSlice, {p}, {t, {1, kB, kH, s, kD}},
                         {{"dim", int64_t{0}}, {"start", i}, {"step", int64_t{1}}});
    return c.op(OpKind::kReshape, {sl}, {t, {kB, kH, s, kD}});
  };
  ir::Value* q = head(0);
  ir::Value* k = head(1);
  ir::Value* v = head(2);
  ir::Value* m4 = c.op(OpKind::kReshape, {M}, {DType::kBool, {kB, 1, 1, s}});
  ir::Value* att = c.op(OpKind::kSdpa, {q, k, v, m4}, {t, {kB, kH, s, kD}}, {{"is_causal", false}});
  ir::Value* merged = c.op(OpKind::kPermute, {att}, {t, {kB, s, kH, kD}},
                           {{"perm", std::vector<int64_t>{0, 2, 1, 3}}});
  ir::Value* flat = c.op(OpKind::kReshape, {merged}, {t, {kB, s, kE}});
  ir::Value* o = c.op(OpKind::kLinear, {flat, c.param(wo), c.param(bo)}, {t, {kB, s, kE}});
  ir::Value* y = c.op(OpKind::kAdd, {o, X}, {t, {kB, s, kE}});
  at::Tensor got = c.run1(y);

  at::Tensor qkvR = at::linear(x, wqkv, bqkv).reshape({kB, kT, 3, kH, kD}).permute({2, 0, 3, 1, 4});
  at::Tensor attR =
      at::scaled_dot_product_attention(qkvR[0], qkvR[1], qkvR[2], mask.reshape({kB, 1, 1, kT}));
  at::Tensor want = at::linear(attR.permute({0, 2, 1, 3}).reshape({kB, kT, kE}), wo, bo) + x;
  if (dt == at::kFloat) {
    expectSame(got, want);
  } else {
    // Same calls, but reshape may copy where the reference views: allow a reduced-precision ulp.
    EXPECT_TRUE(at::allclose(got.to(at::kFloat), want.to(at::kFloat), 1e-2, 1e-2));
  }
}

INSTANTIATE_TEST_SUITE_P(Pointwise, EvalByDType,
                         ::testing::Values(at::kFloat, at::kBFloat16, at::kHalf), dtypeName);

// --- constants, integers, symbols, errors, memory
// ---------------------------------------------------

TEST(AtenEval, IntegerPromotionWithConstants) {
  at::Tensor xi = at::arange(12, at::kInt).reshape({3, 4});
  at::Tensor xl = at::arange(12, at::kLong).reshape({3, 4});
  {
    Case c;  // i32 + 1 stays i32
    ir::Value* x = c.input(xi);
    ir::Value* y = c.op(OpKind::kAdd, {x, c.g.addConstant(1, DType::kInt64)}, typeOf(xi));
    expectSame(c.run1(y), xi + 1);
  }
  {
    Case c;  // i64 * 0.5 becomes the default float
    ir::Value* x = c.input(xl);
    at::Tensor want = xl * 0.5;
    ASSERT_EQ(want.scalar_type(), at::kFloat);
    expectSame(c.run1(c.op(OpKind::kMul, {x, c.g.addConstant(0.5, DType::kFloat32)}, typeOf(want))),
               want);
  }
  {
    Case c;  // an int clamp bound keeps an int tensor int
    ir::Value* x = c.input(xi);
    expectSame(
        c.run1(c.op(OpKind::kClamp, {x}, typeOf(xi), {{"min", int64_t{2}}, {"max", int64_t{9}}})),
        at::clamp(xi, 2, 9));
  }
  {
    Case c;  // sum of bool counts in i64
    at::Tensor b = xi > 4;
    ir::Value* x = c.input(b);
    at::Tensor want = at::sum(b, {1}, false);
    ASSERT_EQ(want.scalar_type(), at::kLong);
    expectSame(c.run1(c.op(OpKind::kSum, {x}, typeOf(want),
                           {{"dims", std::vector<int64_t>{1}}, {"keepdim", false}})),
               want);
  }
}

TEST(AtenEval, ConstantOnlyExpressionsAndConstantOutputs) {
  at::Tensor a = randn({4}, at::kHalf);
  Case c;
  ir::Value* x = c.input(a);
  ir::Value* k1 = c.g.addConstant(0.25, DType::kFloat32);
  ir::Value* k2 = c.g.addConstant(2.0, DType::kFloat32);
  // (0.25 * 2) is a constant expression: still a Python scalar when it meets x_f16.
  ir::Value* k = c.op(OpKind::kMul, {k1, k2}, {DType::kFloat32, {}});
  ir::Value* y = c.op(OpKind::kMul, {x, k}, typeOf(a));
  ir::Value* e = c.op(OpKind::kExpand, {k2}, {DType::kFloat32, {3}});
  std::vector<at::Tensor> out = c.run({y, k1, e});
  expectSame(out[0], a * 0.5);
  expectSame(out[1], at::scalar_tensor(0.25, at::kFloat));
  EXPECT_FALSE(isScalarOperand(out[1]));
  expectSame(out[2], at::full({3}, 2.0, at::kFloat));
}

TEST(AtenEval, BindSymbols) {
  ir::Graph g;
  SymDim s0 = g.newSymbol(), s1 = g.newSymbol(), s2 = g.newSymbol();
  g.addInput("x", {DType::kFloat32, {s0, s1, 8}});
  g.addInput("mask", {DType::kBool, {s0, s1}});
  g.addInput("y", {DType::kFloat32, {s2 * 2 + 1}});  // bound only through a linear dim
  std::vector<int64_t> syms =
      bindSymbols(g, {at::zeros({3, 5, 8}), at::zeros({3, 5}, at::kBool), at::zeros({9})});
  EXPECT_EQ(syms, (std::vector<int64_t>{3, 5, 4}));
  EXPECT_EQ(concreteShape({s0 * s1, 8, s2 + 1}, syms), (std::vector<int64_t>{15, 8, 5}));
}

void expectUserError(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no UserError";
  } catch (const UserError& e) {
    std::string what = e.what();
    for (const std::string& n : needles)
      EXPECT_NE(what.find(n), std::string::npos) << what << " lacks " << n;
  }
}

TEST(AtenEval, BindSymbolsRejectsBadInputs) {
  ir::Graph g;
  SymDim s0 = g.newSymbol();
  g.addInput("x", {DType::kFloat32, {s0, 8}});
  g.addInput("mask", {DType::kBool, {s0, 8}});
  at::Tensor x = at::zeros({3, 8}), m = at::zeros({3, 8}, at::kBool);
  expectUserError([&] { bindSymbols(g, {x}); }, {"expected 2 inputs, got 1"});
  expectUserError(
      [&] {
        bindSymbols(g, {x, at::zeros({3, 8, 1}, at::kBool)});
      },
      {"input 1", "\"mask\"", "expected rank 2", "got rank 3"});
  expectUserError(
      [&] {
        bindSymbols(g, {at::zeros({3, 7}), m});
      },
      {"input 0", "\"x\"", "expected 8, got 7"});
  expectUserError(
      [&] {
        bindSymbols(g, {x, at::zeros({4, 8}, at::kBool)});
      },
      {"input 1", "\"mask\"", "= 3", "got 4", "input 0"});
  ir::Graph g2;
  SymDim t0 = g2.newSymbol();
  g2.addInput("odd", {DType::kFloat32, {t0 * 2 + 1}});
  expectUserError([&] { bindSymbols(g2, {at::zeros({8})}); }, {"\"odd\"", "got 8"});
}

TEST(AtenEval, EvalGraphChecksDTypesAndParams) {
  Case c;
  ir::Value* x = c.input(at::zeros({2, 3}));
  ir::Value* w = c.param(at::ones({3}));
  c.g.setOutputs({c.op(OpKind::kMul, {x, w}, {DType::kFloat32, {2, 3}})});
  expectUserError(
      [&] {
        evalGraph(c.g, {at::zeros({2, 3}, at::kHalf)}, c.params);
      },
      {"input 0", "\"in0\"", "f32", "Half"});
  expectUserError([&] { evalGraph(c.g, c.inputs, {}); }, {"expected 1 params, got 0"});
  expectUserError([&] { evalGraph(c.g, c.inputs, {at::ones({4})}); }, {"param 0", "\"p0\"", "[4]"});
  EXPECT_EQ(evalGraph(c.g, c.inputs, c.params).at(0).sizes(), at::IntArrayRef({2, 3}));
}

TEST(AtenEval, IrAtenDisagreementIsAnInternalError) {
  Case c;
  ir::Value* x = c.input(at::zeros({2, 3}));
  // The IR claims f16, but f32 * 0.5 is f32 in eager.
  ir::Value* y =
      c.op(OpKind::kMul, {x, c.g.addConstant(0.5, DType::kFloat32)}, {DType::kFloat16, {2, 3}});
  EXPECT_THROW(c.run1(y), InternalError);
}

TEST(AtenEval, ParamsAreUsedByReference) {
  at::Tensor w = randn({4, 4});
  Case c;
  ir::Value* x = c.input(randn({4}));
  ir::Value* p = c.param(w);
  ir::Value* v = c.op(OpKind::kPermute, {p}, {DType::kFloat32, {4, 4}},
                      {{"perm", std::vector<int64_t>{1, 0}}});
  std::vector<at::Tensor> out = c.run({p, v, x});
  EXPECT_TRUE(out[0].is_same(w));
  EXPECT_EQ(out[1].data_ptr(), w.data_ptr());
  EXPECT_TRUE(out[2].is_same(c.inputs[0]));
}

TEST(AtenEval, EagerNodes) {
  at::Tensor a = randn({3, 5});
  Case c;
  ir::Value* x = c.input(a, {{0, 0}});
  SymDim s = c.symbol(0);
  ir::Node* n = c.g.appendMulti(OpKind::kEager, {x},
                                {{"schema", std::string("aten::cummax")}, {"eager_id", int64_t{7}}},
                                {{DType::kFloat32, {s, 5}}, {DType::kInt64, {s, 5}}});
  ir::Value* y = c.op(OpKind::kAdd, {n->output(0), x}, {DType::kFloat32, {s, 5}});
  int calls = 0;
  EagerRunner runner = [&](const ir::Node& node, const std::vector<at::Tensor>& in,
                           const std::vector<int64_t>&) {
    ++calls;
    EXPECT_EQ(node.attrs().getInt("eager_id"), 7);
    auto [v, i] = at::cummax(in.at(0), 1);
    return std::vector<at::Tensor>{v, i};
  };
  std::vector<at::Tensor> out = c.run({y, n->output(1)}, runner);
  EXPECT_EQ(calls, 1);
  auto [v, i] = at::cummax(a, 1);
  expectSame(out[0], v + a);
  expectSame(out[1], i);
  EXPECT_THROW(evalGraph(c.g, c.inputs, c.params), InternalError);  // no runner
  EagerRunner wrongCount = [](const ir::Node&, const std::vector<at::Tensor>& in,
                              const std::vector<int64_t>&) {
    return std::vector<at::Tensor>{in[0]};
  };
  EXPECT_THROW(evalGraph(c.g, c.inputs, c.params, wrongCount), InternalError);
}

TEST(AtenEval, FreesIntermediatesAfterLastUse) {
  // x -> exp -> eager probe A (remembers its operand) -> neg -> eager probe B (checks that A's
  // operand is gone) -> output. Only the last value is a graph output.
  Case c;
  at::Tensor a = randn({64, 64});
  ir::Value* x = c.input(a);
  TensorType t = typeOf(a);
  ir::Value* e = c.op(OpKind::kExp, {x}, t);
  ir::Value* pa = c.g.appendMulti(OpKind::kEager, {e}, {{"eager_id", int64_t{0}}}, {t})->output(0);
  ir::Value* ng = c.op(OpKind::kNeg, {pa}, t);
  ir::Value* pb = c.g.appendMulti(OpKind::kEager, {ng}, {{"eager_id", int64_t{1}}}, {t})->output(0);
  ir::Value* out = c.op(OpKind::kAbs, {pb}, t);
  using WeakImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  std::optional<WeakImpl> seen;
  bool checked = false;
  EagerRunner runner = [&](const ir::Node& node, const std::vector<at::Tensor>& in,
                           const std::vector<int64_t>&) {
    if (node.attrs().getInt("eager_id") == 0) {
      seen.emplace(in[0].getIntrusivePtr());
      EXPECT_FALSE(seen->expired());
    } else {
      EXPECT_TRUE(seen && seen->expired()) << "exp's result is still held after its last use";
      checked = true;
    }
    return std::vector<at::Tensor>{in[0] * 2};
  };
  at::Tensor got = c.run1(out, runner);
  EXPECT_TRUE(checked);
  expectSame(got, at::abs(at::neg(at::exp(a) * 2) * 2));
  EXPECT_TRUE(c.inputs[0].defined());  // inputs are the caller's; only our handle goes
}

}  // namespace
}  // namespace kiln::jit

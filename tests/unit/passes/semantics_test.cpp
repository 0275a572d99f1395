// Property test in the spirit of Halide's pass fuzzing: random pointwise graphs over f32 inputs
// and constants (zeros of both signs, ones, NaN-producing sqrt), evaluated by a small reference
// interpreter before and after the default pipeline. Results must agree bitwise: the passes
// promise not to change numerics (Note [Exact canonicalization], Note [Folding numerics]).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <unordered_map>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/pipeline.h"

namespace kiln::passes {
namespace {

using ir::DType;
using ir::OpKind;
using ir::Value;

// Values are rank 0 ([] -> 1 element), [1] or [4]; broadcasting reads element i % size.
using Tensor = std::vector<float>;

float at(const Tensor& t, size_t i) {
  return t[i % t.size()];
}

std::vector<Tensor> evaluate(const ir::Graph& g, const std::vector<Tensor>& inputs) {
  std::unordered_map<const Value*, Tensor> env;
  size_t nextInput = 0;
  for (const auto& node : g.nodes()) {
    const Value* out = node->output();
    size_t n = static_cast<size_t>(ir::numel(out->shape()).constant());
    Tensor r(n);
    auto arg = [&](int k) -> const Tensor& { return env.at(node->input(k)); };
    for (size_t i = 0; i < n; ++i) {
      float a = node->inputs().size() > 0 ? at(arg(0), i) : 0.0f;
      float b = node->inputs().size() > 1 ? at(arg(1), i) : 0.0f;
      float v = 0.0f;
      switch (node->kind()) {
        case OpKind::kInput:
          v = inputs[nextInput][i];
          break;
        case OpKind::kConstant:
          v = static_cast<float>(node->attrs().getDouble("value"));
          break;
        case OpKind::kAdd:
          v = a + b;
          break;
        case OpKind::kSub:
          v = a - b;
          break;
        case OpKind::kMul:
          v = a * b;
          break;
        case OpKind::kDiv:
          v = a / b;
          break;
        case OpKind::kNeg:
          v = -a;
          break;
        case OpKind::kAbs:
          v = std::fabs(a);
          break;
        case OpKind::kSqrt:
          v = std::sqrt(a);
          break;
        case OpKind::kRelu:
          v = std::isnan(a) ? a : (a > 0.0f ? a : 0.0f);
          break;
        case OpKind::kMaximum:
          v = std::isnan(a) || std::isnan(b) ? NAN : (a > b ? a : b);
          break;
        case OpKind::kLt:
          v = a < b ? 1.0f : 0.0f;
          break;
        case OpKind::kWhere:
          v = a != 0.0f ? b : at(arg(2), i);
          break;
        case OpKind::kExpand:
        case OpKind::kReshape:
        case OpKind::kPermute:
        case OpKind::kCast:
          v = a;
          break;
        default:
          ADD_FAILURE() << "interpreter lacks " << ir::toString(node->kind());
      }
      r[i] = v;
    }
    if (node->kind() == OpKind::kInput) ++nextInput;
    env[out] = std::move(r);
  }
  std::vector<Tensor> outs;
  for (const Value* v : g.outputs()) outs.push_back(env.at(v));
  return outs;
}

std::unique_ptr<ir::Graph> randomGraph(std::mt19937& rng) {
  auto g = std::make_unique<ir::Graph>();
  std::vector<Value*> floats{g->addInput("x", {DType::kFloat32, {4}}),
                             g->addInput("y", {DType::kFloat32, {1}})};
  std::vector<Value*> bools;
  const double literals[] = {0.0, -0.0, 1.0, 2.0, 0.5, -3.0};
  auto pick = [&](const std::vector<Value*>& pool) {
    return pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
  };
  for (int step = 0; step < 14; ++step) {
    int choice = std::uniform_int_distribution<int>(0, 13)(rng);
    if (choice < 3) {
      floats.push_back(g->addConstant(literals[rng() % 6], DType::kFloat32));
      continue;
    }
    Value* a = pick(floats);
    Value* b = pick(floats);
    const OpKind binary[] = {OpKind::kAdd, OpKind::kSub, OpKind::kMul, OpKind::kDiv,
                             OpKind::kMaximum};
    const OpKind unary[] = {OpKind::kNeg, OpKind::kAbs, OpKind::kSqrt, OpKind::kRelu};
    switch (choice) {
      case 3:
      case 4:
      case 5:
      case 6:
        floats.push_back(g->op(binary[rng() % 5], {a, b}));
        break;
      case 7:
      case 8:
        floats.push_back(g->op(unary[rng() % 4], {a}));
        break;
      case 9:
        bools.push_back(g->op(OpKind::kLt, {a, b}));
        break;
      case 10:
        if (!bools.empty()) floats.push_back(g->op(OpKind::kWhere, {pick(bools), a, b}));
        break;
      case 11:
        if (a->rank() == 0 || a->shape()[0] == ir::SymDim(1))
          floats.push_back(g->op(OpKind::kExpand, {a}, {}, ir::TensorType{DType::kFloat32, {4}}));
        break;
      case 12:
        floats.push_back(g->op(OpKind::kReshape, {a}, {}, a->type()));
        break;
      default:
        if (a->rank() == 1)
          floats.push_back(g->op(OpKind::kPermute, {a}, {{"perm", std::vector<int64_t>{0}}}));
        else
          floats.push_back(g->op(OpKind::kCast, {a}, {}, a->type()));
    }
  }
  g->setOutputs({floats.back(), floats[floats.size() / 2], pick(floats)});
  return g;
}

bool sameBits(const Tensor& a, const Tensor& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return false;
  }
  return true;
}

TEST(PassSemantics, RandomPointwiseGraphsKeepTheirValues) {
  const std::vector<Tensor> inputs{{0.0f, -0.0f, 1.5f, -2.0f}, {-0.0f}};
  int changedGraphs = 0;
  for (uint32_t seed = 0; seed < 300; ++seed) {
    std::mt19937 rng(seed);
    auto g = randomGraph(rng);
    ir::verify(*g);
    std::string before = ir::print(*g);
    auto expected = evaluate(*g, inputs);
    // Round trip through text first: the passes run on what tests would write.
    auto parsed = ir::parse(before);
    ASSERT_EQ(ir::print(*parsed), before) << "seed " << seed;
    changedGraphs += runDefaultPasses(*parsed) > 0;
    auto got = evaluate(*parsed, inputs);
    for (size_t o = 0; o < expected.size(); ++o)
      ASSERT_TRUE(sameBits(expected[o], got[o]))
          << "seed " << seed << ", output " << o << "\nbefore:\n"
          << before << "after:\n"
          << ir::print(*parsed);
  }
  EXPECT_GT(changedGraphs, 100);  // the generator must exercise the passes
}

}  // namespace
}  // namespace kiln::passes

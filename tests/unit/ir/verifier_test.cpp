#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/verifier.h"
#include "src/support/error.h"

namespace kiln::ir {
namespace {

template <typename E>
std::string errorOf(const Graph& g) {
  try {
    verify(g);
  } catch (const E& e) {
    return e.what();
  }
  return "no error";
}

TEST(Verifier, AcceptsValidGraph) {
  auto g = parse(R"(graph(%x: f32[s0, 8]) {
  %0 = relu(%x)
  %1: f32[s0, 2, 4] = reshape(%0)
  return(%1)
})");
  EXPECT_NO_THROW(verify(*g));
}

TEST(Verifier, CatchesWrongStoredType) {
  Graph g;
  Value* x = g.addInput("x", {DType::kFloat32, {8}});
  Value* y = g.op(OpKind::kExp, {x});
  g.setOutputs({y});
  y->setType({DType::kFloat16, {8}});
  std::string e = errorOf<UserError>(g);
  EXPECT_NE(e.find("result type is f16[8], but shape inference gives f32[8]"), std::string::npos)
      << e;
}

TEST(Verifier, CatchesOperandArity) {
  Graph g;
  Value* x = g.addInput("x", {DType::kFloat32, {8}});
  Value* y = g.op(OpKind::kAdd, {x, x}, {}, TensorType{DType::kFloat32, {8}});
  Value* z = g.op(OpKind::kRelu, {x, y}, {}, TensorType{DType::kFloat32, {8}});
  g.setOutputs({z});
  std::string e = errorOf<UserError>(g);
  EXPECT_NE(e.find("relu takes 1..1 operands, got 2"), std::string::npos) << e;
}

TEST(Verifier, CatchesBadExplicitTypes) {
  Graph g;
  Value* x = g.addInput("x", {DType::kFloat32, {2, 3}});
  Value* e1 = g.op(OpKind::kExpand, {x}, {}, TensorType{DType::kFloat32, {4, 3}});
  g.setOutputs({e1});
  EXPECT_NE(errorOf<UserError>(g).find("cannot expand"), std::string::npos);

  Graph h;
  Value* y = h.addInput("y", {DType::kFloat32, {2, 8}});
  Value* s =
      h.op(OpKind::kSlice, {y}, {{"dim", int64_t{1}}, {"start", int64_t{4}}, {"step", int64_t{2}}},
           TensorType{DType::kFloat32, {2, 3}});
  h.setOutputs({s});
  EXPECT_NE(errorOf<UserError>(h).find("exceeds dim size 8"), std::string::npos);
}

TEST(Verifier, CatchesBadOrderAndUses) {
  // Build a graph whose operand refers to a value that is defined later: insert a node that uses
  // an existing value before that value's producer.
  Graph g;
  Value* x = g.addInput("x", {DType::kFloat32, {8}});
  Value* a = g.op(OpKind::kExp, {x});
  Value* b = g.op(OpKind::kNeg, {a});
  g.setOutputs({b});
  Node* early = g.insertBefore(a->producer(), OpKind::kRelu, {x});
  g.setOutputs({b, early->output()});
  EXPECT_NO_THROW(verify(g));
  a->producer()->replaceInput(0, b);  // exp now reads neg's output, which comes after it
  std::string e = errorOf<InternalError>(g);
  EXPECT_NE(e.find("not defined before its use"), std::string::npos) << e;
}

TEST(Verifier, CatchesUndefinedOutput) {
  Graph g;
  Value* x = g.addInput("x", {DType::kFloat32, {8}});
  Graph other;
  Value* y = other.addInput("y", {DType::kFloat32, {8}});
  g.setOutputs({x, y});
  EXPECT_NE(errorOf<InternalError>(g).find("graph output 1 is not defined"), std::string::npos);
}

}  // namespace
}  // namespace kiln::ir

#include <gtest/gtest.h>

#include <cmath>

#include "src/ir/graph.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/support/error.h"

namespace kiln::ir {
namespace {

TEST(OpKind, NamesRoundTrip) {
  for (int i = 0; i < kNumOpKinds; ++i) {
    auto k = static_cast<OpKind>(i);
    EXPECT_EQ(parseOpKind(toString(k)), k) << toString(k);
  }
  EXPECT_EQ(parseOpKind("no_such_op"), std::nullopt);
  EXPECT_EQ(categoryOf(OpKind::kAdd), OpCategory::kPointwise);
  EXPECT_EQ(categoryOf(OpKind::kSoftmax), OpCategory::kNormalization);
  EXPECT_EQ(categoryOf(OpKind::kLinear), OpCategory::kLibrary);
  EXPECT_EQ(categoryOf(OpKind::kEager), OpCategory::kEager);
  EXPECT_EQ(arityOf(OpKind::kWhere).min, 3);
  EXPECT_EQ(arityOf(OpKind::kCat).max, -1);
}

TEST(DType, NamesAndPromotion) {
  EXPECT_EQ(parseDType("half"), DType::kFloat16);
  EXPECT_EQ(parseDType("torch.bfloat16"), DType::kBFloat16);
  EXPECT_EQ(toString(parseDType("f32")), "f32");
  EXPECT_THROW(parseDType("f8"), UserError);
  EXPECT_EQ(promote(DType::kFloat16, DType::kBFloat16), DType::kFloat32);
  EXPECT_EQ(promote(DType::kInt64, DType::kFloat16), DType::kFloat16);
  EXPECT_EQ(promote(DType::kBool, DType::kInt32), DType::kInt32);
  EXPECT_EQ(byteSize(DType::kBFloat16), 2);
}

TEST(Attrs, SortedTypedAndHashed) {
  Attrs a{{"keepdim", true}, {"dims", std::vector<int64_t>{1, 2}}, {"eps", 1e-5}};
  EXPECT_EQ(a.toString(), "{dims = [1, 2], eps = 1e-05, keepdim = true}");
  EXPECT_EQ(a.getInts("dims"), (std::vector<int64_t>{1, 2}));
  EXPECT_TRUE(a.getBool("keepdim"));
  EXPECT_THROW(a.getInt("keepdim"), InternalError);
  EXPECT_THROW(a.getInt("missing"), InternalError);
  Attrs b{{"eps", 1e-5}, {"keepdim", true}, {"dims", std::vector<int64_t>{1, 2}}};
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.hash(), b.hash());
  b.set("keepdim", false);
  EXPECT_NE(a.hash(), b.hash());
  // Doubles compare bitwise: CSE must not merge -0.0 with 0.0.
  EXPECT_NE((Attrs{{"value", -0.0}}), (Attrs{{"value", 0.0}}));
  EXPECT_NE((Attrs{{"value", -0.0}}.hash()), (Attrs{{"value", 0.0}}.hash()));
  EXPECT_EQ((Attrs{{"value", NAN}}), (Attrs{{"value", NAN}}));
  Attrs c{{"value", int64_t{2}}};
  EXPECT_EQ(c.getDouble("value"), 2.0);
  EXPECT_EQ((Attrs{{"value", 2.0}}.toString()), "{value = 2.0}");
  EXPECT_EQ((Attrs{{"s", "str"}}.getString("s")), "str");
  EXPECT_EQ(Attrs{}.toString(), "");
}

TEST(Graph, BuildInferAndUses) {
  Graph g;
  SymDim b = g.newSymbol();
  Value* x = g.addInput("x", {DType::kFloat16, {b, 128}});
  Value* w = g.addParam("w", {DType::kFloat16, {128}});
  Value* c = g.addConstant(0.5, DType::kFloat32);
  Value* m = g.op(OpKind::kMul, {x, w});
  Value* a = g.op(OpKind::kAdd, {m, c});
  g.setOutputs({a});
  EXPECT_EQ(a->type().toString(), "f16[s0, 128]");
  EXPECT_EQ(x->uses().size(), 1u);
  EXPECT_EQ(x->uses()[0].user, m->producer());
  EXPECT_EQ(c->uses()[0].index, 1);
  EXPECT_EQ(g.inputs(), std::vector<Value*>{x});
  EXPECT_EQ(g.params(), std::vector<Value*>{w});
  // A later input still lands in the boundary prefix.
  Value* y = g.addInput("y", {DType::kFloat16, {b, 128}});
  EXPECT_EQ(y->producer()->index(), 2);
  EXPECT_EQ(y->producer()->attrs().getInt("index"), 1);
  verify(g);
  EXPECT_THROW(g.op(OpKind::kAdd, {x, g.addInput("z", {DType::kFloat16, {64}})}), UserError);
}

TEST(Graph, RewriteEraseInsertClone) {
  Graph g;
  Value* x = g.addInput("x", {DType::kFloat32, {4, 8}});
  Value* e = g.op(OpKind::kExp, {x});
  Value* r = g.op(OpKind::kRelu, {e});
  g.setOutputs({r});
  // Insert tanh before relu and route relu through it.
  Node* t = g.insertBefore(r->producer(), OpKind::kTanh, {e});
  EXPECT_EQ(t->index() + 1, r->producer()->index());
  r->producer()->replaceInput(0, t->output());
  EXPECT_EQ(e->uses().size(), 1u);
  verify(g);
  EXPECT_THROW(g.erase(e->producer()), InternalError);  // still used
  g.replaceAllUsesWith(r, t->output());
  EXPECT_EQ(g.outputs()[0], t->output());
  g.erase(r->producer());
  verify(g);
  EXPECT_EQ(g.nodes().size(), 3u);

  auto copy = g.clone();
  verify(*copy);
  EXPECT_EQ(print(*copy), print(g));
  EXPECT_NE(copy->outputs()[0], g.outputs()[0]);
  EXPECT_EQ(copy->outputs()[0]->id(), g.outputs()[0]->id());
}

TEST(Graph, ConstantsDominateInsertedUsers) {
  Graph g;
  Value* x = g.addInput("x", {DType::kFloat32, {4}});
  Value* e = g.op(OpKind::kExp, {x});
  g.setOutputs({e});
  Value* c = g.addConstant(2.0, DType::kFloat32);
  EXPECT_LT(c->producer()->index(), e->producer()->index());
  verify(g);
}

}  // namespace
}  // namespace kiln::ir

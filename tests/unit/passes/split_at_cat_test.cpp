// splitAtCat within the default pipeline (Note [Pointwise ops through cat]): a rotary embedding's
// neg/cat/mul/add becomes one cat of two pointwise halves that read strided views of the inputs;
// cats of many parts, cats with other readers and overlapping slices stay as they are.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/passes/pipeline.h"
#include "src/passes/split_at_cat.h"
#include "tests/support/graph_counts.h"

namespace kiln::passes {
namespace {

using ::kiln::testing::countOf;

TEST(SplitAtCat, RotaryEmbeddingBecomesACatOfTwoHalves) {
  auto g = ir::parse(
      R"(graph(%x: f32[s0, 4, s1, 8], %cos: f32[1, 1, s1, 8], %sin: f32[1, 1, s1, 8]) {
  %x1: f32[s0, 4, s1, 4] = slice(%x) {dim = 3, start = 0, step = 1}
  %x2: f32[s0, 4, s1, 4] = slice(%x) {dim = 3, start = 4, step = 1}
  %n = neg(%x2)
  %r = cat(%n, %x1) {dim = 3}
  %a = mul(%x, %cos)
  %b = mul(%r, %sin)
  %o = add(%a, %b)
  return(%o)
})");
  runDefaultPasses(*g);
  ASSERT_EQ(countOf(*g, ir::OpKind::kCat), 1) << ir::print(*g);
  for (const auto& n : g->nodes()) {
    if (n->kind() == ir::OpKind::kCat) {
      ASSERT_EQ(n->inputs().size(), 2u);
      for (const ir::Value* part : n->inputs())
        EXPECT_EQ(part->producer()->kind(), ir::OpKind::kAdd) << ir::print(*g);
      EXPECT_EQ(ir::toString(n->output()->shape()), "[s0, 4, s1, 8]");
    } else if (n->category() == ir::OpCategory::kPointwise) {
      EXPECT_EQ(n->output()->shape().back(), ir::SymDim(4)) << ir::print(*g);
    } else if (n->kind() == ir::OpKind::kSlice) {  // only views of the inputs
      EXPECT_EQ(n->input(0)->producer()->kind(), ir::OpKind::kInput) << ir::print(*g);
    }
  }
  // Each half: 2 muls, an add, and one neg in the first half.
  EXPECT_EQ(countOf(*g, ir::OpKind::kMul), 4);
  EXPECT_EQ(countOf(*g, ir::OpKind::kAdd), 2);
  EXPECT_EQ(countOf(*g, ir::OpKind::kNeg), 1);
  EXPECT_EQ(countOf(*g, ir::OpKind::kSlice), 6);  // halves of x (CSE: the same as x1, x2), cos, sin
}

TEST(SplitAtCat, NearMissesStay) {
  auto unchanged = [](const std::string& text) {
    auto g = ir::parse(text);
    const std::string before = ir::print(*g);
    EXPECT_FALSE(splitAtCat(*g)) << before;
    ir::verify(*g);
    EXPECT_EQ(ir::print(*g), before);
  };
  // Five parts: one kernel per part would cost more than the copy.
  unchanged(R"(graph(%a: f32[2, 3], %b: f32[2, 3], %c: f32[2, 3], %d: f32[2, 3], %e: f32[2, 3]) {
  %k = cat(%a, %b, %c, %d, %e) {dim = 1}
  %r = relu(%k)
  return(%r)
})");
  // Parts of different shapes would each be a kernel of their own.
  unchanged(R"(graph(%a: f32[2, 3], %b: f32[2, 5]) {
  %k = cat(%a, %b) {dim = 1}
  %r = relu(%k)
  return(%r)
})");
  // The cat has another reader (it is also returned).
  unchanged(R"(graph(%a: f32[2, 3], %b: f32[2, 3]) {
  %k = cat(%a, %b) {dim = 1}
  %r = relu(%k)
  return(%r, %k)
})");
  // The cat is broadcast by the op (its result is larger than the cat).
  unchanged(R"(graph(%a: f32[1, 3], %b: f32[1, 3], %y: f32[5, 6]) {
  %k = cat(%a, %b) {dim = 1}
  %r = add(%k, %y)
  return(%r)
})");
  // Overlapping slices of one pointwise result would compute it twice.
  unchanged(R"(graph(%x: f32[2, 8]) {
  %e = exp(%x)
  %s1: f32[2, 6] = slice(%e) {dim = 1, start = 0, step = 1}
  %s2: f32[2, 6] = slice(%e) {dim = 1, start = 2, step = 1}
  %r = add(%s1, %s2)
  return(%r)
})");
  // A strided slice (step 2) is not pulled through.
  unchanged(R"(graph(%x: f32[2, 8]) {
  %e = exp(%x)
  %s: f32[2, 4] = slice(%e) {dim = 1, start = 0, step = 2}
  return(%s)
})");
}

TEST(SplitAtCat, SliceOfACatPartIsThePart) {
  auto g = ir::parse(R"(graph(%a: f32[2, 3], %b: f32[2, 5]) {
  %k = cat(%a, %b) {dim = 1}
  %s: f32[2, 5] = slice(%k) {dim = 1, start = 3, step = 1}
  %t: f32[2, 4] = slice(%k) {dim = 1, start = 2, step = 1}
  %r = exp(%s)
  return(%r, %t)
})");
  EXPECT_TRUE(splitAtCat(*g));
  eliminateDeadCode(*g);
  ir::verify(*g);
  // %s is %b; %t straddles both parts and stays a slice of the cat.
  EXPECT_EQ(ir::print(*g), ir::print(*ir::parse(R"(graph(%a: f32[2, 3], %b: f32[2, 5]) {
  %k = cat(%a, %b) {dim = 1}
  %t: f32[2, 4] = slice(%k) {dim = 1, start = 2, step = 1}
  %r = exp(%b)
  return(%r, %t)
})")));
}

}  // namespace
}  // namespace kiln::passes

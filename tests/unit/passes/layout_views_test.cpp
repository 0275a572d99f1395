// rewriteLayoutViews on graphs written as text (Note [Split before merge], Note [Linear rows in
// source order]). tests/integration/eval/layout_views_eval_test.cpp runs the rewritten chains
// through ATen: same values, and views where the old chain copied.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/canonicalize.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/passes/layout_views.h"

namespace kiln::passes {
namespace {

void expectRewrite(const std::string& input, const std::string& expected, bool changed) {
  auto g = ir::parse(input);
  EXPECT_EQ(rewriteLayoutViews(*g), changed);
  while (canonicalize(*g)) {  // the chains the rewrite leaves, simplified as the pipeline would
  }
  eliminateDeadCode(*g);
  ir::verify(*g);
  EXPECT_EQ(ir::print(*g), ir::print(*ir::parse(expected)));
}

TEST(LayoutViews, LinearAfterRowPermuteBatchFirstAttentionInputProjection) {
  // nn.MultiheadAttention(batch_first=True): [b, s, h] -> [s, b, h], then the QKV projection.
  expectRewrite(
      R"(graph(%x: f16[s0, 16, 768], %w: f16[2304, 768] param, %b: f16[2304] param) {
  %0 = permute(%x) {perm = [1, 0, 2]}
  %1 = linear(%0, %w, %b)
  %2 = gelu(%1)
  return(%2)
})",
      R"(graph(%x: f16[s0, 16, 768], %w: f16[2304, 768] param, %b: f16[2304] param) {
  %3 = linear(%x, %w, %b)
  %4 = permute(%3) {perm = [1, 0, 2]}
  %2 = gelu(%4)
  return(%2)
})",
      true);
}

TEST(LayoutViews, LinearPermuteWithOtherUsersStaysForThem) {
  expectRewrite(
      R"(graph(%x: f32[2, 3, 5, 8], %w: f32[4, 8] param) {
  %0 = permute(%x) {perm = [2, 0, 1, 3]}
  %1 = linear(%0, %w)
  %2 = sum(%0) {dims = [3], keepdim = false}
  return(%1, %2)
})",
      R"(graph(%x: f32[2, 3, 5, 8], %w: f32[4, 8] param) {
  %0 = permute(%x) {perm = [2, 0, 1, 3]}
  %3 = linear(%x, %w)
  %4 = permute(%3) {perm = [2, 0, 1, 3]}
  %2 = sum(%0) {dims = [3], keepdim = false}
  return(%4, %2)
})",
      true);
}

TEST(LayoutViews, LinearPermutesThatKeepTheRowOrderAreLeftAlone) {
  const std::string moved = R"(graph(%x: f32[4, 8, 8], %w: f32[6, 8] param) {
  %0 = permute(%x) {perm = [0, 2, 1]}
  %1 = linear(%0, %w)
  return(%1)
})";
  expectRewrite(moved, moved, false);
  const std::string noPermute = R"(graph(%x: f32[4, 8, 8], %w: f32[6, 8] param) {
  %1 = linear(%x, %w)
  return(%1)
})";
  expectRewrite(noPermute, noPermute, false);
}

TEST(LayoutViews, AttentionHeadsSplitBeforeTheyMerge) {
  // nn.MultiheadAttention: q [seq, b, 768] -> [seq, 12*b, 64] -> [12*b, seq, 64] -> [b, 12, seq,
  // 64].
  expectRewrite(
      R"(graph(%q: f16[s0, s1, 768]) {
  %0: f16[s0, 12*s1, 64] = reshape(%q)
  %1 = permute(%0) {perm = [1, 0, 2]}
  %2: f16[s1, 12, s0, 64] = reshape(%1)
  %3 = exp(%2)
  return(%3)
})",
      R"(graph(%q: f16[s0, s1, 768]) {
  %4: f16[s0, s1, 12, 64] = reshape(%q)
  %5 = permute(%4) {perm = [1, 2, 0, 3]}
  %3 = exp(%5)
  return(%3)
})",
      true);
}

TEST(LayoutViews, SplitBeforeMergeKeepsTheMergesTheResultNeeds) {
  // [2, 3, 4] -> [6, 4] -> [4, 6] -> [4, 3, 2]: the 6 splits into 3 x 2, which are not [2, 3]'s
  // factors in x's order: the refinement splits x's dims and the outer reshape merges nothing.
  expectRewrite(
      R"(graph(%x: f32[2, 3, 4]) {
  %0: f32[6, 4] = reshape(%x)
  %1 = permute(%0) {perm = [1, 0]}
  %2: f32[4, 3, 2] = reshape(%1)
  return(%2)
})",
      R"(graph(%x: f32[2, 3, 4]) {
  %0: f32[6, 4] = reshape(%x)
  %1 = permute(%0) {perm = [1, 0]}
  %2: f32[4, 3, 2] = reshape(%1)
  return(%2)
})",
      false);
  // Here [4, 6] merges back what was merged: x [2, 3, 4] -> [6, 4] -> [4, 6] -> [4, 2, 3].
  expectRewrite(
      R"(graph(%x: f32[2, 3, 4]) {
  %0: f32[6, 4] = reshape(%x)
  %1 = permute(%0) {perm = [1, 0]}
  %2: f32[4, 2, 3] = reshape(%1)
  return(%2)
})",
      R"(graph(%x: f32[2, 3, 4]) {
  %3 = permute(%x) {perm = [2, 0, 1]}
  return(%3)
})",
      true);
}

TEST(LayoutViews, AttentionOutputProjectionReadsRowsInAttentionOrder) {
  // [b, h, s, d] -> [s, b, h, d] -> [s*b, h*d] -> out_proj -> [s, b, 768] -> [b, s, 768].
  expectRewrite(
      R"(graph(%q: f16[s0, 12, s1, 64], %k: f16[s0, 12, s1, 64], %v: f16[s0, 12, s1, 64], %w: f16[768, 768] param, %b: f16[768] param) {
  %a = sdpa(%q, %k, %v)
  %0 = permute(%a) {perm = [2, 0, 1, 3]}
  %1: f16[s0*s1, 768] = reshape(%0)
  %2 = linear(%1, %w, %b)
  %3: f16[s1, s0, 768] = reshape(%2)
  %4 = permute(%3) {perm = [1, 0, 2]}
  return(%4)
})",
      R"(graph(%q: f16[s0, 12, s1, 64], %k: f16[s0, 12, s1, 64], %v: f16[s0, 12, s1, 64], %w: f16[768, 768] param, %b: f16[768] param) {
  %a = sdpa(%q, %k, %v)
  %5 = permute(%a) {perm = [0, 2, 1, 3]}
  %6: f16[s0, s1, 768] = reshape(%5)
  %7 = linear(%6, %w, %b)
  return(%7)
})",
      true);
}

TEST(LayoutViews, LinearRowsStayWhenTheSourceIsNotReadInOrder) {
  // a [4, 5, 8] -> [8, 4, 5]: the linear maps a's dim 1 (5). In a's order the new input would be
  // [4, 8, 5] -> still a transposed read of a, so the rows keep their order.
  const std::string g = R"(graph(%a: f32[4, 5, 8], %w: f32[6, 5] param) {
  %0 = permute(%a) {perm = [2, 0, 1]}
  %1 = linear(%0, %w)
  return(%1)
})";
  expectRewrite(g, g, false);
}

TEST(LayoutViews, ShapesWithoutACommonRefinementAreLeftAlone) {
  // 6 and 4 share no factor chain: no rewrite, no error.
  const std::string g = R"(graph(%x: f32[6, 4]) {
  %0: f32[4, 6] = reshape(%x)
  %1 = permute(%0) {perm = [1, 0]}
  %2: f32[3, 8] = reshape(%1)
  return(%2)
})";
  expectRewrite(g, g, false);
}

}  // namespace
}  // namespace kiln::passes

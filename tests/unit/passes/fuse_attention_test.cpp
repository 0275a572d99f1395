// fuseAttention on graphs written as text: the explicit attention forms become one sdpa node
// (dead code removed afterwards), near misses are left alone.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/fuse_attention.h"
#include "tests/support/pass_rewrite.h"

namespace kiln::passes {
namespace {

void expectFused(const std::string& input, const std::string& expected, bool changed = true) {
  testing::expectRewrite(fuseAttention, input, expected, changed);
}

TEST(FuseAttention, ScaleAfterMatmulWithMask) {
  expectFused(
      R"(graph(%q: f16[s0, 12, s1, 64], %k: f16[s0, 12, s1, 64], %v: f16[s0, 12, s1, 64], %m: f16[s0, 1, 1, s1]) {
  %c: f32[] = constant() {value = 8.0}
  %0 = permute(%k) {perm = [0, 1, 3, 2]}
  %1 = matmul(%q, %0)
  %2 = div(%1, %c)
  %3 = add(%2, %m)
  %4 = softmax(%3) {dim = 3}
  %5 = matmul(%4, %v)
  return(%5)
})",
      R"(graph(%q: f16[s0, 12, s1, 64], %k: f16[s0, 12, s1, 64], %v: f16[s0, 12, s1, 64], %m: f16[s0, 1, 1, s1]) {
  %5 = sdpa(%q, %k, %v, %m) {is_causal = false, scale = 0.125}
  return(%5)
})");
}

TEST(FuseAttention, ScaleOnQueryMaskFirstNoMask) {
  // Mask as the first operand of the add, scale on q.
  expectFused(R"(graph(%q: f32[2, 5, 16], %k: f32[2, 7, 16], %v: f32[2, 7, 8], %m: f32[5, 7]) {
  %c: f32[] = constant() {value = 0.25}
  %0 = mul(%q, %c)
  %1 = permute(%k) {perm = [0, 2, 1]}
  %2 = matmul(%0, %1)
  %3 = add(%m, %2)
  %4 = softmax(%3) {dim = 2}
  %5 = matmul(%4, %v)
  return(%5)
})",
              R"(graph(%q: f32[2, 5, 16], %k: f32[2, 7, 16], %v: f32[2, 7, 8], %m: f32[5, 7]) {
  %5 = sdpa(%q, %k, %v, %m) {is_causal = false, scale = 0.25}
  return(%5)
})");
  // No scale, no mask.
  expectFused(R"(graph(%q: bf16[3, 4, 9, 32], %k: bf16[3, 4, 9, 32], %v: bf16[3, 4, 9, 32]) {
  %0 = permute(%k) {perm = [0, 1, 3, 2]}
  %1 = matmul(%q, %0)
  %2 = softmax(%1) {dim = 3}
  %3 = matmul(%2, %v)
  return(%3)
})",
              R"(graph(%q: bf16[3, 4, 9, 32], %k: bf16[3, 4, 9, 32], %v: bf16[3, 4, 9, 32]) {
  %3 = sdpa(%q, %k, %v) {is_causal = false, scale = 1.0}
  return(%3)
})");
}

TEST(FuseAttention, NearMissesAreLeftAlone) {
  const std::string wrongDim =
      R"(graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16]) {
  %0 = permute(%k) {perm = [0, 1, 3, 2]}
  %1 = matmul(%q, %0)
  %2 = softmax(%1) {dim = 2}
  %3 = matmul(%2, %v)
  return(%3)
})";
  expectFused(wrongDim, wrongDim, false);
  // The scores are also an output: fusing would lose them.
  const std::string scoresUsed =
      R"(graph(%q: f32[2, 4, 8, 16], %k: f32[2, 4, 8, 16], %v: f32[2, 4, 8, 16]) {
  %0 = permute(%k) {perm = [0, 1, 3, 2]}
  %1 = matmul(%q, %0)
  %2 = softmax(%1) {dim = 3}
  %3 = matmul(%2, %v)
  return(%3, %2)
})";
  expectFused(scoresUsed, scoresUsed, false);
  // k permuted the wrong way (not a transpose of the last two dims).
  const std::string wrongPerm =
      R"(graph(%q: f32[2, 8, 4, 8], %k: f32[2, 8, 8, 8], %v: f32[2, 8, 8, 8]) {
  %0 = permute(%k) {perm = [0, 2, 1, 3]}
  %1 = matmul(%q, %0)
  %2 = softmax(%1) {dim = 3}
  %3 = matmul(%2, %v)
  return(%3)
})";
  expectFused(wrongPerm, wrongPerm, false);
  // A mask that changes the scores' shape (it broadcasts them up) is not a mask.
  const std::string growing =
      R"(graph(%q: f32[1, 4, 8, 16], %k: f32[1, 4, 8, 16], %v: f32[1, 4, 8, 16], %m: f32[3, 4, 8, 8]) {
  %0 = permute(%k) {perm = [0, 1, 3, 2]}
  %1 = matmul(%q, %0)
  %2 = add(%1, %m)
  %3 = softmax(%2) {dim = 3}
  %4 = matmul(%3, %v)
  return(%4)
})";
  expectFused(growing, growing, false);
}

// Note [Additive attention masks]: one boolean mask read by two sdpa calls is converted once, in
// the query's dtype, before the first; a float mask stays as it is, and a call with another query
// dtype gets a conversion of its own.
TEST(AdditiveAttentionMasks, OneConversionPerMaskAndDtype) {
  auto g = ir::parse(
      R"(graph(%q: f16[s0, 12, s1, 64], %p: f32[s0, 12, s1, 64], %m: bool[s0, 1, s1, s1], %f: f16[s0, 1, 1, s1]) {
  %0 = sdpa(%q, %q, %q, %m) {is_causal = false, scale = 0.125}
  %1 = sdpa(%0, %0, %0, %m) {is_causal = false, scale = 0.125}
  %2 = sdpa(%1, %1, %1, %f) {is_causal = false, scale = 0.125}
  %3 = sdpa(%p, %p, %p, %m) {is_causal = false}
  return(%2, %3)
})");
  EXPECT_TRUE(additiveAttentionMasks(*g));
  ir::verify(*g);
  EXPECT_EQ(
      ir::print(*g),
      ir::print(*ir::parse(
          R"(graph(%q: f16[s0, 12, s1, 64], %p: f32[s0, 12, s1, 64], %m: bool[s0, 1, s1, s1], %f: f16[s0, 1, 1, s1]) {
  %0: f16[] = constant() {value = 0.0}
  %1: f16[] = constant() {value = -inf}
  %2: f32[] = constant() {value = 0.0}
  %3: f32[] = constant() {value = -inf}
  %4: f16[s0, 1, s1, s1] = where(%m, %0, %1)
  %5 = sdpa(%q, %q, %q, %4) {is_causal = false, scale = 0.125}
  %6 = sdpa(%5, %5, %5, %4) {is_causal = false, scale = 0.125}
  %7 = sdpa(%6, %6, %6, %f) {is_causal = false, scale = 0.125}
  %8: f32[s0, 1, s1, s1] = where(%m, %2, %3)
  %9 = sdpa(%p, %p, %p, %8) {is_causal = false}
  return(%7, %9)
})")));
  // A fixed point: nothing boolean is left to convert.
  EXPECT_FALSE(additiveAttentionMasks(*g));
}

}  // namespace
}  // namespace kiln::passes

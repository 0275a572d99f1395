// commutePermuteLinear on graphs written as text (Note [Linear after a permute]): a permute that
// keeps the last dim moves after the linear; anything else is left alone.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/commute_permute_linear.h"
#include "src/passes/eliminate_dead_code.h"

namespace kiln::passes {
namespace {

void expectRewrite(const std::string& input, const std::string& expected, bool changed) {
  auto g = ir::parse(input);
  EXPECT_EQ(commutePermuteLinear(*g), changed);
  eliminateDeadCode(*g);
  ir::verify(*g);
  EXPECT_EQ(ir::print(*g), ir::print(*ir::parse(expected)));
}

TEST(CommutePermuteLinear, BatchFirstAttentionInputProjection) {
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

TEST(CommutePermuteLinear, PermuteWithOtherUsersStaysForThem) {
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

TEST(CommutePermuteLinear, PermutesThatMoveTheLastDimAreLeftAlone) {
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

}  // namespace
}  // namespace kiln::passes

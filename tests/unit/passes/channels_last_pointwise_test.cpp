// channelsLastPointwise on graphs written as text (Note [Pointwise ops in channels-last
// programs]): pointwise ops over conv outputs move into [N, H, W, C] order, a chain of them keeps
// one pair of permutes; ops over operands of unknown layout stay.
#include <gtest/gtest.h>

#include "src/passes/channels_last_pointwise.h"
#include "tests/support/pass_rewrite.h"

namespace kiln::passes {
namespace {

void expectRewrite(const std::string& input, const std::string& expected, bool changed) {
  testing::expectRewrite(channelsLastPointwise, input, expected, changed);
}

TEST(ChannelsLastPointwise, ShiftSiluAndScaleAfterAConvRunInMemoryOrder) {
  // A folded conv's shift, SiLU, and a squeeze-and-excitation product with a [N, C, 1, 1] scale.
  expectRewrite(
      R"(graph(%x: f16[s0, 8, 6, 6], %w: f16[16, 8, 3, 3] param, %s: f16[16, 1, 1] param, %e: f16[s0, 16, 1, 1], %w2: f16[16, 16, 1, 1] param) {
  %0 = conv2d(%x, %w) {padding = [1, 1]}
  %1 = add(%0, %s)
  %2 = silu(%1)
  %3 = mul(%2, %e)
  %4 = conv2d(%3, %w2)
  return(%4)
})",
      R"(graph(%x: f16[s0, 8, 6, 6], %w: f16[16, 8, 3, 3] param, %s: f16[16, 1, 1] param, %e: f16[s0, 16, 1, 1], %w2: f16[16, 16, 1, 1] param) {
  %0 = conv2d(%x, %w) {padding = [1, 1]}
  %5 = permute(%0) {perm = [0, 2, 3, 1]}
  %6: f16[1, 16, 1, 1] = reshape(%s)
  %7 = permute(%6) {perm = [0, 2, 3, 1]}
  %8: f16[s0, 6, 6, 16] = add(%5, %7)
  %10: f16[s0, 6, 6, 16] = silu(%8)
  %12 = permute(%e) {perm = [0, 2, 3, 1]}
  %13: f16[s0, 6, 6, 16] = mul(%10, %12)
  %14 = permute(%13) {perm = [0, 3, 1, 2]}
  %4 = conv2d(%14, %w2)
  return(%4)
})",
      true);
}

TEST(ChannelsLastPointwise, PermutedFromNhwcReadsTheValueItself) {
  // A patch embedding run as a GEMM (Note [Patch convolutions as GEMMs]) gives [N, C, H, W] as a
  // permute of [N, H, W, C]: the add over it and a conv output reads the [N, H, W, C] value.
  expectRewrite(
      R"(graph(%x: f16[s0, 8, 6, 6], %w: f16[16, 8, 1, 1] param, %w2: f16[8, 16, 1, 1] param, %r: f16[s0, 6, 6, 16]) {
  %0 = conv2d(%x, %w)
  %1 = permute(%r) {perm = [0, 3, 1, 2]}
  %2 = add(%0, %1)
  %3 = conv2d(%2, %w2)
  return(%3)
})",
      R"(graph(%x: f16[s0, 8, 6, 6], %w: f16[16, 8, 1, 1] param, %w2: f16[8, 16, 1, 1] param, %r: f16[s0, 6, 6, 16]) {
  %0 = conv2d(%x, %w)
  %4 = permute(%0) {perm = [0, 2, 3, 1]}
  %5: f16[s0, 6, 6, 16] = add(%4, %r)
  %6 = permute(%5) {perm = [0, 3, 1, 2]}
  %3 = conv2d(%6, %w2)
  return(%3)
})",
      true);
}

TEST(ChannelsLastPointwise, UnknownLayoutsAndPooledValuesStay) {
  // %y is a graph input no conv reads: its layout is the caller's, so the add over it stays; the
  // relu over a [N, C, 1, 1] value has no layout to speak of.
  const std::string g =
      R"(graph(%x: f32[2, 4, 5, 5], %y: f32[2, 4, 5, 5], %w: f32[4, 4, 1, 1] param) {
  %0 = conv2d(%x, %w)
  %1 = add(%0, %y)
  %2 = mean(%1) {dims = [2, 3], keepdim = true}
  %3 = relu(%2)
  return(%3)
})";
  expectRewrite(g, g, false);
  // No conv: nothing is channels-last.
  const std::string noConv = R"(graph(%x: f32[2, 4, 5, 5]) {
  %0 = relu(%x)
  return(%0)
})";
  expectRewrite(noConv, noConv, false);
}

}  // namespace
}  // namespace kiln::passes

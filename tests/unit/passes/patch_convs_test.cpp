// patchConvsAsGemms on graphs written as text (Note [Patch convolutions as GEMMs]): a conv whose
// kernel equals its stride becomes the patches gathered and one linear; other convs stay.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/passes/patch_convs.h"
#include "tests/support/pass_rewrite.h"

namespace kiln::passes {
namespace {

void expectRewrite(const std::string& input, const std::string& expected, bool changed) {
  testing::expectRewrite(patchConvsAsGemms, input, expected, changed);
}

TEST(PatchConvs, ViTPatchEmbeddingIsALinear) {
  expectRewrite(
      R"(graph(%x: f16[s0, 3, 32, 48], %w: f16[64, 3, 8, 8] param, %b: f16[64] param) {
  %0 = conv2d(%x, %w, %b) {stride = [8, 8]}
  %1: f16[s0, 64, 24] = reshape(%0)
  return(%1)
})",
      R"(graph(%x: f16[s0, 3, 32, 48], %w: f16[64, 3, 8, 8] param, %b: f16[64] param) {
  %2: f16[s0, 3, 4, 8, 6, 8] = reshape(%x)
  %3 = permute(%2) {perm = [0, 2, 4, 1, 3, 5]}
  %4: f16[24*s0, 192] = reshape(%3)
  %5: f16[64, 192] = reshape(%w)
  %6 = linear(%4, %5, %b)
  %7: f16[s0, 4, 6, 64] = reshape(%6)
  %8 = permute(%7) {perm = [0, 3, 1, 2]}
  %1: f16[s0, 64, 24] = reshape(%8)
  return(%1)
})",
      true);
}

TEST(PatchConvs, OtherConvsStay) {
  for (const char* conv : {
           "conv2d(%x, %w) {stride = [4, 4], padding = [1, 1]}",   // padded
           "conv2d(%x, %w) {stride = [2, 2]}",                     // overlapping patches
           "conv2d(%x, %w) {stride = [4, 4], dilation = [2, 2]}",  // dilated
           "conv2d(%x, %w, %b, %z) {stride = [4, 4], activation = \"relu\"}",  // an epilogue
       }) {
    SCOPED_TRACE(conv);
    const std::string g =
        std::string(
            R"(graph(%x: f32[2, 4, 16, 16], %w: f32[4, 4, 4, 4] param, %b: f32[4] param, %z: f32[2, 4, 4, 4]) {
  %0 = )") +
        conv + R"(
  %1 = relu(%0)
  return(%1)
})";
    // Shapes that the stride-2 and dilated cases give are inferred by the parser; only the
    // rewrite's own preconditions are under test.
    auto parsed = ir::parse(g);
    EXPECT_FALSE(patchConvsAsGemms(*parsed));
  }
  // 1x1 convs (kernel == stride == 1) are a GEMM already in cuDNN's eyes; they stay convs.
  const std::string pointwise = R"(graph(%x: f32[2, 4, 16, 16], %w: f32[8, 4, 1, 1] param) {
  %0 = conv2d(%x, %w)
  %1 = relu(%0)
  return(%1)
})";
  expectRewrite(pointwise, pointwise, false);
  // A width that is not a multiple of the kernel (the conv would drop the last columns).
  const std::string ragged = R"(graph(%x: f32[2, 4, 16, 18], %w: f32[8, 4, 4, 4] param) {
  %0 = conv2d(%x, %w) {stride = [4, 4]}
  %1 = relu(%0)
  return(%1)
})";
  expectRewrite(ragged, ragged, false);
  // The conv's result is a graph output: eager returns it contiguous.
  const std::string output = R"(graph(%x: f32[2, 4, 16, 16], %w: f32[8, 4, 4, 4] param) {
  %0 = conv2d(%x, %w) {stride = [4, 4]}
  return(%0)
})";
  expectRewrite(output, output, false);
}

}  // namespace
}  // namespace kiln::passes

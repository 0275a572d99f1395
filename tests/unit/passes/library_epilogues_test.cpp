// fuseLibraryEpilogues on graphs written as text: relu and tanh-gelu after a linear with a bias,
// and relu after a conv with its bias/batchnorm shift and residual, move into the library call's
// epilogue; erf gelu, bias-less linears and ops whose results have other users stay, except that
// erf gelu after a 16-bit linear moves into it when the target runs kiln's GEMM.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/verifier.h"
#include "src/passes/library_epilogues.h"
#include "src/support/error.h"
#include "tests/support/pass_rewrite.h"

namespace kiln::passes {
namespace {

void expectRewrite(const std::string& input, const std::string& expected, bool changed,
                   bool geluEpilogue = false) {
  testing::expectRewrite([&](ir::Graph& g) { return fuseLibraryEpilogues(g, geluEpilogue); }, input,
                         expected, changed);
}

TEST(LibraryEpilogues, ReluAndTanhGeluMoveIntoTheEpilogue) {
  expectRewrite(
      R"(graph(%x: f16[s0, 64], %w1: f16[256, 64] param, %b1: f16[256] param, %w2: f16[64, 256] param, %b2: f16[64] param) {
  %0 = linear(%x, %w1, %b1)
  %1 = relu(%0)
  %2 = linear(%1, %w2, %b2)
  %3 = gelu_tanh(%2)
  return(%3)
})",
      R"(graph(%x: f16[s0, 64], %w1: f16[256, 64] param, %b1: f16[256] param, %w2: f16[64, 256] param, %b2: f16[64] param) {
  %4 = linear(%x, %w1, %b1) {activation = "relu"}
  %5 = linear(%4, %w2, %b2) {activation = "gelu_tanh"}
  return(%5)
})",
      true);
}

TEST(LibraryEpilogues, ErfGeluMovesIntoKilnGemmWhenTheTargetHasIt) {
  const std::string mlp =
      R"(graph(%x: f16[s0, 64], %w1: f16[256, 64] param, %b1: f16[256] param, %w2: f16[64, 256] param, %b2: f16[64] param) {
  %0 = linear(%x, %w1, %b1)
  %1 = gelu(%0)
  %2 = linear(%1, %w2, %b2)
  return(%2)
})";
  expectRewrite(mlp, mlp, false, /*geluEpilogue=*/false);
  expectRewrite(
      mlp,
      R"(graph(%x: f16[s0, 64], %w1: f16[256, 64] param, %b1: f16[256] param, %w2: f16[64, 256] param, %b2: f16[64] param) {
  %3 = linear(%x, %w1, %b1) {activation = "gelu"}
  %2 = linear(%3, %w2, %b2)
  return(%2)
})",
      true, true);
  // Near misses: f32 (no wgmma kernel), K not a multiple of 8 (TMA row strides), bf16 is fine.
  const std::string f32 = R"(graph(%x: f32[4, 64], %w: f32[6, 64] param, %b: f32[6] param) {
  %0 = linear(%x, %w, %b)
  %1 = gelu(%0)
  return(%1)
})";
  expectRewrite(f32, f32, false, true);
  const std::string oddK = R"(graph(%x: f16[4, 12], %w: f16[6, 12] param, %b: f16[6] param) {
  %0 = linear(%x, %w, %b)
  %1 = gelu(%0)
  return(%1)
})";
  expectRewrite(oddK, oddK, false, true);
  expectRewrite(R"(graph(%x: bf16[4, 16], %w: bf16[6, 16] param, %b: bf16[6] param) {
  %0 = linear(%x, %w, %b)
  %1 = gelu(%0)
  return(%1)
})",
                R"(graph(%x: bf16[4, 16], %w: bf16[6, 16] param, %b: bf16[6] param) {
  %2 = linear(%x, %w, %b) {activation = "gelu"}
  return(%2)
})",
                true, true);
}

TEST(LibraryEpilogues, ErfGeluNoBiasAndSharedOutputsStay) {
  const std::string erf = R"(graph(%x: f32[4, 8], %w: f32[6, 8] param, %b: f32[6] param) {
  %0 = linear(%x, %w, %b)
  %1 = gelu(%0)
  return(%1)
})";
  expectRewrite(erf, erf, false);
  const std::string noBias = R"(graph(%x: f32[4, 8], %w: f32[6, 8] param) {
  %0 = linear(%x, %w)
  %1 = relu(%0)
  return(%1)
})";
  expectRewrite(noBias, noBias, false);
  const std::string shared = R"(graph(%x: f32[4, 8], %w: f32[6, 8] param, %b: f32[6] param) {
  %0 = linear(%x, %w, %b)
  %1 = relu(%0)
  %2 = add(%0, %1)
  return(%2)
})";
  expectRewrite(shared, shared, false);
}

TEST(LibraryEpilogues, VerifierRejectsUnknownActivations) {
  EXPECT_THROW(
      ir::verify(*ir::parse(R"(graph(%x: f32[4, 8], %w: f32[6, 8] param, %b: f32[6] param) {
  %0 = linear(%x, %w, %b) {activation = "silu"}
  return(%0)
})")),
      UserError);
}

TEST(LibraryEpilogues, FoldedResNetBlockBecomesTwoFusedConvs) {
  // The CNN block after Note [Folding batchnorm into convolutions]: conv + shift + relu, then
  // conv + shift + identity + relu.
  expectRewrite(
      R"(graph(%x: f16[s0, 8, 6, 6], %w1: f16[8, 8, 3, 3] param, %s1: f16[8, 1, 1] param, %w2: f16[8, 8, 3, 3] param, %s2: f16[8, 1, 1] param) {
  %0 = conv2d(%x, %w1) {padding = [1, 1]}
  %1 = add(%0, %s1)
  %2 = relu(%1)
  %3 = conv2d(%2, %w2) {padding = [1, 1]}
  %4 = add(%3, %s2)
  %5 = add(%4, %x)
  %6 = relu(%5)
  return(%6)
})",
      R"(graph(%x: f16[s0, 8, 6, 6], %w1: f16[8, 8, 3, 3] param, %s1: f16[8, 1, 1] param, %w2: f16[8, 8, 3, 3] param, %s2: f16[8, 1, 1] param) {
  %7: f16[8] = reshape(%s1)
  %8 = conv2d(%x, %w1, %7) {activation = "relu", padding = [1, 1]}
  %9: f16[8] = reshape(%s2)
  %10 = conv2d(%8, %w2, %9, %x) {activation = "relu", padding = [1, 1]}
  return(%10)
})",
      true);
}

TEST(LibraryEpilogues, DownsampleBlockIsOneConvWithTheOtherAsResidual) {
  // A folded ResNet downsample block's end: relu((conv3 + s3) + (convd + sd)), three adds. One conv
  // takes the other's output as its residual and s3 + sd as its bias. The conv's own bias joins
  // the per-channel sum too.
  expectRewrite(
      R"(graph(%x: f16[s0, 8, 6, 6], %y: f16[s0, 4, 6, 6], %w3: f16[8, 4, 1, 1] param, %s3: f16[8, 1, 1] param, %wd: f16[8, 8, 1, 1] param, %sd: f16[1, 8, 1, 1] param) {
  %0 = conv2d(%y, %w3)
  %1 = add(%0, %s3)
  %2 = conv2d(%x, %wd)
  %3 = add(%2, %sd)
  %4 = add(%1, %3)
  %5 = relu(%4)
  return(%5)
})",
      R"(graph(%x: f16[s0, 8, 6, 6], %y: f16[s0, 4, 6, 6], %w3: f16[8, 4, 1, 1] param, %s3: f16[8, 1, 1] param, %wd: f16[8, 8, 1, 1] param, %sd: f16[1, 8, 1, 1] param) {
  %0 = conv2d(%y, %w3)
  %1: f16[8] = reshape(%sd)
  %2: f16[8] = reshape(%s3)
  %3: f16[8] = add(%1, %2)
  %4 = conv2d(%x, %wd, %3, %0) {activation = "relu"}
  return(%4)
})",
      true);
  expectRewrite(
      R"(graph(%x: f32[2, 4, 5, 5], %z: f32[2, 4, 5, 5], %w: f32[4, 4, 1, 1] param, %b: f32[4] param, %c: f32[4, 1, 1] param) {
  %0 = conv2d(%x, %w, %b)
  %1 = add(%0, %c)
  %2 = add(%1, %z)
  %3 = relu(%2)
  return(%3)
})",
      R"(graph(%x: f32[2, 4, 5, 5], %z: f32[2, 4, 5, 5], %w: f32[4, 4, 1, 1] param, %b: f32[4] param, %c: f32[4, 1, 1] param) {
  %0: f32[4] = reshape(%c)
  %1: f32[4] = add(%b, %0)
  %2 = conv2d(%x, %w, %1, %z) {activation = "relu"}
  return(%2)
})",
      true);
}

TEST(LibraryEpilogues, ConvNearMissesStay) {
  // The conv's output has another reader.
  const std::string shared =
      R"(graph(%x: f32[2, 4, 5, 5], %w: f32[4, 4, 1, 1] param, %b: f32[4] param) {
  %0 = conv2d(%x, %w, %b)
  %1 = relu(%0)
  %2 = add(%0, %1)
  return(%2)
})";
  expectRewrite(shared, shared, false);
  // A term that is neither per-channel nor the output's shape ([5] broadcasts over the width).
  const std::string width =
      R"(graph(%x: f32[2, 4, 5, 5], %w: f32[4, 4, 1, 1] param, %c: f32[5] param) {
  %0 = conv2d(%x, %w)
  %1 = add(%0, %c)
  %2 = relu(%1)
  return(%2)
})";
  expectRewrite(width, width, false);
  // A residual without a bias or shift to put before it.
  const std::string noBias = R"(graph(%x: f32[2, 4, 5, 5], %w: f32[4, 4, 1, 1] param) {
  %0 = conv2d(%x, %w)
  %1 = add(%0, %x)
  %2 = relu(%1)
  return(%2)
})";
  expectRewrite(noBias, noBias, false);
  // Two terms of the output's shape that are not the conv: only one can be the residual.
  const std::string twoResiduals =
      R"(graph(%x: f32[2, 4, 5, 5], %z: f32[2, 4, 5, 5], %w: f32[4, 4, 1, 1] param, %b: f32[4] param) {
  %0 = conv2d(%x, %w, %b)
  %1 = add(%0, %z)
  %2 = add(%1, %x)
  %3 = relu(%2)
  return(%3)
})";
  expectRewrite(twoResiduals, twoResiduals, false);
}

}  // namespace
}  // namespace kiln::passes

// fuseLinearActivation on graphs written as text: relu and tanh-gelu after a linear with a bias
// move into its epilogue; erf gelu, bias-less linears and linears with other users stay.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/passes/fuse_linear_activation.h"
#include "src/support/error.h"

namespace kiln::passes {
namespace {

void expectRewrite(const std::string& input, const std::string& expected, bool changed) {
  auto g = ir::parse(input);
  EXPECT_EQ(fuseLinearActivation(*g), changed);
  eliminateDeadCode(*g);
  ir::verify(*g);
  EXPECT_EQ(ir::print(*g), ir::print(*ir::parse(expected)));
}

TEST(FuseLinearActivation, ReluAndTanhGeluMoveIntoTheEpilogue) {
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

TEST(FuseLinearActivation, ErfGeluNoBiasAndSharedOutputsStay) {
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

TEST(FuseLinearActivation, VerifierRejectsUnknownActivations) {
  EXPECT_THROW(ir::verify(*ir::parse(R"(graph(%x: f32[4, 8], %w: f32[6, 8] param, %b: f32[6] param) {
  %0 = linear(%x, %w, %b) {activation = "silu"}
  return(%0)
})")),
               UserError);
}

}  // namespace
}  // namespace kiln::passes

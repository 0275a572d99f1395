// linear {activation = ...} (Note [Library epilogues]) through ATen: on the CPU exactly eager's
// linear followed by the activation; after the default pipeline a module's relu/tanh-gelu MLP
// gives eager's bits.
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "jit/eval/aten_eval.h"
#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/passes/pipeline.h"

namespace kiln::jit {
namespace {

TEST(LibraryEpilogueEval, FusedActivationsMatchEagerOnTheCpu) {
  const std::string text =
      R"(graph(%x: f32[s0, 64], %w1: f32[256, 64] param, %b1: f32[256] param, %w2: f32[64, 256] param, %b2: f32[64] param) {
  %0 = linear(%x, %w1, %b1)
  %1 = relu(%0)
  %2 = linear(%1, %w2, %b2)
  %3 = gelu_tanh(%2)
  return(%3)
})";
  auto g = ir::parse(text);
  passes::runDefaultPasses(*g);
  const std::string printed = ir::print(*g);
  ASSERT_NE(printed.find("activation = \"relu\""), std::string::npos) << printed;
  ASSERT_NE(printed.find("activation = \"gelu_tanh\""), std::string::npos) << printed;
  at::Tensor x = at::randn({7, 64});
  at::Tensor w1 = at::randn({256, 64}), b1 = at::randn({256});
  at::Tensor w2 = at::randn({64, 256}), b2 = at::randn({64});
  at::Tensor got = evalGraph(*g, {x}, {w1, b1, w2, b2}).at(0);
  at::Tensor want = at::gelu(at::linear(at::relu(at::linear(x, w1, b1)), w2, b2), "tanh");
  EXPECT_TRUE(at::equal(got, want));
}

}  // namespace
}  // namespace kiln::jit

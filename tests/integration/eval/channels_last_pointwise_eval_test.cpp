// Note [Pointwise ops in channels-last programs] through ATen: with the conv input channels-last
// (as the plan converts it at entry), the rewritten graph gives the original's bits, and the value
// the second conv reads is a channels-last view, not a contiguous NCHW tensor.
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "jit/eval/aten_eval.h"
#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/passes/channels_last_pointwise.h"
#include "src/passes/eliminate_dead_code.h"

namespace kiln::jit {
namespace {

TEST(ChannelsLastPointwiseEval, SameBitsAndChannelsLastBetweenConvs) {
  const std::string text =
      R"(graph(%x: f32[s0, 8, 6, 7], %w: f32[16, 8, 3, 3] param, %s: f32[16, 1, 1] param, %e: f32[s0, 16, 1, 1], %c: f32[7] param, %w2: f32[16, 16, 1, 1] param) {
  %0 = conv2d(%x, %w) {padding = [1, 1]}
  %1 = add(%0, %s)
  %2 = silu(%1)
  %3 = mul(%2, %e)
  %4 = sub(%3, %c)
  %5 = conv2d(%4, %w2)
  return(%4, %5)
})";
  auto before = ir::parse(text);
  auto after = ir::parse(text);
  ASSERT_TRUE(passes::channelsLastPointwise(*after));
  passes::eliminateDeadCode(*after);
  const std::string printed = ir::print(*after);
  ASSERT_NE(printed.find("f32[s0, 6, 7, 16] = silu"), std::string::npos) << printed;
  const at::Tensor x = at::randn({3, 8, 6, 7}).contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor e = at::randn({3, 16, 1, 1});
  const std::vector<at::Tensor> params = {
      at::randn({16, 8, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast), at::randn({16, 1, 1}),
      at::randn({7}), at::randn({16, 16, 1, 1}).contiguous(at::MemoryFormat::ChannelsLast)};
  const std::vector<at::Tensor> want = evalGraph(*before, {x, e}, params);
  const std::vector<at::Tensor> got = evalGraph(*after, {x, e}, params);
  ASSERT_EQ(got.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(got[i].sizes(), want[i].sizes());
    EXPECT_TRUE(at::equal(got[i], want[i])) << i;
  }
  // The pointwise chain's result, read by the second conv, is in channels-last memory.
  EXPECT_TRUE(got[0].is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_FALSE(got[0].is_contiguous());
}

}  // namespace
}  // namespace kiln::jit

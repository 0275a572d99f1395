// Note [Quantized linears] on the CPU: calibration, freezing, the accuracy decision, records and
// weight changes, with the GEMM emulated in float32 (Options::quantEmulate). The numerics are
// checked against a float64 reference built from the same quantised operands and scales; the GPU
// test (tests/gpu/fusion_gpu_test.cpp) checks cuBLASLt's fp8 and int8 GEMMs the same way.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <torch/torch.h>

#include "jit/runtime/quantized_linear.h"

namespace {

using kiln::jit::QuantFormat;
using kiln::jit::QuantizedLinear;
using kiln::jit::QuantSettings;

QuantSettings settings(QuantFormat format, int calls = 3, double maxError = 0.08) {
  QuantSettings s;
  s.format = format;
  s.calibrationCalls = calls;
  s.maxError = maxError;
  s.emulate = true;
  return s;
}

// act(x w^T + b) in float64 from the quantised weight, its scales and the input scale, with the
// input quantised as the kernel does: the result the 8-bit GEMM must give up to its accumulation.
torch::Tensor reference(QuantFormat format, const QuantizedLinear& q, const torch::Tensor& x,
                        const torch::Tensor& bias) {
  auto [wq, sw] = q.weights();
  const double sa = q.report().inputScale;
  const torch::Tensor xq = kiln::jit::quantizeTensor(format, x, sa);
  const torch::Tensor xd = xq.to(torch::kDouble) * sa;
  const torch::Tensor wd = wq.to(torch::kDouble) * sw.to(torch::kDouble).unsqueeze(1);
  return torch::matmul(xd, wd.t()) + bias.to(torch::kDouble);
}

class QuantizedLinearTest : public ::testing::TestWithParam<QuantFormat> {};

TEST_P(QuantizedLinearTest, CalibratesFreezesAndMatchesTheReference) {
  torch::NoGradGuard ng;
  const QuantFormat format = GetParam();
  torch::manual_seed(3);
  const torch::Tensor w = (torch::randn({48, 64}) * 0.1).to(torch::kHalf);
  const torch::Tensor b = (torch::randn({48}) * 0.1).to(torch::kHalf);
  std::vector<std::string> stored;
  QuantizedLinear q(settings(format), "w", [&](const std::string& r) { stored.push_back(r); });
  float amax = 0;
  for (int call = 0; call < 3; ++call) {
    const torch::Tensor x = (torch::randn({2, 5, 64}) * (call + 1)).to(torch::kHalf);
    amax = std::max(amax, x.abs().max().to(torch::kFloat).item<float>());
    EXPECT_TRUE(q.calibrating());
    EXPECT_FALSE(q.run(x, w, &b, "").has_value()) << "calibration calls run in 16 bits";
  }
  EXPECT_FALSE(q.calibrating());
  ASSERT_EQ(stored.size(), 1u);
  const QuantizedLinear::Report r = q.report();
  EXPECT_TRUE(r.quantized) << r.state;
  EXPECT_FLOAT_EQ(r.inputScale, amax / kiln::jit::quantMax(format));
  EXPECT_GT(r.relError, 0.0) << "8 bits cannot be exact on random data";
  EXPECT_LT(r.relError, 0.08);

  const torch::Tensor x = (torch::randn({3, 4, 64}) * 2).to(torch::kHalf);
  std::optional<torch::Tensor> y = q.run(x, w, &b, "");
  ASSERT_TRUE(y.has_value());
  EXPECT_EQ(y->sizes(), (std::vector<int64_t>{3, 4, 48}));
  EXPECT_EQ(y->scalar_type(), torch::kHalf);
  const torch::Tensor want = reference(format, q, x.reshape({-1, 64}), b).reshape({3, 4, 48});
  EXPECT_LE((y->to(torch::kDouble) - want).abs().max().item<double>(),
            2e-3 * want.abs().max().item<double>() + 1e-3);
  // And close to the 16-bit linear it replaces.
  const torch::Tensor exact =
      torch::linear(x.to(torch::kFloat), w.to(torch::kFloat), b.to(torch::kFloat));
  EXPECT_LT((y->to(torch::kFloat) - exact).norm().item<double>() / exact.norm().item<double>(),
            0.08);
  // A fused activation is applied after the GEMM.
  std::optional<torch::Tensor> relu = q.run(x, w, &b, "relu");
  ASSERT_TRUE(relu.has_value());
  EXPECT_TRUE(torch::equal(*relu, torch::relu(*y)));
}

// Weights are quantised per output channel: a row 1000x larger than the others keeps the others'
// precision.
TEST_P(QuantizedLinearTest, WeightScalesArePerOutputChannel) {
  torch::NoGradGuard ng;
  const QuantFormat format = GetParam();
  torch::manual_seed(4);
  torch::Tensor w = torch::randn({32, 32}) * 0.05;
  w[0] *= 1000;
  w = w.to(torch::kHalf);
  const torch::Tensor b = torch::zeros({32}, torch::kHalf);
  QuantizedLinear q(settings(format, 1), "w", {});
  const torch::Tensor x = torch::randn({8, 32}).to(torch::kHalf);
  EXPECT_FALSE(q.run(x, w, &b, "").has_value());
  auto [wq, sw] = q.weights();
  ASSERT_TRUE(sw.defined());
  EXPECT_EQ(sw.sizes(), (std::vector<int64_t>{32}));
  EXPECT_GT(sw[0].item<float>(), 100 * sw[1].item<float>());
  const torch::Tensor back = wq.to(torch::kFloat) * sw.unsqueeze(1);
  const torch::Tensor rows = (back - w.to(torch::kFloat)).narrow(0, 1, 31).abs().amax(1) /
                             w.to(torch::kFloat).narrow(0, 1, 31).abs().amax(1);
  EXPECT_LT(rows.max().item<float>(), format == QuantFormat::kFp8 ? 0.07 : 0.005);
}

// A linear whose error on the calibration input is above Options::quantMaxError stays in 16 bits.
TEST_P(QuantizedLinearTest, TooLargeAnErrorKeepsSixteenBits) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({16, 32}).to(torch::kHalf);
  const torch::Tensor b = torch::zeros({16}, torch::kHalf);
  std::vector<std::string> stored;
  QuantizedLinear q(settings(GetParam(), 2, 1e-6), "tight",
                    [&](const std::string& r) { stored.push_back(r); });
  const torch::Tensor x = torch::randn({4, 32}).to(torch::kHalf);
  EXPECT_FALSE(q.run(x, w, &b, "").has_value());
  EXPECT_FALSE(q.run(x, w, &b, "").has_value());
  EXPECT_FALSE(q.calibrating());
  EXPECT_FALSE(q.run(x, w, &b, "").has_value()) << "kept in 16 bits for good";
  const QuantizedLinear::Report r = q.report();
  EXPECT_FALSE(r.quantized);
  EXPECT_NE(r.state.find("16-bit: "), std::string::npos) << r.state;
  EXPECT_NE(r.state.find("> 1e-06"), std::string::npos) << r.state;
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_NE(stored[0].find(" kept "), std::string::npos) << stored[0];
}

// Note [Quantized linears]: a stored record restores the frozen scale and decision, so a later
// process runs quantised from its first call, with the same numerics. Records of another form
// are ignored.
TEST_P(QuantizedLinearTest, RecordsRestoreTheFrozenScale) {
  torch::NoGradGuard ng;
  const QuantFormat format = GetParam();
  torch::manual_seed(6);
  const torch::Tensor w = (torch::randn({16, 32}) * 0.1).to(torch::kHalf);
  const torch::Tensor b = torch::zeros({16}, torch::kHalf);
  std::string record;
  QuantizedLinear first(settings(format, 2), "w", [&](const std::string& r) { record = r; });
  const torch::Tensor x = torch::randn({4, 32}).to(torch::kHalf);
  first.run(x, w, &b, "");
  first.run(x * 3, w, &b, "");
  ASSERT_FALSE(record.empty());

  QuantizedLinear later(settings(format, 2), "w", {});
  for (const std::string bad :
       {std::string(""), std::string("kiln-quant-v0 fp8 quantized 0x1p-4 0.01 2"),
        std::string("kiln-quant-v1 int4 quantized 0x1p-4 0.01 2"),
        std::string("kiln-quant-v1 ") + std::string(kiln::jit::toString(format)) +
            " quantized -1 0.01 2",
        std::string("kiln-quant-v1 ") + std::string(kiln::jit::toString(format)) +
            " maybe 0x1p-4 0.01 2"})
    EXPECT_FALSE(later.restore(bad)) << bad;
  EXPECT_TRUE(later.calibrating());
  ASSERT_TRUE(later.restore(record)) << record;
  EXPECT_FALSE(later.calibrating());
  EXPECT_TRUE(later.report().fromRecord);
  EXPECT_FLOAT_EQ(later.report().inputScale, first.report().inputScale);
  std::optional<torch::Tensor> a = first.run(x, w, &b, "");
  std::optional<torch::Tensor> c = later.run(x, w, &b, "");
  ASSERT_TRUE(a.has_value() && c.has_value());
  EXPECT_TRUE(torch::equal(*a, *c));
}

// Note [Quantized linears]: a weight changed in place is quantised again before the next call.
TEST_P(QuantizedLinearTest, WeightChangesAreQuantisedAgain) {
  torch::NoGradGuard ng;
  torch::manual_seed(7);
  torch::Tensor w = (torch::randn({16, 32}) * 0.1).to(torch::kHalf);
  const torch::Tensor b = torch::zeros({16}, torch::kHalf);
  QuantizedLinear q(settings(GetParam(), 1), "w", {});
  const torch::Tensor x = torch::randn({4, 32}).to(torch::kHalf);
  q.run(x, w, &b, "");
  const torch::Tensor before = *q.run(x, w, &b, "");
  w.mul_(-2);
  const torch::Tensor after = *q.run(x, w, &b, "");
  EXPECT_TRUE(torch::allclose(after.to(torch::kFloat), before.to(torch::kFloat) * -2, 0.02, 0.02));
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantizedLinearTest,
                         ::testing::Values(QuantFormat::kFp8, QuantFormat::kInt8),
                         [](const auto& info) {
                           return std::string(kiln::jit::toString(info.param));
                         });

// Without the hardware and without emulation, the linear runs in 16 bits (nullopt), never fails.
TEST(QuantizedLinear, WithoutHardwareRunsSixteenBits) {
  torch::NoGradGuard ng;
  QuantSettings s = settings(QuantFormat::kFp8, 1);
  s.emulate = false;
  QuantizedLinear q(s, "w", {});
  const torch::Tensor w = torch::randn({16, 32}).to(torch::kHalf);
  const torch::Tensor x = torch::randn({4, 32}).to(torch::kHalf);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(q.run(x, w, nullptr, "").has_value());
  EXPECT_TRUE(q.calibrating()) << "nothing was observed on a device that cannot run it";
}

TEST(QuantizedLinear, BlockersNameTheReason) {
  EXPECT_FALSE(kiln::jit::quantizeBlocker(QuantFormat::kFp8, torch::zeros({32, 64}, torch::kHalf)));
  EXPECT_EQ(*kiln::jit::quantizeBlocker(QuantFormat::kFp8, torch::zeros({30, 64}, torch::kHalf)),
            "30 x 64 weight: the fp8 GEMM needs both sizes multiples of 16");
  EXPECT_FALSE(kiln::jit::quantizeBlocker(QuantFormat::kInt8, torch::zeros({24, 8}, torch::kHalf)));
  EXPECT_EQ(*kiln::jit::quantizeBlocker(QuantFormat::kInt8, torch::zeros({32, 64})),
            "its weight is Float, not 16-bit");
  EXPECT_EQ(*kiln::jit::quantizeBlocker(QuantFormat::kInt8, torch::zeros({32})),
            "its weight is not a 2-d param");
}

}  // namespace

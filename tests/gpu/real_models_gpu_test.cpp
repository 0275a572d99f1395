// Real architectures on the GPU in float16: the fixtures of tests/models (Hugging Face BERT, GPT-2,
// a Llama-style decoder; torchvision ResNet and ViT, small configs, random weights) through
// compiled kernels, against the same TorchScript module on the same card. Shapes other than the
// trace's, odd ones (3x77), and new buckets after the first call; the calls are repeated once the
// bucket's own kernels are in (background compile), so both kernel sets are checked.
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "jit/runtime/quantized_linear.h"
#include "tests/support/real_models.h"

namespace {

using kiln::testing::Fixture;
using kiln::testing::kFixtures;

kiln::Session& strictGpuSession() {
  static kiln::Session* s = [] {
    kiln::Options o;
    o.poisonOutputs = true;
    o.diskCache = false;
    o.strict = true;  // a fallback to eager fails the test
    o.tune = kiln::TuneMode::kOff;
    return new kiln::Session(o);
  }();
  return *s;
}

// Skips the test, with the reason, where LibTorch or kiln sees no CUDA device.
#define REQUIRE_GPU()                                                            \
  do {                                                                           \
    if (!torch::cuda::is_available())                                            \
      GTEST_SKIP() << "no GPU: no CUDA device visible to LibTorch";              \
    if (strictGpuSession().cudaEnvironment().devices.empty())                    \
      GTEST_SKIP() << "no GPU: " << strictGpuSession().cudaEnvironment().reason; \
  } while (0)

// Cosine similarity >= 0.9999 and max |got - want| <= 2% of max |want| (issue 19's bar).
void expectAccurate(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  torch::Tensor g = got.to(torch::kFloat).flatten();
  torch::Tensor w = want.to(torch::kFloat).flatten();
  ASSERT_TRUE(torch::isfinite(g).all().item<bool>()) << what << ": non-finite values";
  double cosine = torch::cosine_similarity(g, w, 0).item<double>();
  double err = (g - w).abs().max().item<double>();
  double ref = w.abs().max().item<double>();
  EXPECT_GE(cosine, 0.9999) << what;
  EXPECT_LE(err, 0.02 * ref) << what << " (max |ref| " << ref << ")";
}

class RealModelGpu : public ::testing::TestWithParam<Fixture> {};

TEST_P(RealModelGpu, Float16MatchesTheModule) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  const Fixture& f = GetParam();
  // Traced on the GPU in fp16 (make_fixtures.py --device cuda): a traced HF model keeps its trace
  // device and dtype.
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, strictGpuSession()));
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      f.text ? std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {2, 16}, {3, 77}, {8, 128}, {1, 5}}
             : std::vector<std::pair<int64_t, int64_t>>{{3, 0}, {2, 0}, {8, 0}, {1, 0}};
  for (int round = 0; round < 2; ++round) {
    for (auto [batch, seq] : shapes) {
      std::string what = std::string(f.name) + " batch " + std::to_string(batch) + " seq " +
                         std::to_string(seq) + (round == 0 ? " (first call)" : " (bucket kernels)");
      std::vector<torch::IValue> in = kiln::testing::fixtureInputs(
          f, batch, seq, static_cast<uint64_t>(batch * 1000 + seq), torch::kCUDA, torch::kHalf);
      torch::Tensor want = m.forward(in).toTensor();
      torch::Tensor got = fast.forward(in).toTensor();
      expectAccurate(got, want, what);
    }
    // Let the buckets' own kernels land before the second round.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (fast.stats().backgroundPending > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.eagerFallbacks, 0u) << fast.explain();
  EXPECT_GT(st.kernelLaunches, 0u) << fast.explain();
  std::cout << f.name << ": " << st.toString() << "\n";
}

// Loaded and called under InferenceMode (inference-tensor params and inputs), as C++ services
// usually do: folds, merged linears and CUDA graph replay (repeated calls of one shape) take them.
TEST_P(RealModelGpu, InferenceModeMatchesTheModule) {
  REQUIRE_GPU();
  c10::InferenceMode im;
  const Fixture& f = GetParam();
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, strictGpuSession()));
  for (int call = 0; call < 8; ++call) {
    const int64_t batch = call < 6 ? 4 : 3;
    std::vector<torch::IValue> in = kiln::testing::fixtureInputs(
        f, batch, f.text ? 24 : 0, static_cast<uint64_t>(500 + call), torch::kCUDA, torch::kHalf);
    expectAccurate(fast.forward(in).toTensor(), m.forward(in).toTensor(),
                   std::string(f.name) + " call " + std::to_string(call));
  }
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << fast.explain();
  std::cout << f.name << " (InferenceMode): " << fast.stats().toString() << "\n";
}

// Note [Precision]: the float32 fixture traced on the GPU (make_fixtures.py --device cuda --dtype
// float32) runs in float16 and bfloat16 through compiled kernels, against the float32 module on
// the same inputs. Issue 21's bar for autocast is cosine >= 0.9995 against float32; the outputs
// stay float32, and no step may fall back (strict session).
TEST_P(RealModelGpu, PrecisionRunsTheFloat32ModuleInSixteenBits) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  const Fixture& f = GetParam();
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda32.pt");
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      f.text ? std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {3, 77}, {8, 128}}
             : std::vector<std::pair<int64_t, int64_t>>{{3, 0}, {8, 0}};
  for (kiln::Precision precision : {kiln::Precision::kFloat16, kiln::Precision::kBFloat16}) {
    kiln::jit::Options o = kiln::testing::fixtureOptions(f, strictGpuSession());
    o.precision = precision;
    auto fast = kiln::jit::optimize(m, o);
    for (auto [batch, seq] : shapes) {
      const std::string what = std::string(f.name) + " " + std::string(kiln::toString(precision)) +
                               " batch " + std::to_string(batch) + " seq " + std::to_string(seq);
      std::vector<torch::IValue> in = kiln::testing::fixtureInputs(
          f, batch, seq, static_cast<uint64_t>(batch * 1000 + seq), torch::kCUDA, torch::kFloat);
      torch::Tensor want = m.forward(in).toTensor();
      ASSERT_EQ(want.scalar_type(), torch::kFloat) << what;
      torch::Tensor got = fast.forward(in).toTensor();
      ASSERT_EQ(got.sizes(), want.sizes()) << what;
      ASSERT_EQ(got.scalar_type(), torch::kFloat) << what;
      ASSERT_TRUE(torch::isfinite(got).all().item<bool>()) << what;
      const torch::Tensor g = got.flatten().to(torch::kDouble);
      const torch::Tensor w = want.flatten().to(torch::kDouble);
      const double cosine = torch::cosine_similarity(g, w, 0).item<double>();
      const double err = (g - w).abs().max().item<double>();
      std::cout << what << ": cosine " << cosine << ", max err " << err << " (max |ref| "
                << w.abs().max().item<double>() << ")\n";
      EXPECT_GE(cosine, 0.9995) << what;
      EXPECT_GT(err, 0.0) << what << ": bit-identical to float32, so nothing ran in 16 bits";
    }
    const kiln::jit::ModuleStats st = fast.stats();
    EXPECT_EQ(st.eagerFallbacks, 0u) << fast.explain();
    EXPECT_GT(st.kernelLaunches, 0u) << fast.explain();
    EXPECT_NE(fast.explain().find("params converted"), std::string::npos) << fast.explain();
  }
}

// Note [Quantized linears] on the card: the float16 fixtures with fp8 and int8 linears (calibrated
// on two calls), against the float16 module at several shapes, and the same after CUDA graph
// capture and replay.
TEST_P(RealModelGpu, EightBitLinearsOnTheFloat16Module) {
  REQUIRE_GPU();
  const auto props = at::cuda::getCurrentDeviceProperties();
  if (props->major * 10 + props->minor < 89)
    GTEST_SKIP() << "fp8 GEMMs need sm_89 or newer; this card is sm_" << props->major
                 << props->minor;
  torch::NoGradGuard ng;
  static kiln::Session* session = [] {
    kiln::Options o = strictGpuSession().options();
    o.quantCalibrationCalls = 2;
    o.backgroundCompile = false;  // each bucket's own kernels at once, so graphs are captured
    return new kiln::Session(o);
  }();
  const Fixture& f = GetParam();
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      f.text ? std::vector<std::pair<int64_t, int64_t>>{{8, 128}, {3, 77}, {1, 5}}
             : std::vector<std::pair<int64_t, int64_t>>{{8, 0}, {3, 0}, {1, 0}};
  const bool some = std::string(f.name) != "tv_resnet";  // its one linear has N = 10
  for (kiln::Precision precision : {kiln::Precision::kFp8, kiln::Precision::kInt8}) {
    kiln::jit::Options o = kiln::testing::fixtureOptions(f, *session);
    o.precision = precision;
    auto fast = kiln::jit::optimize(m, o);
    auto sixteen = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, *session));
    for (uint64_t seed : {1, 2})  // calibration
      fast.forward(
          kiln::testing::fixtureInputs(f, 8, f.text ? 128 : 0, seed, torch::kCUDA, torch::kHalf));
    for (auto [batch, seq] : shapes) {
      const std::string what = std::string(f.name) + " " + std::string(kiln::toString(precision)) +
                               " batch " + std::to_string(batch) + " seq " + std::to_string(seq);
      std::vector<torch::IValue> in = kiln::testing::fixtureInputs(
          f, batch, seq, static_cast<uint64_t>(batch * 1000 + seq), torch::kCUDA, torch::kHalf);
      const torch::Tensor want = m.forward(in).toTensor();
      const torch::Tensor plain = sixteen.forward(in).toTensor();
      // Calibration is per guard family (batch 1 is a family of its own): two calls of these
      // sizes first, which calibrate a new family and change nothing for one already frozen.
      fast.forward(in);
      fast.forward(in);
      std::vector<torch::Tensor> got;
      for (int call = 0; call < 4; ++call) got.push_back(fast.forward(in).toTensor());
      ASSERT_EQ(got[0].sizes(), want.sizes()) << what;
      ASSERT_TRUE(torch::isfinite(got[0]).all().item<bool>()) << what;
      const torch::Tensor g = got[0].flatten().to(torch::kDouble);
      const torch::Tensor w = want.flatten().to(torch::kDouble);
      const double cosine = torch::cosine_similarity(g, w, 0).item<double>();
      std::cout << what << ": cosine " << cosine << ", max err "
                << (g - w).abs().max().item<double>() << " (max |ref| "
                << w.abs().max().item<double>() << ")\n";
      // The small random fixtures: 0.998 (the Llama-style one gives 0.9987 in fp8 on an H100);
      // the bench reports the full-size models against issue 21's 0.999.
      EXPECT_GE(cosine, 0.998) << what << "\n" << fast.explain();
      if (some) {
        EXPECT_FALSE(torch::equal(got[0], plain)) << what << ": the same as 16 bits, so no linear "
                                                  << "ran quantised";
      }
      for (int call = 1; call < 4; ++call)  // step by step, captured, replayed
        EXPECT_TRUE(torch::equal(got[static_cast<size_t>(call)], got[0]))
            << what << " call " << call;
    }
    const std::string explain = fast.explain();
    EXPECT_EQ(explain.find("calibrating"), std::string::npos) << explain;
    EXPECT_EQ(explain.find(" run 8-bit") != std::string::npos &&
                  explain.find("quantised linears: 0 of") == std::string::npos,
              some)
        << explain;
    EXPECT_GT(fast.stats().graphReplays, 0u) << explain;
    EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << explain;
  }
}

// The fp8 and int8 GEMMs (cuBLASLt) against a float64 reference from the same quantised operands
// and scales, at M = 1 (int8: emulated, _int_mm needs M > 16), 17 and 231.
TEST(QuantizedLinearGpu, MatchesAFloat64ReferenceWithTheSameScales) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no GPU: no CUDA device visible to LibTorch";
  const auto props = at::cuda::getCurrentDeviceProperties();
  if (props->major * 10 + props->minor < 89)
    GTEST_SKIP() << "fp8 GEMMs need sm_89 or newer; this card is sm_" << props->major
                 << props->minor;
  torch::NoGradGuard ng;
  using kiln::jit::QuantFormat;
  for (QuantFormat format : {QuantFormat::kFp8, QuantFormat::kInt8}) {
    torch::manual_seed(9);
    const auto opt = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kHalf);
    const torch::Tensor w = torch::randn({384, 256}, opt) * 0.05;
    const torch::Tensor b = torch::randn({384}, opt) * 0.1;
    kiln::jit::QuantSettings s;
    s.format = format;
    s.calibrationCalls = 1;
    kiln::jit::QuantizedLinear q(s, "w", {});
    EXPECT_FALSE(q.run(torch::randn({64, 256}, opt) * 2, w, &b, "").has_value());
    ASSERT_TRUE(q.report().quantized) << q.report().state;
    for (int64_t m : {1, 17, 231}) {
      const std::string what = std::string(kiln::jit::toString(format)) + " M " + std::to_string(m);
      const torch::Tensor x = torch::randn({m, 256}, opt);
      std::optional<torch::Tensor> y = q.run(x, w, &b, "");
      ASSERT_TRUE(y.has_value()) << what;
      ASSERT_EQ(y->scalar_type(), torch::kHalf) << what;
      auto [wq, sw] = q.weights();
      const double sa = q.report().inputScale;
      const torch::Tensor xq = kiln::jit::quantizeTensor(format, x, sa);
      const torch::Tensor want =
          torch::matmul(xq.to(torch::kDouble) * sa,
                        (wq.to(torch::kDouble) * sw.to(torch::kDouble).unsqueeze(1)).t()) +
          b.to(torch::kDouble);
      const double err = (y->to(torch::kDouble) - want).abs().max().item<double>();
      const double ref = want.abs().max().item<double>();
      std::cout << what << ": max err " << err << " of max |ref| " << ref << "\n";
      EXPECT_LE(err, (format == QuantFormat::kFp8 ? 1e-2 : 2e-3) * ref) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RealModelGpu, ::testing::ValuesIn(kFixtures),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace

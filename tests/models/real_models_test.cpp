// Real architectures through optimize() on the CPU: Hugging Face BERT, GPT-2 and a Llama-style
// decoder, torchvision ResNet and ViT, traced with random weights by make_fixtures.py (small
// configs). Capture, passes and partition run for real; the plan's steps run through ATen, so the
// results check the captured graph (symbolic shapes, run-time scalars, eager leftovers) against
// the TorchScript module at shapes other than the trace's, and at new buckets after the first call.
// The GPU test (tests/gpu) runs the same fixtures through compiled kernels in float16.
#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/real_models.h"
#include "tests/support/sessions.h"
#include "tests/support/temp_dir.h"

namespace {

using kiln::testing::Fixture;
using kiln::testing::kFixtures;

torch::jit::Module load(const Fixture& f) {
  return kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".pt");
}

kiln::jit::Options optionsFor(const Fixture& f, kiln::Session& session) {
  return kiln::testing::fixtureOptions(f, session);
}

std::vector<torch::IValue> inputsFor(const Fixture& f, int64_t batch, int64_t seq, uint64_t seed) {
  return kiln::testing::fixtureInputs(f, batch, seq, seed, torch::kCPU, torch::kFloat);
}

// The session these tests share: strict (a fallback fails the test), no compile target (every step
// runs through ATen), no disk cache, no tuning.
kiln::Session& evalSession() {
  static kiln::Session* s = [] {
    kiln::Options o;
    o.diskCache = false;
    o.strict = true;
    o.tune = kiln::TuneMode::kOff;
    return new kiln::Session(o, kiln::testing::noEnvironment());
  }();
  return *s;
}

double maxAbs(const torch::Tensor& t) {
  return t.abs().max().item<double>();
}

// The lines of explain()'s "unsupported ops (run eagerly)" section, or nullopt without one.
std::optional<std::string> eagerLeftovers(const std::string& explain) {
  std::smatch section;
  if (!std::regex_search(explain, section,
                         std::regex(R"(unsupported ops \(run eagerly\):\n((  [^\n]*\n)*))")))
    return std::nullopt;
  return section[1].str();
}

class RealModel : public ::testing::TestWithParam<Fixture> {};

TEST_P(RealModel, MatchesTheModuleAtNewShapes) {
  torch::NoGradGuard ng;
  const Fixture& f = GetParam();
  torch::jit::Module m = load(f);
  auto fast = kiln::jit::optimize(m, optionsFor(f, evalSession()));
  // The trace's shape first, then new buckets of the same family (odd sizes such as 3x77), then
  // batch 1, which is a guard family of its own (Note [Guards and plans]).
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      f.text ? std::vector<std::pair<int64_t, int64_t>>{{3, 7},  {2, 16}, {3, 77},
                                                        {5, 33}, {3, 7},  {1, 5}}
             : std::vector<std::pair<int64_t, int64_t>>{{3, 0}, {2, 0}, {5, 0}, {1, 0}};
  uint64_t seed = 10;
  for (auto [batch, seq] : shapes) {
    SCOPED_TRACE(::testing::Message() << f.name << " batch " << batch << " seq " << seq);
    std::vector<torch::IValue> in = inputsFor(f, batch, seq, seed++);
    torch::Tensor want = m.forward(in).toTensor();
    torch::Tensor got = fast.forward(in).toTensor();
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LE(maxAbs(got - want), 1e-4 * std::max(1.0, maxAbs(want))) << fast.explain();
  }
  kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.eagerFallbacks, 0u) << fast.explain();
  EXPECT_EQ(st.eagerCalls, 0u);
  // One capture per guard family (batch >= 2, batch 1); the session's capture cache may hold one
  // from an earlier test of the same fixture.
  EXPECT_EQ(st.captures + st.capturesCached, 2u) << st.toString();
  // Every eager leftover names its reason.
  if (const std::optional<std::string> section = eagerLeftovers(fast.explain())) {
    const std::string& lines = *section;
    const std::regex line(R"(  ([^\n]*)\n)");
    for (std::sregex_iterator it(lines.begin(), lines.end(), line), end; it != end; ++it) {
      EXPECT_TRUE(std::regex_match((*it)[1].str(), std::regex(R"(\S+ x\d+: \S.*)")))
          << "eager leftover without a reason: " << (*it)[1].str();
    }
  }
}

// The usual C++ deployment: the module loaded and called under InferenceMode, so its params are
// inference tensors (no version counter) and so are the inputs. Folds, merged linears and the
// capture's write check must all take them.
TEST_P(RealModel, RunsAModuleLoadedAndCalledInInferenceMode) {
  c10::InferenceMode im;
  const Fixture& f = GetParam();
  torch::jit::Module m = load(f);
  auto fast = kiln::jit::optimize(m, optionsFor(f, evalSession()));
  uint64_t seed = 40;
  for (auto [batch, seq] : std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {2, 16}, {3, 7}}) {
    SCOPED_TRACE(::testing::Message() << f.name << " batch " << batch << " seq " << seq);
    std::vector<torch::IValue> in = inputsFor(f, batch, f.text ? seq : 0, seed++);
    torch::Tensor want = m.forward(in).toTensor();
    torch::Tensor got = fast.forward(in).toTensor();
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LE(maxAbs(got - want), 1e-4 * std::max(1.0, maxAbs(want))) << fast.explain();
  }
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << fast.explain();
}

// Multiplies in place every param whose name contains `part` by `factor`; false if none has it.
bool scaleParamsNamed(torch::jit::Module& m, const std::string& part, double factor) {
  torch::NoGradGuard ng;
  bool scaled = false;
  for (const auto& p : m.named_parameters(/*recurse=*/true))
    if (p.name.find(part) != std::string::npos) {
      p.value.mul_(factor);
      scaled = true;
    }
  return scaled;
}

double cosine(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor x = a.to(torch::kDouble).flatten();
  const torch::Tensor y = b.to(torch::kDouble).flatten();
  return (x.dot(y) / (x.norm() * y.norm())).item<double>();
}

// Note [Precision]: the float32 fixture runs in bfloat16 and float16 when asked, through kiln's
// graph (strict session: no step may fall back), and gives back float32 close to the module's.
// The steps run through ATen on the CPU, so this checks the retyped graph, the boundary casts,
// the converted params and the eager calls' dtypes; the GPU test checks the kernels.
TEST_P(RealModel, PrecisionRunsTheFloat32ModuleInSixteenBits) {
  torch::NoGradGuard ng;
  const Fixture& f = GetParam();
  torch::jit::Module m = load(f);
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      f.text ? std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {3, 77}, {1, 5}}
             : std::vector<std::pair<int64_t, int64_t>>{{3, 0}, {1, 0}};
  for (kiln::Precision precision : {kiln::Precision::kBFloat16, kiln::Precision::kFloat16}) {
    kiln::jit::Options o = optionsFor(f, evalSession());
    o.precision = precision;
    auto fast = kiln::jit::optimize(m, o);
    uint64_t seed = 40;
    for (auto [batch, seq] : shapes) {
      SCOPED_TRACE(::testing::Message() << f.name << " " << kiln::toString(precision) << " batch "
                                        << batch << " seq " << seq);
      std::vector<torch::IValue> in = inputsFor(f, batch, seq, seed++);
      torch::Tensor want = m.forward(in).toTensor();
      torch::Tensor got = fast.forward(in).toTensor();
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_EQ(got.scalar_type(), torch::kFloat);
      EXPECT_TRUE(torch::isfinite(got).all().item<bool>());
      EXPECT_GE(cosine(got, want), 0.999) << fast.explain();
      // It did run in 16 bits: float32 to the last bit would mean the retype did nothing.
      EXPECT_GT(maxAbs(got - want), 0.0);
    }
    const std::string explain = fast.explain();
    const std::string line = "precision: " + std::string(kiln::toString(precision)) +
                             ": float32 runs in " +
                             (precision == kiln::Precision::kFloat16 ? "f16" : "bf16");
    EXPECT_NE(explain.find(line), std::string::npos) << explain;
    EXPECT_TRUE(std::regex_search(explain, std::regex(R"(  [1-9]\d* params converted)")))
        << explain;
    EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << explain;
    // Batch 1 is a family of its own; both families bind one 16-bit copy of each converted
    // weight (Note [Derived params shared by families]), which is at most half the float32 bytes
    // (merged copies of float32 weights are 16-bit too).
    int64_t float32Bytes = 0;
    for (const auto& p : m.named_parameters()) float32Bytes += p.value.nbytes();
    for (const auto& b : m.named_buffers())
      if (b.value.scalar_type() == torch::kFloat) float32Bytes += b.value.nbytes();
    EXPECT_EQ(fast.stats().familiesAlive, 2u);
    EXPECT_GT(fast.stats().derivedParamBytes, 0u);
    EXPECT_LE(fast.stats().derivedParamBytes, static_cast<uint64_t>(float32Bytes / 2))
        << fast.stats().toString();
  }
}

// Note [Derived params are snapshots]: a float32 weight changed in place after the first call is
// converted again before the next one uses it.
TEST(RealModels, DerivedParamsSeeWeightChanges) {
  torch::NoGradGuard ng;
  const Fixture& f = kFixtures[0];
  ASSERT_STREQ(f.name, "hf_bert");
  torch::jit::Module m = load(f);
  kiln::jit::Options o = optionsFor(f, evalSession());
  o.precision = kiln::Precision::kBFloat16;
  auto fast = kiln::jit::optimize(m, o);
  const std::vector<torch::IValue> in = inputsFor(f, 3, 7, 5);
  const torch::Tensor before = fast.forward(in).toTensor();
  ASSERT_TRUE(scaleParamsNamed(m, "word_embeddings", 3.0)) << "the fixture has word embeddings";
  const torch::Tensor want = m.forward(in).toTensor();
  const torch::Tensor got = fast.forward(in).toTensor();
  EXPECT_LT(cosine(before, want), 0.999) << "the change must matter for the test to mean anything";
  EXPECT_GE(cosine(got, want), 0.999);
}

// Note [Precision]: a module that already has 16-bit tensors keeps its own dtypes.
TEST(RealModels, PrecisionLeavesSixteenBitModulesAlone) {
  torch::NoGradGuard ng;
  const Fixture& f = kFixtures[0];
  torch::jit::Module m = load(f);
  for (const torch::Tensor& p : m.parameters()) p.set_data(p.to(torch::kBFloat16));
  kiln::jit::Options o = optionsFor(f, evalSession());
  o.precision = kiln::Precision::kFloat16;
  auto fast = kiln::jit::optimize(m, o);
  const std::vector<torch::IValue> in = inputsFor(f, 3, 7, 6);
  const torch::Tensor want = m.forward(in).toTensor();
  const torch::Tensor got = fast.forward(in).toTensor();
  EXPECT_EQ(got.scalar_type(), want.scalar_type());
  EXPECT_LE(maxAbs(got - want), 1e-2 * std::max(1.0, maxAbs(want))) << fast.explain();
  EXPECT_NE(fast.explain().find("precision: fp16 not applied: the module has BFloat16 tensors"),
            std::string::npos)
      << fast.explain();
}

// cache directory (here: a new session and the model loaded again) neither traces nor compiles,
// although the text models' plans hold eager calls (embedding, arange, mask ops), and matches the
// module. Kernels are compiled for sm_90 with NVRTC (no GPU needed) and the steps run through ATen.
TEST_P(RealModel, ASecondProcessNeitherTracesNorCompiles) {
  torch::NoGradGuard ng;
  const Fixture& f = GetParam();
  const kiln::testing::ScratchDir scratch("kiln-real-capture-cache");
  auto sessionOver = [&] {
    kiln::Options o = kiln::testing::compileOnlyOptions();
    o.diskCache = true;
    o.cacheDir = scratch.path();
    o.backgroundCompile = false;
    o.tune = kiln::TuneMode::kOff;
    return std::make_unique<kiln::Session>(o, kiln::testing::noEnvironment());
  };
  const std::vector<torch::IValue> first = inputsFor(f, 3, 7, 1);
  const std::vector<torch::IValue> second = inputsFor(f, 3, 6, 2);  // same buckets (4, 8)
  {
    auto s = sessionOver();
    torch::jit::Module m = load(f);
    auto fast = kiln::jit::optimize(m, optionsFor(f, *s));
    fast.forward(first);
    EXPECT_EQ(fast.stats().captures, 1u) << fast.explain();
    EXPECT_GT(fast.stats().kernelsCompiled, 0u) << fast.explain();
  }
  auto s = sessionOver();
  torch::jit::Module m = load(f);
  auto fast = kiln::jit::optimize(m, optionsFor(f, *s));
  torch::Tensor got = fast.forward(second).toTensor();
  torch::Tensor want = m.forward(second).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE(maxAbs(got - want), 1e-4 * std::max(1.0, maxAbs(want))) << fast.explain();
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.captures, 0u) << st.toString();
  EXPECT_EQ(st.capturesCached, 1u) << st.toString();
  EXPECT_EQ(st.kernelsCompiled, 0u) << st.toString();
  EXPECT_EQ(st.eagerFallbacks, 0u) << fast.explain();
}

// Note [Quantized linears]: under fp8 and int8 the float32 fixture runs in float16 with its linears
// quantised (the GEMM emulated in float32 on the CPU: Options::quantEmulate), calibrated on the
// first calls, and close to the module. explain() lists every linear. A second process over the
// same cache directory restores the calibration: quantised from its first call, the same output.
TEST_P(RealModel, EightBitLinearsCalibrateAndAreRestoredFromTheCache) {
  torch::NoGradGuard ng;
  const Fixture& f = GetParam();
  const kiln::testing::ScratchDir scratch("kiln-real-quant");
  for (kiln::Precision precision : {kiln::Precision::kFp8, kiln::Precision::kInt8}) {
    SCOPED_TRACE(::testing::Message() << f.name << " " << kiln::toString(precision));
    auto sessionOver = [&] {
      kiln::Options o;
      o.diskCache = true;
      o.cacheDir = scratch.path();
      o.strict = true;
      o.tune = kiln::TuneMode::kOff;
      o.quantEmulate = true;
      o.quantCalibrationCalls = 2;
      return std::make_unique<kiln::Session>(o, kiln::testing::noEnvironment());
    };
    const int64_t seq = f.text ? 7 : 0;
    const std::vector<torch::IValue> in = inputsFor(f, 3, seq, 11);
    torch::jit::Module m = load(f);
    const torch::Tensor want = m.forward(in).toTensor();
    torch::Tensor first;
    {
      auto s = sessionOver();
      kiln::jit::Options o = optionsFor(f, *s);
      o.precision = precision;
      auto fast = kiln::jit::optimize(m, o);
      fast.forward(inputsFor(f, 3, seq, 12));
      // The small ResNet's one linear is 10 x 512: no 8-bit GEMM takes N = 10.
      const bool some = std::string(f.name) != "tv_resnet";
      EXPECT_EQ(fast.explainJson().find("calibrating (1 of 2 calls)") != std::string::npos, some)
          << fast.explain();
      fast.forward(in);  // the second calibration call freezes the scales
      first = fast.forward(in).toTensor();
      EXPECT_EQ(first.scalar_type(), torch::kFloat);
      EXPECT_GE(cosine(first, want), 0.99) << fast.explain();
      const std::string explain = fast.explain();
      const std::smatch counts = [&] {
        std::smatch mt;
        std::regex_search(explain, mt,
                          std::regex(R"(quantised linears: (\d+) of (\d+) run 8-bit)"));
        return mt;
      }();
      ASSERT_EQ(counts.size(), 3u) << explain;
      EXPECT_EQ(std::stoi(counts[1]) > 0, some) << explain;
      if (!some) {
        EXPECT_NE(explain.find("weight: the " + std::string(kiln::toString(precision)) +
                               " GEMM needs both sizes multiples of"),
                  std::string::npos)
            << explain;
      }
      EXPECT_EQ(explain.find("calibrating"), std::string::npos) << explain;
      EXPECT_NE(explain.find("linears with a weight param run " +
                             std::string(kiln::toString(precision)) + " GEMMs"),
                std::string::npos)
          << explain;
      EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << explain;
    }
    auto s = sessionOver();
    kiln::jit::Options o = optionsFor(f, *s);
    o.precision = precision;
    auto fast = kiln::jit::optimize(m, o);
    const torch::Tensor again = fast.forward(in).toTensor();
    EXPECT_TRUE(torch::equal(again, first)) << fast.explain();
    EXPECT_EQ(fast.explain().find("calibrating"), std::string::npos) << fast.explain();
    EXPECT_EQ(fast.explain().find("(from the tuning records)") != std::string::npos,
              std::string(f.name) != "tv_resnet")
        << fast.explain();
  }
}

// Note [Shape-only steps]: BERT's position and token-type rows come from sizes alone. A second
// call of the same sizes reuses them, and a weight changed in place is seen at once.
TEST(RealModels, ShapeOnlyStepsAreReusedAndSeeWeightChanges) {
  torch::NoGradGuard ng;
  const Fixture& f = kFixtures[0];
  ASSERT_STREQ(f.name, "hf_bert");
  torch::jit::Module m = load(f);
  auto fast = kiln::jit::optimize(m, optionsFor(f, evalSession()));
  auto check = [&](uint64_t seed) {
    std::vector<torch::IValue> in = inputsFor(f, 3, 7, seed);
    torch::Tensor want = m.forward(in).toTensor();
    torch::Tensor got = fast.forward(in).toTensor();
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LE(maxAbs(got - want), 1e-4 * std::max(1.0, maxAbs(want))) << fast.explain();
  };
  auto reuses = [&] {
    std::smatch mt;
    const std::string e = fast.explain();
    EXPECT_TRUE(std::regex_search(
        e, mt,
        std::regex(
            R"(shape-only steps: (\d+) of \d+, (\d+) values kept per sizes, reused by (\d+) calls)")))
        << e;
    if (mt.empty()) return -1;
    EXPECT_GT(std::stoi(mt[1].str()), 0);
    EXPECT_GT(std::stoi(mt[2].str()), 0);
    return std::stoi(mt[3].str());
  };
  check(1);
  EXPECT_EQ(reuses(), 0);
  check(2);  // other token ids, same sizes
  EXPECT_EQ(reuses(), 1);
  ASSERT_TRUE(scaleParamsNamed(m, "position_embeddings", 2.0))
      << "the fixture has position embeddings";
  check(3);  // recomputed from the new weights
  EXPECT_EQ(reuses(), 1);
  check(4);
  EXPECT_EQ(reuses(), 2);
}

TEST(RealModels, FirstCallSizeEqualToAModelConstant) {
  torch::NoGradGuard ng;
  // The Llama fixture repeats its 2 KV heads 4 times (grouped-query attention). A first call at
  // batch 4 must not take that 4 for the batch: the repeat is a constant of the graph, and a
  // later batch 2 call must still match (H200, 2026-12-04: batch 8 vs n_rep 8 in the full model).
  const Fixture& f = kFixtures[2];
  ASSERT_STREQ(f.name, "hf_llama");
  torch::jit::Module m = load(f);
  auto fast = kiln::jit::optimize(m, optionsFor(f, evalSession()));
  for (auto [batch, seq] : std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {2, 9}, {6, 4}}) {
    std::vector<torch::IValue> in = inputsFor(f, batch, seq, 3);
    torch::Tensor want = m.forward(in).toTensor();
    torch::Tensor got = fast.forward(in).toTensor();
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LE(maxAbs(got - want), 1e-4 * std::max(1.0, maxAbs(want))) << fast.explain();
  }
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << fast.explain();
}

// One call of an image fixture at `batch` through a fresh optimized module, checked against the
// module; returns explain() after it.
std::string explainOfAMatchingCall(const Fixture& f, int64_t batch, uint64_t seed) {
  torch::NoGradGuard ng;
  torch::jit::Module m = load(f);
  auto fast = kiln::jit::optimize(m, optionsFor(f, evalSession()));
  const std::vector<torch::IValue> in = inputsFor(f, batch, 0, seed);
  const torch::Tensor want = m.forward(in).toTensor();
  const torch::Tensor got = fast.forward(in).toTensor();
  EXPECT_LE(maxAbs(got - want), 1e-4 * std::max(1.0, maxAbs(want))) << fast.explain();
  return fast.explain();
}

// Every block of explain() text that starts with "step N:" and holds `needle`.
std::vector<std::string> stepsHolding(const std::string& explain, std::string_view needle) {
  std::vector<std::string> out;
  size_t at = explain.find("\nstep ");
  while (at != std::string::npos) {
    const size_t next = explain.find("\nstep ", at + 1);
    const size_t end = std::min(next, explain.find("\neager leftovers", at + 1));
    std::string block = explain.substr(at + 1, end == std::string::npos ? end : end - at - 1);
    if (block.find(needle) != std::string::npos) out.push_back(std::move(block));
    at = next;
  }
  return out;
}

// Note [Fills] and Note [Embeddings in kernels]: the BERT fixture's mask (transformers' sdpa_mask:
// the padding mask ANDed with arange(S)[:, None] >= 0) is a fill inside the mask kernel, and the
// word embedding by token ids is the first load of the row kernel that adds the position and type
// rows and normalizes. In both guard families (batch 3 and batch 1) no step runs eagerly.
TEST(RealModels, BertRunsWithNoEagerStep) {
  torch::NoGradGuard ng;
  const Fixture& f = kFixtures[0];
  ASSERT_STREQ(f.name, "hf_bert");
  torch::jit::Module m = load(f);
  auto fast = kiln::jit::optimize(m, optionsFor(f, evalSession()));
  for (auto [batch, seq] : std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {1, 5}}) {
    SCOPED_TRACE(::testing::Message() << "batch " << batch << " seq " << seq);
    const std::vector<torch::IValue> in = inputsFor(f, batch, seq, 21);
    const torch::Tensor want = m.forward(in).toTensor();
    const torch::Tensor got = fast.forward(in).toTensor();
    EXPECT_LE(maxAbs(got - want), 1e-4 * std::max(1.0, maxAbs(want)));
    const std::string explain = fast.explain();
    EXPECT_EQ(eagerLeftovers(explain), std::nullopt) << explain;
    EXPECT_EQ(explain.find(": eager "), std::string::npos) << explain;
    const std::vector<std::string> gathers = stepsHolding(explain, "= embedding(");
    ASSERT_FALSE(gathers.empty()) << explain;
    for (const std::string& step : gathers) {
      EXPECT_NE(step.find(": fusion #"), std::string::npos) << step;
      EXPECT_NE(step.find(" row rowDims=1 "), std::string::npos) << step;
      EXPECT_NE(step.find("= layer_norm("), std::string::npos) << step;
    }
  }
  // One capture per guard family; the shared session may hold them from an earlier test.
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.captures + st.capturesCached, 2u) << st.toString();
}

// Note [Conv epilogue terms]: the small ResNet (torchvision's stem, a BasicBlock and a downsampling
// BasicBlock) has 6 convs. Every block ends in a conv whose cuDNN epilogue adds the bias and the
// residual and applies the relu, the downsample block (relu((conv2 + s2) + (convd + sd)) after
// folding) included: 5 convs with the relu, the one whose output is the other's residual without,
// and no kiln kernel over a conv's 4-d output (only the bias sum and the pooling are left).
TEST(RealModels, ResNetBlockEndsAreConvEpilogues) {
  ASSERT_STREQ(kFixtures[3].name, "tv_resnet");
  const std::string explain = explainOfAMatchingCall(kFixtures[3], 2, 5);
  auto count = [&](const std::regex& re) {
    return std::distance(std::sregex_iterator(explain.begin(), explain.end(), re),
                         std::sregex_iterator());
  };
  EXPECT_EQ(count(std::regex(R"(= conv2d\([^\n]*activation = "relu")")), 5) << explain;
  EXPECT_EQ(count(std::regex(R"(= conv2d\()")), 6) << explain;
  EXPECT_EQ(count(std::regex(R"(pointwise domain=\[batch, \d+, \d+, \d+\])")), 0) << explain;
}

// Note [Patch convolutions as GEMMs]: the small ViT's 8x8, stride-8 patch embedding runs as one
// linear over the gathered patches; no conv is left, and the result matches the module.
TEST(RealModels, ViTPatchEmbeddingIsALinear) {
  ASSERT_STREQ(kFixtures[4].name, "tv_vit");
  const std::string explain = explainOfAMatchingCall(kFixtures[4], 3, 6);
  EXPECT_EQ(explain.find("= conv2d("), std::string::npos) << explain;
  EXPECT_TRUE(std::regex_search(explain, std::regex(R"(\[16\*batch, 192\] = reshape)"))) << explain;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RealModel, ::testing::ValuesIn(kFixtures),
                         [](const auto& info) { return std::string(info.param.name); });
INSTANTIATE_TEST_SUITE_P(More, RealModel, ::testing::ValuesIn(kiln::testing::kMoreFixtures),
                         [](const auto& info) { return std::string(info.param.name); });

// The ops that made these architectures run eagerly before they were lowered (hardswish,
// hardsigmoid, global pooling, min of two tensors, ~mask, reciprocal, the DynamicCache cat) are
// fused now: none of them is an eager leftover.
TEST(RealModels, MoreArchitecturesLowerTheirOps) {
  torch::NoGradGuard ng;
  for (const Fixture& f : kiln::testing::kMoreFixtures) {
    SCOPED_TRACE(f.name);
    torch::jit::Module m = load(f);
    auto fast = kiln::jit::optimize(m, optionsFor(f, evalSession()));
    std::vector<torch::IValue> in = inputsFor(f, 2, 9, 3);
    fast.forward(in);
    const std::string explain = fast.explain();
    for (const char* op :
         {"aten::hardswish", "aten::hardsigmoid", "aten::adaptive_avg_pool2d", "aten::min",
          "aten::bitwise_not", "aten::reciprocal", "aten::cat", "aten::relu6", "aten::hardtanh"})
      EXPECT_EQ(explain.find(std::string(op) + " x"), std::string::npos) << op << "\n" << explain;
  }
}

// Note [Kiln GEMM while cuBLAS loads]: a 16-bit program gives its plain linears a stand-in kiln
// GEMM for the first calls, compiled (here for sm_90 with NVRTC, no GPU needed) into the kernel
// cache with the rest of the plan, so that a warm process finds it there; KILN_FIRST_CALL_GEMM=off
// (Options::firstCallGemm) compiles none. The GPU test runs the stand-ins.
TEST(RealModels, StandInGemmsAreCompiledForTheFirstCalls) {
  torch::NoGradGuard ng;
  const Fixture& f = kFixtures[0];
  ASSERT_STREQ(f.name, "hf_bert");
  torch::jit::Module m = load(f);
  for (bool standIns : {true, false}) {
    SCOPED_TRACE(standIns ? "auto" : "off");
    kiln::Options so = kiln::testing::compileOnlyOptions();
    so.backgroundCompile = false;
    so.tune = kiln::TuneMode::kOff;
    so.firstCallGemm = standIns;
    kiln::Session session(so, kiln::testing::noEnvironment());
    auto compiled = std::make_shared<std::vector<std::string>>();
    auto mutex = std::make_shared<std::mutex>();
    session.setCompileHook([compiled, mutex](const kiln::CompileEvent& e) {
      const std::lock_guard<std::mutex> lock(*mutex);
      compiled->push_back(e.kernel);
    });
    kiln::jit::Options o = optionsFor(f, session);
    o.precision = kiln::Precision::kFloat16;
    auto fast = kiln::jit::optimize(m, o);
    fast.forward(inputsFor(f, 3, 7, 9));
    session.waitForBackground();  // a stand-in missing from the cache is compiled there
    session.setCompileHook(nullptr);
    const std::string explain = fast.explain();
    size_t plainGemms = 0;
    for (const std::string& k : *compiled) plainGemms += k.rfind("kiln_gemm_f16_none", 0) == 0;
    if (!standIns) {
      EXPECT_EQ(plainGemms, 0u) << explain;
      EXPECT_EQ(explain.find("while cuBLAS loads"), std::string::npos) << explain;
      continue;
    }
    // One kernel for the linears with a bias (every linear of the fixture has one).
    EXPECT_EQ(plainGemms, 1u) << explain;
    std::smatch line;
    ASSERT_TRUE(std::regex_search(
        explain, line, std::regex(R"(while cuBLAS loads: [^\n]*?([0-9]+) linear\(s\)[^\n]*)")))
        << explain;
    // 2 layers x (q/k/v merged, attention output, fc2); fc1 + gelu is on kiln's GEMM already.
    EXPECT_EQ(std::stoi(line[1].str()), 6) << line[0];
    // This process compiled it only now, in the background; a new program loads it from the
    // cache (and, without a driver, still cannot run it).
    EXPECT_NE(line[0].str().find("not in the kernel cache yet"), std::string::npos) << line[0];
    auto again = kiln::jit::optimize(m, o);
    again.forward(inputsFor(f, 3, 7, 9));
    const std::string second = again.explain();
    EXPECT_EQ(second.find("not in the kernel cache yet"), std::string::npos) << second;
    if (kiln::cuda::driver() == nullptr) {
      EXPECT_NE(second.find("compiled, but no CUDA driver"), std::string::npos) << second;
    }
  }
}

}  // namespace

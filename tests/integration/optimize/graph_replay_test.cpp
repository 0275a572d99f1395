// Note [CUDA graph replay] on the CPU: what explain(), explainJson() and stats() say about graphs
// when no call can be replayed (CPU tensors), when KILN_CUDA_GRAPHS=off, and when an op that draws
// random numbers or a scalar read on the host turns graphs off for the plan up front. Replay itself
// is tested on the GPU (tests/gpu/graph_replay_gpu_test.cpp).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

#include "cache/kernel_cache.h"
#include "jit/runtime/against_module.h"
#include "src/ir/parser.h"

#include "tests/support/sessions.h"

namespace {

kiln::Session& session(bool graphs) {
  static kiln::Session* on = nullptr;
  static kiln::Session* off = nullptr;
  kiln::Session*& s = graphs ? on : off;
  if (s == nullptr) {
    kiln::Options o;
    o.diskCache = false;
    o.tune = kiln::TuneMode::kOff;
    o.strict = true;
    o.cudaGraphs = graphs;
    s = new kiln::Session(o, kiln::testing::noEnvironment());
  }
  return *s;
}

kiln::jit::OptimizedModule optimized(const std::string& source, bool graphs) {
  static std::vector<torch::jit::Module> keep;  // the modules outlive their optimized forms
  torch::jit::Module m("m");
  m.define(source);
  m.eval();
  keep.push_back(m);
  kiln::jit::Options o;
  o.session = &session(graphs);
  o.inputNames = {"x"};
  return kiln::jit::optimize(m, o);
}

nlohmann::json planGraphs(const kiln::jit::OptimizedModule& fast) {
  return nlohmann::json::parse(fast.explainJson()).at("plan").at("cudaGraphs");
}

// Several launching steps (library matmuls, fused groups), so graphs would be on for CUDA calls.
constexpr const char* kManySteps = R"(
def forward(self, x):
    a = torch.relu(torch.matmul(x, x.t()))
    b = torch.matmul(torch.softmax(a, -1), x)
    c = torch.tanh(torch.matmul(b, x.t()))
    return torch.matmul(c, x) * 0.5 + torch.sum(c, -1, keepdim=True)
)";

TEST(GraphReplay, CpuCallsAreNeverCapturedAndSaySo) {
  torch::NoGradGuard ng;
  auto fast = optimized(kManySteps, true);
  const std::vector<torch::IValue> in{torch::randn({4, 8})};
  for (int i = 0; i < 4; ++i) fast.forward(in);
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.graphCaptures, 0u);
  EXPECT_EQ(st.graphReplays, 0u);
  EXPECT_NE(fast.explain().find("CUDA graphs: 0 captured, 0 alive, 0 replays"), std::string::npos)
      << fast.explain();
  const nlohmann::json g = planGraphs(fast);
  EXPECT_TRUE(g.at("enabled").get<bool>()) << g.dump();
  EXPECT_EQ(g.at("replays").get<uint64_t>(), 0u);
}

TEST(GraphReplay, OffByOption) {
  torch::NoGradGuard ng;
  auto fast = optimized("def forward(self, x):\n    return torch.relu(x * 2.0) + 1.0\n", false);
  fast.forward({torch::randn({4, 8})});
  EXPECT_NE(fast.explain().find("CUDA graphs: off (KILN_CUDA_GRAPHS=off)"), std::string::npos)
      << fast.explain();
  const nlohmann::json g = planGraphs(fast);
  EXPECT_FALSE(g.at("enabled").get<bool>());
  EXPECT_EQ(g.at("why").get<std::string>(), "off (KILN_CUDA_GRAPHS=off)");
}

TEST(GraphReplay, RandomOpsTurnGraphsOffWithTheReason) {
  torch::NoGradGuard ng;
  auto fast =
      optimized("def forward(self, x):\n    return x * torch.rand_like(x) + torch.relu(x)\n", true);
  const torch::Tensor x = torch::randn({4, 8});
  const torch::Tensor out = fast.forward({x}).toTensor();
  // rand_like draws from [0, 1): x * r + relu(x) lies between min(x, 0) + relu(x) and x + relu(x).
  EXPECT_TRUE(
      (out >= torch::minimum(x, torch::zeros_like(x)) + torch::relu(x) - 1e-6).all().item<bool>());
  EXPECT_TRUE(
      (out <= torch::maximum(x, torch::zeros_like(x)) + torch::relu(x) + 1e-6).all().item<bool>());
  const std::string explain = fast.explain();
  EXPECT_NE(explain.find("CUDA graphs: off: aten::rand_like draws random numbers, which a replay "
                         "would repeat"),
            std::string::npos)
      << explain;
  EXPECT_FALSE(planGraphs(fast).at("enabled").get<bool>());
}

// One fused kernel a call: a replay would add its copies and save one launch, so no graph.
TEST(GraphReplay, PlansOfFewStepsStayUngraphed) {
  torch::NoGradGuard ng;
  auto fast = optimized("def forward(self, x):\n    return torch.relu(x * 2.0) + 1.0\n", true);
  fast.forward({torch::randn({4, 8})});
  EXPECT_NE(fast.explain().find("CUDA graphs: off: 1 launching step a call; a graph pays for its "
                                "input and output copies from 4"),
            std::string::npos)
      << fast.explain();
  EXPECT_FALSE(planGraphs(fast).at("enabled").get<bool>());
}

// int() of a tensor is read on the host at every call (Note [Run-time scalars]): the plan is never
// captured, and says why up front, rather than failing a capture on the GPU.
TEST(GraphReplay, HostScalarReadsTurnGraphsOffWithTheReason) {
  torch::NoGradGuard ng;
  auto fast = optimized(
      "def forward(self, x):\n    k = int((x > 0).sum())\n    return torch.relu(x) * 2.0 + k\n",
      true);
  const torch::Tensor x = torch::randn({4, 8});
  const torch::Tensor want = torch::relu(x) * 2.0 + (x > 0).sum().item<int64_t>();
  EXPECT_TRUE(torch::allclose(fast.forward({x}).toTensor(), want));
  const std::string explain = fast.explain();
  EXPECT_NE(explain.find("takes a scalar read from a tensor on the host at every call"),
            std::string::npos)
      << explain;
  EXPECT_FALSE(planGraphs(fast).at("enabled").get<bool>());
}

// Note [Plan against the module]: the module takes a signature when it wins beyond chance, turn
// by turn; ties keep kiln; noise means measuring again, never keeping a slower plan.
TEST(AgainstModule, TheModuleMustWinBeyondChance) {
  using kiln::tuner::Timing;
  const Timing kiln{{1.00, 1.01, 0.99, 1.00, 1.02, 0.98, 1.00, 1.01, 0.99, 1.00, 1.02, 0.98}};
  auto scaled = [&](double f) {
    Timing t = kiln;
    for (double& v : t.ms) v *= f;
    return t;
  };
  const kiln::jit::ModuleComparison faster =
      kiln::jit::judgeAgainstModule(kiln, scaled(0.5), /*lastRound=*/false);
  EXPECT_TRUE(faster.decided);
  EXPECT_TRUE(faster.moduleFaster) << faster.line();
  EXPECT_NE(faster.line().find("the module runs"), std::string::npos) << faster.line();
  const kiln::jit::ModuleComparison tie =
      kiln::jit::judgeAgainstModule(kiln, scaled(0.99), /*lastRound=*/false);
  EXPECT_TRUE(tie.decided);
  EXPECT_FALSE(tie.moduleFaster) << tie.line();
  EXPECT_NE(tie.line().find("kiln runs"), std::string::npos) << tie.line();
  const kiln::jit::ModuleComparison slower =
      kiln::jit::judgeAgainstModule(kiln, scaled(2.0), /*lastRound=*/false);
  EXPECT_TRUE(slower.decided);
  EXPECT_FALSE(slower.moduleFaster) << slower.line();

  // The defect this rule replaced: a card so noisy that the samples spread by 70% while the
  // module was faster in every turn. Drift hits both sides of a turn, so the module wins.
  Timing noisyKiln, noisyModule;
  for (int i = 0; i < 15; ++i) {
    const double drift = 1.0 + ((i * 7) % 5) / 4.0;  // 1.0 .. 2.0
    noisyKiln.ms.push_back(7.8 * drift);
    noisyModule.ms.push_back(4.2 * drift);
  }
  ASSERT_GT(noisyKiln.spread(), 0.3);
  const kiln::jit::ModuleComparison noisy =
      kiln::jit::judgeAgainstModule(noisyKiln, noisyModule, /*lastRound=*/false);
  EXPECT_TRUE(noisy.decided) << noisy.line();
  EXPECT_TRUE(noisy.moduleFaster) << noisy.line();

  // Few turns, the module ahead in most but not beyond chance: measure again; in the last round
  // the median ratio decides.
  const Timing fewKiln{{1.0, 1.0, 1.0, 1.0, 1.0, 1.0}};
  const Timing fewModule{{0.8, 0.8, 0.8, 0.8, 1.1, 0.8}};
  const kiln::jit::ModuleComparison unsure =
      kiln::jit::judgeAgainstModule(fewKiln, fewModule, /*lastRound=*/false);
  EXPECT_FALSE(unsure.decided) << unsure.line();
  EXPECT_NE(unsure.reason.find("inconclusive"), std::string::npos) << unsure.reason;
  const kiln::jit::ModuleComparison last =
      kiln::jit::judgeAgainstModule(fewKiln, fewModule, /*lastRound=*/true);
  EXPECT_TRUE(last.decided);
  EXPECT_TRUE(last.moduleFaster) << last.line();
  // The module ahead by less than 3% in the median keeps kiln, last round or not.
  const kiln::jit::ModuleComparison close =
      kiln::jit::judgeAgainstModule(fewKiln, Timing{{0.98, 0.99, 1.02, 0.98, 1.01, 0.99}});
  EXPECT_FALSE(close.moduleFaster) << close.line();
  EXPECT_FALSE(kiln::jit::judgeAgainstModule(kiln, Timing{}).decided);
}

TEST(AgainstModule, SignTestCounts) {
  EXPECT_EQ(kiln::jit::signTestWins(15, 0.01), 13);  // P(X >= 13) = 0.0037, P(X >= 12) = 0.018
  EXPECT_EQ(kiln::jit::signTestWins(6, 0.01), 7);    // even 6 of 6 (p = 0.016) is not enough
  EXPECT_EQ(kiln::jit::signTestWins(6, 0.05), 6);
  EXPECT_EQ(kiln::jit::signTestWins(45, 0.01), 31);
}

TEST(AgainstModule, CpuPlansAreNotCompared) {
  torch::NoGradGuard ng;
  auto fast = optimized("def forward(self, x):\n    return torch.relu(x * 3.0)\n", true);
  for (int i = 0; i < kiln::jit::kCompareAfter + 5; ++i) fast.forward({torch::randn({4, 8})});
  EXPECT_NE(fast.explain().find("against the module: not compared yet"), std::string::npos)
      << fast.explain();
  EXPECT_EQ(fast.stats().moduleFasterCalls, 0u);
  EXPECT_TRUE(nlohmann::json::parse(fast.explainJson()).at("plan").at("againstModule").is_null());
}

// A decision is stored with the tuning records and found by a later process (a second cache over
// the same directory), for the same graph, bucket and arch only; what does not decode is ignored.
TEST(AgainstModule, DecisionsPersistWithTheTuningRecords) {
  kiln::jit::ModuleComparison c;
  c.decided = true;
  c.moduleFaster = true;
  c.kilnMs = 1.25;
  c.moduleMs = 0.5;
  c.reps = 12;
  c.reason = "module 2.5x beats the 1.03x needed";
  const std::optional<kiln::jit::ModuleComparison> back =
      kiln::jit::decodeComparison(kiln::jit::encodeComparison(c));
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->decided && back->moduleFaster);
  EXPECT_EQ(back->kilnMs, 1.25);
  EXPECT_EQ(back->moduleMs, 0.5);
  EXPECT_EQ(back->reps, 12);
  EXPECT_EQ(back->reason, c.reason);
  EXPECT_FALSE(kiln::jit::decodeComparison("not json").has_value());
  EXPECT_FALSE(kiln::jit::decodeComparison(R"({"moduleFaster":true})").has_value());
  EXPECT_FALSE(kiln::jit::decodeComparison(
                   R"({"moduleFaster":true,"kilnMs":0,"moduleMs":1,"reps":3,"reason":""})")
                   .has_value());

  char dirTemplate[] = "/tmp/kiln-compare-XXXXXX";
  ASSERT_NE(mkdtemp(dirTemplate), nullptr);
  const std::string dir = dirTemplate;
  kiln::cache::KernelCacheOptions o;
  o.dir = dir;
  const auto graph = kiln::ir::parse(R"(graph(%x: f16[s0, 128]) {
  %0: f16[s0, 128] = relu(%x)
  return(%0)
}
)");
  const auto other = kiln::ir::parse(R"(graph(%x: f16[s0, 128]) {
  %0: f16[s0, 128] = sigmoid(%x)
  return(%0)
}
)");
  kiln::jit::ModuleComparison undecided;
  undecided.reason = "no measurement";
  {
    kiln::cache::KernelCache first(o);
    EXPECT_FALSE(kiln::jit::storeComparison(first, *graph, "b8", "sm_90", undecided));
    EXPECT_TRUE(kiln::jit::storeComparison(first, *graph, "b8", "sm_90", c));
  }
  kiln::cache::KernelCache second(o);
  const std::optional<kiln::jit::ModuleComparison> stored =
      kiln::jit::storedComparison(second, *graph, "b8", "sm_90");
  ASSERT_TRUE(stored.has_value());
  EXPECT_TRUE(stored->moduleFaster);
  EXPECT_EQ(stored->reason, "from the tuning records: " + c.reason);
  EXPECT_FALSE(kiln::jit::storedComparison(second, *graph, "b16", "sm_90").has_value());
  EXPECT_FALSE(kiln::jit::storedComparison(second, *graph, "b8", "sm_89").has_value());
  EXPECT_FALSE(kiln::jit::storedComparison(second, *other, "b8", "sm_90").has_value());
  EXPECT_EQ(std::system(("rm -rf " + dir).c_str()), 0);
}

}  // namespace

// optimize() end to end on the CPU: real models captured, partitioned, compiled with NVRTC for
// sm_90 (no GPU needed to compile) and run through the plan's ATen path, against eager.
#include <gtest/gtest.h>

#include <regex>

#include <atomic>
#include <thread>

#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

namespace {

using kiln::testing::compileOnlySession;
using kiln::testing::expectClose;

TEST(Optimize, EncoderBlockModelMatchesEager) {
  torch::NoGradGuard ng;
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/encoder_block.pt");
  m.eval();
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  opt.inputNames = {"x", "mask"};
  opt.dynamicDims = {{"x", 0, "batch"}, {"mask", 0, "batch"}, {"x", 1, "seq"},
                     {"mask", 2, "seq"}, {"mask", 3, "seq"}};
  auto fast = kiln::jit::optimize(m, opt);
  for (int64_t batch : {3, 4}) {
    std::vector<torch::IValue> in{torch::randn({batch, 7, 768}), torch::zeros({batch, 1, 7, 7})};
    expectClose(fast.forward(in).toTensor(), m.forward(in).toTensor(), 1e-4);
  }
  auto st = fast.stats();
  EXPECT_EQ(st.calls, 2u);
  EXPECT_EQ(st.planMisses, 1u) << "batch 3 and 4 share the power-of-two bucket";
  EXPECT_GT(st.kernelsCompiled, 0u) << fast.explain();
  std::string explain = fast.explain();
  // CPU inputs: every group runs through ATen, whether or not this machine has a driver.
  EXPECT_EQ(st.kernelLaunches, 0u);
  EXPECT_GT(st.groupFallbacks, 0u);
  if (kiln::cuda::driver() == nullptr) {
    EXPECT_NE(explain.find("compiled, but no CUDA driver"), std::string::npos) << explain;
  }
  // Note [Linear rows in source order]: the QKV projection reads norm1's output itself, not the
  // [seq, batch, hidden] permute of it.
  std::smatch proj;
  ASSERT_TRUE(std::regex_search(explain, proj,
                                std::regex(R"(= linear\((%[0-9]+), %layer\.self_attn\.in_proj)")))
      << explain;
  EXPECT_TRUE(std::regex_search(
      explain, std::regex("  " + proj[1].str() + ": [^\n]* = layer_norm\\(%x, %layer\\.norm1")))
      << explain;
  // The output projection reads attention's [batch, seq, heads, dim] rows (a view of what the
  // fused kernels write), and q, k and v are views of the QKV projection: no reshape merges heads
  // before SDPA (Note [Split before merge]).
  std::smatch out;
  ASSERT_TRUE(std::regex_search(
      explain, out,
      std::regex(
          R"(%([0-9]+): f32\[batch, seq, 768\] = reshape\(%([0-9]+)\)\n[^\n]*\n[^\n]* = linear\(%\1, %layer\.self_attn\.out_proj)")))
      << explain;
  EXPECT_TRUE(std::regex_search(
      explain,
      std::regex("%" + out[2].str() +
                 R"(: f32\[batch, seq, 12, 64\] = permute\(%[0-9]+\) \{perm = \[0, 2, 1, 3\]\})")))
      << explain;
  EXPECT_EQ(explain.find("12*batch"), std::string::npos) << explain;
}

TEST(Optimize, MlpModelAndPlanReuse) {
  torch::NoGradGuard ng;
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/mlp.pt");
  m.eval();
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  auto fast = kiln::jit::optimize(m, opt);
  std::vector<torch::IValue> in{torch::randn({2, 5, 1024})};
  auto want = m.forward(in).toTensor();
  expectClose(fast.forward(in).toTensor(), want, 1e-4);
  expectClose(fast.forward(in).toTensor(), want, 1e-4);
  EXPECT_EQ(fast.stats().planHits, 1u);
  // A new static shape is a new plan; an evicted plan is rebuilt correctly.
  std::vector<torch::IValue> in2{torch::randn({1, 9, 1024})};
  expectClose(fast.forward(in2).toTensor(), m.forward(in2).toTensor(), 1e-4);
  EXPECT_EQ(fast.stats().planMisses, 2u);
}

TEST(Optimize, ProfileTimesEveryStepOfThePlan) {
  torch::NoGradGuard ng;
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/mlp.pt");
  m.eval();
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  auto fast = kiln::jit::optimize(m, opt);
  std::vector<torch::IValue> in{torch::randn({2, 5, 1024})};
  kiln::jit::PlanProfile p = fast.profile(in, 3);
  EXPECT_FALSE(p.device);  // CPU inputs: the host clock
  EXPECT_EQ(p.reps, 3);
  // fc1 and fc2 are library steps; every step is listed in plan order, with a time.
  int linears = 0;
  for (size_t i = 0; i < p.steps.size(); ++i) {
    EXPECT_EQ(p.steps[i].step, i);
    EXPECT_GE(p.steps[i].ms, 0.0);
    linears += p.steps[i].label == "library linear";
  }
  EXPECT_EQ(linears, 2) << p.toString();
  EXPECT_GT(p.totalMs, 0.0);
  EXPECT_NE(p.toString().find("library linear"), std::string::npos);
  // The profiled plan is forward()'s plan: 1 warm-up + 3 timed calls, one plan built.
  EXPECT_EQ(fast.stats().planMisses, 1u);
  expectClose(fast.forward(in).toTensor(), m.forward(in).toTensor(), 1e-4);
  EXPECT_THROW(fast.profile(in, 0), kiln::UserError);
}

TEST(Optimize, NnModuleHolder) {
  torch::NoGradGuard ng;
  torch::nn::Sequential net(torch::nn::Linear(16, 32), torch::nn::GELU(), torch::nn::Linear(32, 8));
  net->eval();
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  auto fast = kiln::jit::optimize(net, opt);
  torch::Tensor x = torch::randn({4, 16});
  expectClose(fast.forward({x}).toTensor(), net->forward(x), 1e-5);
  // Weights are bound by reference: an in-place update is seen without re-optimizing.
  for (auto& p : net->parameters()) p.mul_(0.5);
  expectClose(fast.forward({x}).toTensor(), net->forward(x), 1e-5);
}

TEST(Optimize, ConcurrentCallersGetEagerResults) {
  torch::NoGradGuard ng;
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x):
    return torch.softmax(x * 0.125, -1) + torch.layer_norm(x, [x.size(-1)], None, None, 1e-5)
)");
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  opt.dynamicDims = {{"input0", 0, ""}};
  auto fast = kiln::jit::optimize(m, opt);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      torch::NoGradGuard g;
      for (int i = 0; i < 10; ++i) {
        torch::Tensor x = torch::randn({1 + (t * 10 + i) % 17, 33});
        torch::Tensor want = m.forward({x}).toTensor();
        torch::Tensor got = fast.forward({x}).toTensor();
        if (!torch::allclose(got, want, 1e-5, 1e-5)) bad++;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(fast.stats().calls, 80u);
  EXPECT_LE(fast.stats().planMisses, 6u) << "batches 1..17 span 6 buckets (1, 2, 4, 8, 16, 32)";
}

TEST(Optimize, BadInputsNameTheInput) {
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x, y):
    return x + y
)");
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  opt.inputNames = {"x", "mask"};
  auto fast = kiln::jit::optimize(m, opt);
  try {
    fast.forward({torch::ones({2}), torch::IValue(3)});
    FAIL() << "expected UserError";
  } catch (const kiln::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("input 1 (\"mask\"): expected a tensor, got Int"),
              std::string::npos)
        << e.what();
  }
}

TEST(Optimize, DisableRunsTheModuleItself) {
  kiln::Options o;
  kiln::Session session(o, [](std::string_view n) -> std::optional<std::string> {
    if (n == "KILN_DISABLE") return "1";
    return std::nullopt;
  });
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x):
    return x * 2.0
)");
  kiln::jit::Options opt;
  opt.session = &session;
  auto fast = kiln::jit::optimize(m, opt);
  expectClose(fast.forward({torch::ones({3})}).toTensor(), torch::full({3}, 2.0f), 0);
  EXPECT_EQ(fast.stats().planMisses, 0u);
}

TEST(Optimize, MaskedAttentionIsALibraryStep) {
  torch::NoGradGuard ng;
  auto holder = std::make_shared<torch::nn::Module>();
  auto sdpa = [](const std::vector<torch::IValue>& in) -> torch::IValue {
    return at::scaled_dot_product_attention(in[0].toTensor(), in[1].toTensor(), in[2].toTensor(),
                                            in[3].toTensor());
  };
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  auto fast = kiln::jit::optimize(holder, sdpa, opt);
  std::vector<torch::IValue> in{torch::randn({2, 3, 5, 8}), torch::randn({2, 3, 7, 8}),
                                torch::randn({2, 3, 7, 8}), torch::randn({2, 1, 5, 7})};
  expectClose(fast.forward(in).toTensor(), sdpa(in).toTensor(), 1e-5);
  EXPECT_NE(fast.explain().find("library sdpa"), std::string::npos) << fast.explain();
}

TEST(Optimize, ExplicitAttentionBecomesSdpa) {
  torch::NoGradGuard ng;
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, q, k, v, mask):
    scores = torch.matmul(q, k.transpose(-1, -2)) / 8.0 + mask
    return torch.matmul(torch.softmax(scores, -1), v)
)");
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  auto fast = kiln::jit::optimize(m, opt);
  std::vector<torch::IValue> in{torch::randn({2, 4, 9, 64}), torch::randn({2, 4, 11, 64}),
                                torch::randn({2, 4, 11, 64}), torch::randn({2, 1, 1, 11})};
  expectClose(fast.forward(in).toTensor(), m.forward(in).toTensor(), 1e-5);
  EXPECT_NE(fast.explain().find("library sdpa"), std::string::npos) << fast.explain();
  // Softmax over another dim is not attention: left as it was, still right.
  torch::jit::Module n("N");
  n.define(R"(
def forward(self, q, k, v, mask):
    scores = torch.matmul(q, k.transpose(-1, -2)) / 8.0 + mask
    return torch.matmul(torch.softmax(scores, -2), v)
)");
  auto fastN = kiln::jit::optimize(n, opt);
  std::vector<torch::IValue> sq{torch::randn({2, 4, 11, 64}), torch::randn({2, 4, 11, 64}),
                                torch::randn({2, 4, 11, 64}), torch::randn({2, 1, 1, 11})};
  expectClose(fastN.forward(sq).toTensor(), n.forward(sq).toTensor(), 1e-5);
  EXPECT_EQ(fastN.explain().find("library sdpa"), std::string::npos) << fastN.explain();
}

}  // namespace

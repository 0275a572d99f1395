// Note [CUDA graph replay] on the GPU: replayed calls against the same plan run step by step and
// against the module, with new inputs every call; several sizes in one bucket; kernel-set swaps
// while calls replay; eight threads on their own streams and the default one; a plan whose step
// synchronizes with the host, which must stay ungraphed and leave the stream and the allocator
// working.
#include <gtest/gtest.h>

#include <iostream>

#include <atomic>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

#include "jit/runtime/plan.h"
#include "jit/tuner/tuner.h"
#include "tests/support/real_models.h"

namespace {

using kiln::testing::Fixture;
using kiln::testing::kFixtures;

kiln::Session& graphSession(bool graphs) {
  static kiln::Session* on = nullptr;
  static kiln::Session* off = nullptr;
  kiln::Session*& s = graphs ? on : off;
  if (s == nullptr) {
    kiln::Options o;
    o.poisonOutputs = true;
    o.diskCache = false;
    o.strict = true;
    o.tune = kiln::TuneMode::kOff;
    o.backgroundCompile = false;  // every plan runs its own bucket's kernels from its first call
    o.cudaGraphs = graphs;
    o.compareModule = false;  // GpuCompare tests it; here the plan must serve every call
    s = new kiln::Session(o);
  }
  return *s;
}

bool haveGpu(std::string* why) {
  if (!torch::cuda::is_available()) {
    *why = "no CUDA device visible to LibTorch";
    return false;
  }
  if (graphSession(true).cudaEnvironment().devices.empty()) {
    *why = graphSession(true).cudaEnvironment().reason;
    return false;
  }
  return true;
}

#define REQUIRE_GPU()                                      \
  do {                                                     \
    std::string why;                                       \
    if (!haveGpu(&why)) GTEST_SKIP() << "no GPU: " << why; \
  } while (0)

// Issue 19's bar against the module: cosine >= 0.9999, max error <= 2% of max |ref|. Returns
// whether it held, for threads.
bool accurate(const torch::Tensor& got, const torch::Tensor& want, std::string* why) {
  if (got.sizes() != want.sizes()) {
    *why = "sizes differ";
    return false;
  }
  torch::Tensor g = got.to(torch::kFloat).flatten(), w = want.to(torch::kFloat).flatten();
  if (!torch::isfinite(g).all().item<bool>()) {
    *why = "non-finite values";
    return false;
  }
  const double cosine = torch::cosine_similarity(g, w, 0).item<double>();
  const double err = (g - w).abs().max().item<double>();
  const double ref = w.abs().max().item<double>();
  *why = "cosine " + std::to_string(cosine) + ", max error " + std::to_string(err) +
         " against max |ref| " + std::to_string(ref);
  return cosine >= 0.9999 && err <= 0.02 * ref;
}

void expectAccurate(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  std::string why;
  EXPECT_TRUE(accurate(got, want, &why)) << what << ": " << why;
}

const Fixture& fixture(std::string_view name) {
  for (const Fixture& f : kFixtures)
    if (f.name == name) return f;
  throw std::runtime_error("no fixture " + std::string(name));
}

std::vector<torch::IValue> inputsFor(const Fixture& f, int64_t batch, int64_t seq, uint64_t seed) {
  return kiln::testing::fixtureInputs(f, batch, seq, seed, torch::kCUDA, torch::kHalf);
}

// Calls `fast` and the module on `calls` new [4, 32] inputs (seeds from `seed`) and expects
// every output accurate.
void expectCallsAccurate(kiln::jit::OptimizedModule& fast, torch::jit::Module& m, const Fixture& f,
                         uint64_t seed, int calls) {
  int bad = 0;
  std::string lastWhy;
  for (int i = 0; i < calls; ++i) {
    const std::vector<torch::IValue> in = inputsFor(f, 4, 32, seed + static_cast<uint64_t>(i));
    std::string why;
    if (!accurate(fast.forward(in).toTensor(), m.forward(in).toTensor(), &why)) {
      ++bad;
      lastWhy = why;
    }
  }
  EXPECT_EQ(bad, 0) << lastWhy;
}

class GraphReplayGpu : public ::testing::TestWithParam<Fixture> {};

// Calls 1 and 2 run step by step (the second captures), 3..6 replay. Every call has new inputs:
// a replay that kept the captured inputs would repeat call 2's answer.
TEST_P(GraphReplayGpu, ReplaysMatchStepByStepAndFollowTheInputs) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  const Fixture& f = GetParam();
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto graphed = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, graphSession(true)));
  auto stepped = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, graphSession(false)));
  torch::Tensor previous;
  for (int call = 0; call < 6; ++call) {
    const std::vector<torch::IValue> in = inputsFor(f, 3, 77, 100 + static_cast<uint64_t>(call));
    const torch::Tensor want = m.forward(in).toTensor();
    const torch::Tensor got = graphed.forward(in).toTensor();
    const torch::Tensor ref = stepped.forward(in).toTensor();
    const std::string what = std::string(f.name) + " call " + std::to_string(call);
    expectAccurate(got, want, what + " against the module");
    const double scale = ref.abs().max().item<double>();
    EXPECT_LE((got.to(torch::kFloat) - ref.to(torch::kFloat)).abs().max().item<double>(),
              1e-3 * scale + 1e-3)
        << what << " against the same plan step by step";
    if (previous.defined()) {
      EXPECT_FALSE(torch::equal(got, previous)) << what << ": a stale answer";
    }
    previous = got;
  }
  const kiln::jit::ModuleStats st = graphed.stats();
  EXPECT_EQ(st.graphCaptures, 1u) << graphed.explain();
  EXPECT_EQ(st.graphReplays, 4u) << graphed.explain();
  EXPECT_EQ(st.eagerFallbacks, 0u) << graphed.explain();
  EXPECT_EQ(stepped.stats().graphReplays, 0u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GraphReplayGpu, ::testing::ValuesIn(kFixtures),
                         [](const auto& info) { return std::string(info.param.name); });

// Sequence lengths 9, 12 and 16 share bucket 16: one graph each, captured at its second call.
TEST(GpuGraphs, SizesInOneBucketGetAGraphEach) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, graphSession(true)));
  uint64_t seed = 1;
  for (int round = 0; round < 3; ++round)
    for (int64_t seq : {9, 12, 16}) {
      const std::vector<torch::IValue> in = inputsFor(f, 2, seq, seed++);
      expectAccurate(fast.forward(in).toTensor(), m.forward(in).toTensor(),
                     "seq " + std::to_string(seq) + " round " + std::to_string(round));
    }
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.planMisses, 1u) << fast.explain();
  EXPECT_EQ(st.graphCaptures, 3u) << fast.explain();
  EXPECT_EQ(st.graphReplays, 3u) << fast.explain();
}

// A kernel-set swap (what the tuner and background specialization do) drops the plan's graphs;
// they are captured again. Swaps land from another thread while calls replay.
TEST(GpuGraphs, SwapsWhileReplayingRecapture) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, graphSession(true)));
  const kiln::jit::PreparedPlan prepared = fast.prepare(inputsFor(f, 2, 8, 1), {{4, 32}, {4, 32}});
  ASSERT_NE(prepared.plan, nullptr) << prepared.eagerReason;
  const auto swap = [&] {
    prepared.plan->swapKernels(std::make_shared<kiln::jit::KernelSet>(*prepared.plan->kernels()));
  };
  int bad = 0;
  std::string lastWhy;
  const auto call = [&](uint64_t seed) {
    const std::vector<torch::IValue> in = inputsFor(f, 4, 32, seed);
    std::string why;
    if (!accurate(fast.forward(in).toTensor(), m.forward(in).toTensor(), &why)) {
      ++bad;
      lastWhy = why;
    }
  };
  // Replaying first (calls 1-2 run and capture), then swaps land from another thread while
  // calls replay or capture again.
  for (uint64_t i = 0; i < 4; ++i) call(500 + i);
  ASSERT_EQ(fast.stats().graphCaptures, 1u) << fast.explain();
  std::atomic<bool> done{false};
  std::thread swapper([&] {
    for (int i = 0; i < 5 && !done.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      swap();
    }
  });
  for (uint64_t i = 0; i < 60; ++i) call(600 + i);
  done.store(true);
  swapper.join();
  // A swap between two calls: the next call captures again, the one after replays.
  const uint64_t capturesBefore = fast.stats().graphCaptures;
  const uint64_t replaysBefore = fast.stats().graphReplays;
  swap();
  for (uint64_t i = 0; i < 2; ++i) call(900 + i);
  EXPECT_EQ(bad, 0) << lastWhy;
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_GE(prepared.plan->swaps(), 2u);
  EXPECT_EQ(st.graphCaptures, capturesBefore + 1) << fast.explain();
  EXPECT_EQ(st.graphReplays, replaysBefore + 1) << fast.explain();
}

// Note [Swaps checked on the plan]: a tuning job on the GPU checks its new set on the whole plan
// (step by step, though the plan replays graphs) on the call's inputs before it swaps; calls stay
// right whichever way the check went. The lab's per-kernel timings are forced (the second variant
// of each kernel "wins"), so there is always a set to check; the plan timings are the real lab's.
struct ForcedWinnerLab : kiln::jit::TuningLab {
  std::unique_ptr<kiln::jit::TuningLab> real;
  int n = 0;
  bool prepare(const kiln::jit::Program&, size_t, const kiln::jit::KernelStep&,
               const std::vector<int64_t>&) override {
    n = 0;
    return true;
  }
  std::optional<Result> measure(const kiln::jit::KernelStep&) override {
    Result r;
    r.matches = true;
    r.timing.ms.assign(9, n == 2 ? 0.5 : 1.0);
    ++n;
    return r;
  }
  std::optional<PlanTimings> timeRuns(const std::function<void()>& a,
                                      const std::function<void()>& b, at::Device device) override {
    return real->timeRuns(a, b, device);
  }
};

TEST(GpuGraphs, TuningSwapIsCheckedOnThePlan) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  kiln::Options o = graphSession(true).options();
  o.tune = kiln::TuneMode::kEager;  // the call that reaches the threshold runs the job
  o.tuneThreshold = 4;
  o.tuneMaxVariants = 3;
  kiln::Session session(o);
  session.setTuningLabFactory([&session] {
    auto lab = std::make_unique<ForcedWinnerLab>();
    lab->real = kiln::jit::makeCudaLab(session);
    return lab;
  });
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, session));
  expectCallsAccurate(fast, m, f, 700, 12);
  const kiln::jit::ModuleStats st = fast.stats();
  ASSERT_EQ(st.tuningJobs, 1u) << fast.explain();
  std::string lines;
  for (const std::string& l : st.tuning) lines += l + "\n";
  std::cout << lines;
  ASSERT_NE(lines.find(" -> "), std::string::npos) << "the forced winners are missing\n" << lines;
  EXPECT_NE(lines.find("plan check: "), std::string::npos) << lines;
  EXPECT_NE(lines.find("step by step): "), std::string::npos) << lines;
  EXPECT_TRUE(lines.find("swapped in") != std::string::npos ||
              lines.find("rolled back") != std::string::npos)
      << lines;
  EXPECT_EQ(st.kernelsTuned > 0, lines.find("swapped in") != std::string::npos) << lines;
  EXPECT_GT(st.graphReplays, 0u) << fast.explain();
  session.waitForBackground();
}

// Note [Library or kiln GEMM on the plan]: with plan timings scripted so that cuBLAS wins, the job
// swaps the plan's kiln GEMM steps to ATen, calls stay right, explain() says so, and a second
// module's job takes the choice from the tuning records without timing.
struct LibraryGemmWinsLab : kiln::jit::TuningLab {
  std::shared_ptr<int> planTimings = std::make_shared<int>(0);
  bool prepare(const kiln::jit::Program&, size_t, const kiln::jit::KernelStep&,
               const std::vector<int64_t>&) override {
    return false;  // no kernel tuning: only the plan-level choice
  }
  std::optional<Result> measure(const kiln::jit::KernelStep&) override { return std::nullopt; }
  std::optional<PlanTimings> timeRuns(const std::function<void()>& a,
                                      const std::function<void()>& b, at::Device) override {
    a();  // both choices run for real once
    b();
    ++*planTimings;
    PlanTimings t;
    t.a.ms.assign(9, 1.0);  // kiln's GEMM (the incumbent)
    t.b.ms.assign(9, 0.5);  // cuBLAS
    t.how = "scripted";
    return t;
  }
};

TEST(GpuGraphs, LibraryGemmChoiceOnThePlan) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  kiln::Options o = graphSession(true).options();
  o.tune = kiln::TuneMode::kEager;
  o.tuneThreshold = 4;
  kiln::Session session(o);
  auto lab = std::make_shared<LibraryGemmWinsLab>();
  session.setTuningLabFactory([lab] {
    auto l = std::make_unique<LibraryGemmWinsLab>();
    l->planTimings = lab->planTimings;
    return l;
  });
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  for (int module = 0; module < 2; ++module) {
    SCOPED_TRACE(module == 0 ? "timed" : "from the records");
    auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, session));
    expectCallsAccurate(fast, m, f, 800, 10);
    const std::string explain = fast.explain();
    if (explain.find("kiln GEMM") == std::string::npos)
      GTEST_SKIP() << "no linear runs on kiln's GEMM here (KILN_GEMM, not sm_90):\n" << explain;
    std::string lines;
    for (const std::string& l : fast.stats().tuning) lines += l + "\n";
    EXPECT_NE(lines.find(module == 0 ? "with cuBLAS (medians of 9, scripted): cuBLAS"
                                     : "library (from the tuning records)"),
              std::string::npos)
        << lines;
    EXPECT_EQ(*lab->planTimings, 1) << lines;
    EXPECT_NE(explain.find("the tuner timed the plan faster"), std::string::npos) << explain;
    EXPECT_EQ(explain.find(" in its epilogue)"), std::string::npos) << explain;
  }
  session.waitForBackground();
}

// kiln's captures must not touch the CUDA generator: random ops on another thread keep working
// while plans capture (at::cuda::CUDAGraph marks the default generator capturing process-wide).
TEST(GpuGraphs, RandomOpsOnAnotherThreadDuringCaptures) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, graphSession(true)));
  std::atomic<bool> done{false};
  std::atomic<int> draws{0};
  std::string failure;
  std::thread random([&] {
    torch::NoGradGuard ngThread;
    c10::cuda::CUDAStreamGuard own(c10::cuda::getStreamFromPool());
    try {
      while (!done.load()) {
        torch::Tensor x = torch::randn({256, 256}, torch::TensorOptions().device(torch::kCUDA));
        x = torch::dropout(x, 0.1, /*train=*/true);
        draws.fetch_add(1);
      }
      torch::cuda::synchronize();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  });
  // Several sizes in one bucket: each is captured at its second call.
  for (int64_t seq = 20; seq <= 32; seq += 4)
    for (uint64_t i = 0; i < 3; ++i) {
      const std::vector<torch::IValue> in =
          inputsFor(f, 2, seq, 700 + static_cast<uint64_t>(seq) * 10 + i);
      expectAccurate(fast.forward(in).toTensor(), m.forward(in).toTensor(), "with draws beside it");
    }
  done.store(true);
  random.join();
  EXPECT_TRUE(failure.empty()) << failure;
  EXPECT_GT(draws.load(), 0);
  EXPECT_GE(fast.stats().graphCaptures, 4u) << fast.explain();
  // And on this thread, after the captures.
  EXPECT_NO_THROW(torch::randn({8}, torch::TensorOptions().device(torch::kCUDA)));
}

// Eight threads call one module at one size: four on streams of their own, four on the default
// stream. Replays share the plan's static buffers, so they must be ordered across streams.
TEST(GpuGraphs, EightThreadsOnTheirOwnStreams) {
  REQUIRE_GPU();
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, graphSession(true)));
  std::atomic<int> bad{0};
  std::mutex whyMutex;
  std::string lastWhy;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      torch::NoGradGuard ng;
      std::optional<c10::cuda::CUDAStreamGuard> own;
      if (t % 2 == 1) own.emplace(c10::cuda::getStreamFromPool());
      for (int i = 0; i < 20; ++i) {
        const std::vector<torch::IValue> in =
            inputsFor(f, 3, 40, 1000 + static_cast<uint64_t>(t * 100 + i));
        const torch::Tensor got = fast.forward(in).toTensor();
        const torch::Tensor want = m.forward(in).toTensor();
        std::string why;
        if (!accurate(got, want, &why)) {
          bad++;
          std::lock_guard<std::mutex> lock(whyMutex);
          lastWhy = "thread " + std::to_string(t) + " call " + std::to_string(i) + ": " + why;
        }
      }
    });
  for (auto& th : threads) th.join();
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(bad.load(), 0) << lastWhy;
  EXPECT_EQ(st.graphCaptures, 1u) << fast.explain();
  EXPECT_GE(st.graphReplays, 100u) << fast.explain();
}

// Plans that must stay ungraphed: int() of a tensor is read on the host at every call (Note
// [Run-time scalars]), which turns graphs off up front; boolean-mask indexing makes its shape from
// data inside ATen, which the capture itself finds (or kiln runs it as the module). Both keep
// answering right, say why, and leave the stream, the allocator and the CUDA generator working:
// random numbers are drawn afterwards and another module is captured and replayed.
TEST(GpuGraphs, HostSyncStepLeavesThePlanUngraphed) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  // Not strict: kiln guesses the masked index's length at capture, and a wrong guess sends that
  // signature to the module (Note [Never worse than eager]) instead of throwing.
  static kiln::Session* lenient = [] {
    kiln::Options so = graphSession(true).options();
    so.strict = false;
    return new kiln::Session(so);
  }();
  const auto check = [&](const std::string& source, const std::string& reason) {
    torch::jit::Module m("m");
    m.define(source);
    m.eval();
    kiln::jit::Options o;
    o.session = lenient;
    o.inputNames = {"x"};
    auto fast = kiln::jit::optimize(m, o);
    for (int call = 0; call < 5; ++call) {
      torch::manual_seed(static_cast<uint64_t>(call));
      const torch::Tensor x = torch::randn({16, 33}, torch::TensorOptions().device(torch::kCUDA));
      const torch::Tensor want = m.forward({x}).toTensor();
      const torch::Tensor got = fast.forward({x}).toTensor();
      EXPECT_TRUE(got.sizes() == want.sizes() && torch::allclose(got, want, 1e-5, 1e-5))
          << source << " call " << call;
    }
    const kiln::jit::ModuleStats st = fast.stats();
    const std::string explain = fast.explain();
    EXPECT_EQ(st.graphCaptures, 0u) << explain;
    EXPECT_TRUE(explain.find(reason) != std::string::npos || st.eagerFallbacks > 0) << explain;
  };
  check("def forward(self, x):\n    k = int((x > 0).sum())\n    return torch.relu(x) * 2.0 + k\n",
        "takes a scalar read from a tensor on the host at every call");
  check("def forward(self, x):\n    y = torch.relu(x) * 2.0\n    return y[x > 0.5] + 1.0\n",
        "CUDA graphs: off: ");

  EXPECT_NO_THROW(torch::randn({8}, torch::TensorOptions().device(torch::kCUDA)));
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module plain = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fastPlain = kiln::jit::optimize(plain, kiln::testing::fixtureOptions(f, graphSession(true)));
  for (uint64_t call = 0; call < 3; ++call) {
    const std::vector<torch::IValue> in = inputsFor(f, 2, 24, 4000 + call);
    expectAccurate(fastPlain.forward(in).toTensor(), plain.forward(in).toTensor(),
                   "after the ungraphed plans");
  }
  EXPECT_EQ(fastPlain.stats().graphCaptures, 1u) << fastPlain.explain();
  EXPECT_EQ(fastPlain.stats().graphReplays, 1u) << fastPlain.explain();
}

// Note [Plan against the module]: a settled plan is timed once against the module (here in the
// foreground: KILN_TUNE=eager), both medians and the choice are explained, and every call stays
// right whichever runs.
TEST(GpuCompare, SettledPlanIsTimedAgainstTheModule) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  kiln::Options o;
  o.diskCache = false;
  o.strict = true;
  o.tune = kiln::TuneMode::kEager;
  o.tuneThreshold = 1000;  // no kernel tuning, only the comparison
  o.compareModule = true;
  kiln::Session session(o);
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, session));
  for (int call = 0; call < kiln::jit::kCompareAfter + 3; ++call) {
    const std::vector<torch::IValue> in = inputsFor(f, 3, 40, 2000 + static_cast<uint64_t>(call));
    expectAccurate(fast.forward(in).toTensor(), m.forward(in).toTensor(),
                   "call " + std::to_string(call));
  }
  const std::string explain = fast.explain();
  EXPECT_NE(explain.find("against the module: kiln "), std::string::npos) << explain;
  const nlohmann::json cmp =
      nlohmann::json::parse(fast.explainJson()).at("plan").at("againstModule");
  ASSERT_TRUE(cmp.is_object()) << fast.explainJson();
  EXPECT_TRUE(cmp.at("decided").get<bool>()) << cmp.dump();
  EXPECT_GT(cmp.at("kilnMs").get<double>(), 0.0) << cmp.dump();
  EXPECT_GT(cmp.at("moduleMs").get<double>(), 0.0) << cmp.dump();
  const kiln::jit::ModuleStats st = fast.stats();
  if (cmp.at("moduleFaster").get<bool>()) {
    EXPECT_GT(st.moduleFasterCalls, 0u) << explain;
  } else {
    EXPECT_EQ(st.moduleFasterCalls, 0u) << explain;
  }
  std::printf("[compare] hf_bert 3x40: %s\n", cmp.dump().c_str());
}

// A plan judged slower than the module hands its signature's calls to the module.
TEST(GpuCompare, ModuleChoiceRoutesTheSignatureToTheModule) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  const Fixture& f = fixture("hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".cuda.pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, graphSession(true)));
  const kiln::jit::PreparedPlan prepared = fast.prepare(inputsFor(f, 2, 8, 1), {{2, 24}, {2, 24}});
  ASSERT_NE(prepared.plan, nullptr) << prepared.eagerReason;
  kiln::jit::ModuleComparison slower;
  slower.decided = true;
  slower.moduleFaster = true;
  slower.kilnMs = 2.0;
  slower.moduleMs = 1.0;
  slower.reps = 10;
  slower.reason = "set by the test";
  prepared.plan->setComparison(slower);
  for (int call = 0; call < 3; ++call) {
    const std::vector<torch::IValue> in = inputsFor(f, 2, 24, 3000 + static_cast<uint64_t>(call));
    expectAccurate(fast.forward(in).toTensor(), m.forward(in).toTensor(),
                   "call " + std::to_string(call));
  }
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.moduleFasterCalls, 3u) << fast.explain();
  EXPECT_EQ(st.eagerCalls, 0u) << fast.explain();
  EXPECT_EQ(prepared.plan->stats().calls.load(), 0u);
  EXPECT_NE(fast.explain().find("the module runs"), std::string::npos) << fast.explain();
}

}  // namespace

// The background tuner (Note [Background tuning] in jit/tuner/tuner.h) on the CPU: kernels are
// compiled for sm_90 for real, and a fake lab stands in for the device's timings and output
// checks, so the search, the decision, the swap, the records and shutdown are all exercised.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/temp_dir.h"

#include "codegen/schedule.h"
#include "jit/tuner/tuner.h"

namespace {

// Measurement n of a kernel (n = 0 is the incumbent): 1 ms, except variant `wrongAt` (0.3 ms, wrong
// output) and variant `fastAt` (0.5 ms, right output); the rest 0.99 ms (inside minGain).
struct FakeLab : kiln::jit::TuningLab {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool gate = false;  // block in measure() until released
    bool released = false;
    int blocked = 0;
    std::string winner;  // schedule of the variant made fast
    int measured = 0;
    int planChecks = 0;
  };
  std::shared_ptr<Shared> sh;
  int n = 0;
  int wrongAt = 1, fastAt = 2;
  explicit FakeLab(std::shared_ptr<Shared> s) : sh(std::move(s)) {}
  bool prepare(const kiln::jit::Program&, size_t, const kiln::jit::KernelStep&,
               const std::vector<int64_t>&) override {
    n = 0;
    return true;
  }
  std::optional<Result> measure(const kiln::jit::KernelStep& step) override {
    {
      std::unique_lock<std::mutex> lock(sh->mu);
      ++sh->measured;
      if (sh->gate) {
        ++sh->blocked;
        sh->cv.notify_all();
        sh->cv.wait_for(lock, std::chrono::seconds(60), [&] { return sh->released; });
      }
    }
    Result r;
    double ms = 1.0;
    r.matches = true;
    if (n == wrongAt) {
      ms = 0.3;
      r.matches = false;
    } else if (n == fastAt) {
      ms = 0.5;
      std::lock_guard<std::mutex> lock(sh->mu);
      sh->winner = kiln::codegen::toString(step.schedule);
    } else if (n > 0) {
      ms = 0.99;
    }
    for (int i = 0; i < 9; ++i) r.timing.ms.push_back(ms);
    ++n;
    return r;
  }
  // Note [Swaps checked on the plan]: both plans are run once (on the CPU, through ATen), then
  // timed as scripted: the plan with the new set at `planWithNewMs`, the old at 1 ms; a negative
  // value: this lab cannot time plans.
  double planWithNewMs = -1;
  std::optional<PlanTimings> timeRuns(const std::function<void()>& a,
                                      const std::function<void()>& b, at::Device) override {
    if (planWithNewMs < 0) return std::nullopt;
    a();
    b();
    {
      std::lock_guard<std::mutex> lock(sh->mu);
      ++sh->planChecks;
    }
    PlanTimings t;
    for (int i = 0; i < 9; ++i) {
      t.a.ms.push_back(planWithNewMs);
      t.b.ms.push_back(1.0);
    }
    t.how = "step by step";
    return t;
  }
};

std::unique_ptr<kiln::Session> session(const std::string& dir, kiln::TuneMode mode, int threshold,
                                       std::shared_ptr<FakeLab::Shared> lab) {
  kiln::Options o;
  o.arch = "sm_90";
  o.cacheDir = dir;
  o.tune = mode;
  o.tuneThreshold = threshold;
  auto s = std::make_unique<kiln::Session>(o, [](std::string_view) { return std::nullopt; });
  if (lab) s->setTuningLabFactory([lab] { return std::make_unique<FakeLab>(lab); });
  return s;
}

torch::jit::Module layerNormGelu() {
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x, r):
    return torch.gelu(torch.layer_norm(x + r, [x.size(-1)], None, None, 1e-5))
)");
  m.eval();
  return m;
}

kiln::jit::Options rows(kiln::Session& s) {
  kiln::jit::Options opt;
  opt.session = &s;
  opt.inputNames = {"x", "r"};
  opt.dynamicDims = {{"x", 0, "n"}, {"r", 0, "n"}};
  return opt;
}

bool matchesEager(torch::jit::Module& m, kiln::jit::OptimizedModule& fast, int64_t n) {
  std::vector<torch::IValue> in{torch::randn({n, 512}), torch::randn({n, 512})};
  return torch::allclose(fast.forward(in).toTensor(), m.forward(in).toTensor(), 1e-5, 1e-5);
}

TEST(Tuner, SwapsInTheFastestCorrectVariantAndPersistsIt) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-tuner-test");
  const std::string& dir = scratch.path();
  auto lab = std::make_shared<FakeLab::Shared>();
  auto m = layerNormGelu();
  {
    auto s = session(dir, kiln::TuneMode::kEager, 3, lab);
    auto fast = kiln::jit::optimize(m, rows(*s));
    for (int i = 0; i < 2; ++i) ASSERT_TRUE(matchesEager(m, fast, 6));
    EXPECT_EQ(fast.stats().tuningJobs, 0u) << "below the threshold";
    ASSERT_TRUE(matchesEager(m, fast, 7));  // the third call tunes (eager mode: in this call)
    auto st = fast.stats();
    EXPECT_EQ(st.tuningJobs, 1u);
    EXPECT_GT(st.variantsTried, 2u);
    EXPECT_EQ(st.kernelsTuned, 1u) << fast.explain();
    ASSERT_FALSE(lab->winner.empty());
    ASSERT_EQ(st.tuning.size(), 1u);
    EXPECT_GT(st.tuning[0].find(lab->winner), st.tuning[0].find(" -> ")) << st.tuning[0];
    EXPECT_NE(st.tuning[0].find(lab->winner), std::string::npos) << st.tuning[0];
    EXPECT_NE(st.tuning[0].find("bucket of [8]"), std::string::npos) << st.tuning[0];
    std::string explain = fast.explain();
    EXPECT_NE(explain.find(lab->winner + ", tuned"), std::string::npos)
        << "the 0.3 ms variant was wrong; the 0.5 ms one must win\n"
        << explain;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(matchesEager(m, fast, 5));  // swapped set is right
    EXPECT_EQ(fast.stats().tuningJobs, 1u) << "one job per plan";
    s->waitForBackground();
  }
  {
    // A new session starts with the winner (its tuning record), tuning off or not.
    auto s = session(dir, kiln::TuneMode::kBackground, 1000, nullptr);
    auto fast = kiln::jit::optimize(m, rows(*s));
    ASSERT_TRUE(matchesEager(m, fast, 6));
    EXPECT_NE(fast.explain().find(lab->winner + ", tuned"), std::string::npos) << fast.explain();
    s->waitForBackground();
  }
}

TEST(Tuner, NoWinnerKeepsTheIncumbent) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-tuner-test");
  const std::string& dir = scratch.path();
  auto lab = std::make_shared<FakeLab::Shared>();
  auto s = session(dir, kiln::TuneMode::kEager, 1, nullptr);
  s->setTuningLabFactory([lab] {
    auto l = std::make_unique<FakeLab>(lab);
    l->fastAt = -1;  // nothing beats the incumbent by more than the noise
    return l;
  });
  auto m = layerNormGelu();
  auto fast = kiln::jit::optimize(m, rows(*s));
  ASSERT_TRUE(matchesEager(m, fast, 6));
  auto st = fast.stats();
  EXPECT_EQ(st.tuningJobs, 1u);
  EXPECT_EQ(st.kernelsTuned, 0u);
  EXPECT_EQ(fast.explain().find(", tuned"), std::string::npos);
  EXPECT_NE(fast.explain().find("kept after"), std::string::npos) << fast.explain();
  s->waitForBackground();
}

// Note [Swaps checked on the plan]: a winner that makes the whole plan slower on a real call's
// inputs is rolled back, and its record is not kept; one that does not is swapped in.
TEST(Tuner, ASwapThatSlowsThePlanIsRolledBack) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-tuner-test");
  const std::string& dir = scratch.path();
  auto m = layerNormGelu();
  for (double newMs : {1.25, 0.8}) {
    SCOPED_TRACE(::testing::Message() << "plan with the tuned kernel at " << newMs << " ms");
    const bool rollBack = newMs > 1.0;
    auto lab = std::make_shared<FakeLab::Shared>();
    {
      auto s =
          session(dir + (rollBack ? "/slower" : "/faster"), kiln::TuneMode::kEager, 1, nullptr);
      s->setTuningLabFactory([lab, newMs] {
        auto l = std::make_unique<FakeLab>(lab);
        l->planWithNewMs = newMs;
        return l;
      });
      auto fast = kiln::jit::optimize(m, rows(*s));
      ASSERT_TRUE(matchesEager(m, fast, 6));  // the first call tunes (eager mode, threshold 1)
      auto st = fast.stats();
      EXPECT_EQ(st.tuningJobs, 1u);
      EXPECT_EQ(lab->planChecks, 1);
      ASSERT_FALSE(lab->winner.empty());
      ASSERT_FALSE(st.tuning.empty());
      const std::string& check = st.tuning.back();
      char want[160];
      std::snprintf(want, sizeof(want),
                    "plan check: %.3f ms with the tuned kernels, 1.000 ms without (medians of 9, "
                    "step by step)",
                    newMs);
      EXPECT_NE(check.find(want), std::string::npos) << check;
      EXPECT_NE(check.find(rollBack ? "rolled back" : "swapped in"), std::string::npos) << check;
      EXPECT_EQ(st.kernelsTuned, rollBack ? 0u : 1u) << st.toString();
      const std::string explain = fast.explain();
      EXPECT_EQ(explain.find(lab->winner + ", tuned") != std::string::npos, !rollBack) << explain;
      for (int i = 0; i < 3; ++i) ASSERT_TRUE(matchesEager(m, fast, 5));
      s->waitForBackground();
    }
    // A later process takes the winner only where it was swapped in.
    auto s = session(dir + (rollBack ? "/slower" : "/faster"), kiln::TuneMode::kBackground, 1000,
                     nullptr);
    auto fast = kiln::jit::optimize(m, rows(*s));
    ASSERT_TRUE(matchesEager(m, fast, 6));
    EXPECT_EQ(fast.explain().find(lab->winner + ", tuned") != std::string::npos, !rollBack)
        << fast.explain();
    s->waitForBackground();
  }
}

TEST(Tuner, SwapUnderEightConcurrentCallers) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-tuner-test");
  const std::string& dir = scratch.path();
  auto lab = std::make_shared<FakeLab::Shared>();
  auto s = session(dir, kiln::TuneMode::kBackground, 5, lab);
  auto m = layerNormGelu();
  auto fast = kiln::jit::optimize(m, rows(*s));
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      torch::NoGradGuard g;
      for (int i = 0; i < 20; ++i)
        if (!matchesEager(m, fast, 5 + (t + i) % 3)) bad++;  // one bucket (8)
    });
  for (auto& th : threads) th.join();
  s->waitForBackground();
  EXPECT_EQ(bad.load(), 0);
  auto st = fast.stats();
  EXPECT_EQ(st.tuningJobs, 1u) << st.toString();
  EXPECT_EQ(st.kernelsTuned, 1u) << st.toString();
  ASSERT_TRUE(matchesEager(m, fast, 6));
}

TEST(Tuner, ShutdownWhileAJobRunsNeitherHangsNorSwaps) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-tuner-test");
  const std::string& dir = scratch.path();
  auto lab = std::make_shared<FakeLab::Shared>();
  lab->gate = true;
  auto m = layerNormGelu();
  auto s = session(dir, kiln::TuneMode::kBackground, 1, lab);
  {
    auto fast = kiln::jit::optimize(m, rows(*s));
    ASSERT_TRUE(matchesEager(m, fast, 6));
    std::unique_lock<std::mutex> lock(lab->mu);
    ASSERT_TRUE(lab->cv.wait_for(lock, std::chrono::seconds(60), [&] { return lab->blocked > 0; }))
        << "the tuning job should be measuring";
  }  // the module goes away while its job is blocked
  std::thread release([lab] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::lock_guard<std::mutex> lock(lab->mu);
    lab->released = true;
    lab->cv.notify_all();
  });
  auto t0 = std::chrono::steady_clock::now();
  s.reset();  // waits for the job, which stops at its next check
  release.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(50));
  EXPECT_LE(lab->measured, 2) << "the job must stop instead of measuring the other variants";
}

}  // namespace

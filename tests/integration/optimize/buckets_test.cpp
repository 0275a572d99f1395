// Shape buckets, guards and background specialization (Note [Guards and plans] in
// jit/runtime/optimize.h), on the CPU: kernels are compiled for sm_90 for real (NVRTC needs no
// GPU) and the plans run through their ATen path, so every result is checked against eager.
// Compiles are counted and blocked through the session's compile hook, never timed.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

#include "jit/runtime/buckets.h"

namespace {

using kiln::CompileEvent;
using kiln::jit::bucketEdge;
using kiln::jit::kOverflowBucket;

std::unique_ptr<kiln::Session> compileOnlySession(int maxPlans = 64) {
  kiln::Options o = kiln::testing::compileOnlyOptions();
  o.maxPlans = maxPlans;
  return std::make_unique<kiln::Session>(o, kiln::testing::noEnvironment());
}

// Scale + mask + softmax with a dynamic row length n: its row kernels differ per bucket (how
// much of a row each thread caches), so every bucket really compiles its own kernel.
torch::jit::Module maskedSoftmax() {
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x, r):
    return torch.softmax(x * 0.125 + r, -1) * x
)");
  m.eval();
  return m;
}

kiln::jit::Options rowsDynamic(kiln::Session& s) {
  kiln::jit::Options opt;
  opt.session = &s;
  opt.inputNames = {"x", "r"};
  opt.dynamicDims = {{"x", 1, "n"}, {"r", 1, "n"}};
  return opt;
}

void expectEager(torch::jit::Module& m, kiln::jit::OptimizedModule& fast,
                 const std::vector<torch::IValue>& in, double tol = 1e-5) {
  torch::Tensor got = fast.forward(in).toTensor();
  torch::Tensor want = m.forward(in).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  ASSERT_EQ(got.scalar_type(), want.scalar_type());
  EXPECT_TRUE(torch::allclose(got.to(torch::kFloat), want.to(torch::kFloat), tol, tol));
}

// Inputs with row length n (the dynamic dim) and `count` rows (static).
std::vector<torch::IValue> rows(int64_t n, int64_t count = 3,
                                torch::ScalarType dt = torch::kFloat) {
  return {torch::randn({count, n}).to(dt), torch::randn({count, n}).to(dt)};
}

TEST(Buckets, PowersOfTwoAndExplicitEdges) {
  EXPECT_EQ(bucketEdge(0), 0);
  EXPECT_EQ(bucketEdge(1), 1);
  EXPECT_EQ(bucketEdge(2), 2);
  EXPECT_EQ(bucketEdge(3), 4);
  EXPECT_EQ(bucketEdge(512), 512);
  EXPECT_EQ(bucketEdge(513), 1024);
  const std::vector<int64_t> edges = {1, 8, 32, 128, 512, 2048};
  EXPECT_EQ(bucketEdge(1, edges), 1);
  EXPECT_EQ(bucketEdge(2, edges), 8);
  EXPECT_EQ(bucketEdge(8, edges), 8);
  EXPECT_EQ(bucketEdge(9, edges), 32);
  EXPECT_EQ(bucketEdge(2048, edges), 2048);
  EXPECT_EQ(bucketEdge(2049, edges), kOverflowBucket);
  EXPECT_THROW(kiln::jit::validateBucketEdges("t", std::vector<int64_t>{8, 8}), kiln::UserError);
  EXPECT_THROW(kiln::jit::validateBucketEdges("t", std::vector<int64_t>{0, 8}), kiln::UserError);
  EXPECT_NO_THROW(kiln::jit::validateBucketEdges("t", edges));
  // A bucket's kernels are the same whatever size created it (cacheable across processes).
  EXPECT_EQ(kiln::jit::bucketFor({5}).symbolMax, kiln::jit::bucketFor({8}).symbolMax);
  EXPECT_TRUE(kiln::jit::isGeneric(kiln::jit::bucketInfoForEdges({kOverflowBucket})));
}

TEST(Buckets, BadPoliciesAreUserErrors) {
  auto s = compileOnlySession();
  auto m = maskedSoftmax();
  kiln::jit::Options opt = rowsDynamic(*s);
  opt.buckets = {{"x", 0, {8, 64}}};
  try {
    kiln::jit::optimize(m, opt);
    FAIL() << "expected UserError";
  } catch (const kiln::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("no such dynamic dim"), std::string::npos) << e.what();
  }
  opt.buckets = {{"x", 1, {64, 8}}};
  EXPECT_THROW(kiln::jit::optimize(m, opt), kiln::UserError);
  opt.buckets = {{"x", 1, {8, 64}}, {"r", 1, {16, 64}}};  // both name symbol "n"
  EXPECT_THROW(kiln::jit::optimize(m, opt), kiln::UserError);
}

TEST(Guards, ShapeInBucketHitsOtherGuardsCaptureAgain) {
  auto s = compileOnlySession();
  auto m = maskedSoftmax();
  auto fast = kiln::jit::optimize(m, rowsDynamic(*s));
  expectEager(m, fast, rows(5));  // bucket 8: capture + compile
  auto st = fast.stats();
  EXPECT_EQ(st.planMisses, 1u);
  EXPECT_EQ(st.captures, 1u);
  const uint64_t compiled = st.kernelsCompiled;
  EXPECT_GT(compiled, 0u);

  expectEager(m, fast, rows(7));  // same bucket: nothing new
  expectEager(m, fast, rows(8));
  st = fast.stats();
  EXPECT_EQ(st.planMisses, 1u);
  EXPECT_EQ(st.planHits, 2u);

  s->waitForBackground();
  const uint64_t before = fast.stats().kernelsCompiled;
  expectEager(m, fast, rows(100));  // new bucket, same family: no new trace
  s->waitForBackground();
  st = fast.stats();
  EXPECT_EQ(st.planMisses, 2u);
  EXPECT_EQ(st.captures, 1u) << "a new bucket reuses the family's captured program";
  EXPECT_GT(st.kernelsCompiled, before);

  // Other guards: dtype, rank, a static dim, a dynamic dim of size 1 each capture again.
  expectEager(m, fast, rows(5, 3, torch::kBFloat16), 2e-2);
  EXPECT_EQ(fast.stats().captures, 2u);
  expectEager(m, fast, rows(5, 4));
  EXPECT_EQ(fast.stats().captures, 3u);
  expectEager(m, fast, rows(1));
  EXPECT_EQ(fast.stats().captures, 4u);
  expectEager(m, fast, {torch::randn({2, 3, 5}), torch::randn({2, 3, 5})});
  EXPECT_EQ(fast.stats().captures, 5u);
  EXPECT_EQ(fast.stats().planMisses, 6u);
  s->waitForBackground();
}

// Counts NVRTC runs per (kernel, bucket): a key compiled twice is a bug.
struct CompileCounter {
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, int> counts;
  std::set<std::string> buckets;
  int total = 0;
  void operator()(const CompileEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    ++counts[{e.kernel, e.bucket}];
    buckets.insert(e.bucket);
    ++total;
  }
};

TEST(Buckets, TwoHundredRandomBatchesCompileOncePerBucket) {
  auto s = compileOnlySession();
  auto counter = std::make_shared<CompileCounter>();
  s->setCompileHook([counter](const CompileEvent& e) { (*counter)(e); });
  auto m = maskedSoftmax();
  auto fast = kiln::jit::optimize(m, rowsDynamic(*s));
  std::mt19937 rng(7);
  std::uniform_int_distribution<int64_t> batch(1, 512);
  std::set<int64_t> bucketsSeen;
  for (int i = 0; i < 200; ++i) {
    int64_t n = batch(rng);
    bucketsSeen.insert(bucketEdge(n));
    std::vector<torch::IValue> in = rows(n);
    torch::Tensor got = fast.forward(in).toTensor();
    ASSERT_TRUE(torch::allclose(got, m.forward(in).toTensor(), 1e-5, 1e-5)) << "batch " << n;
  }
  s->waitForBackground();
  auto st = fast.stats();
  EXPECT_EQ(st.calls, 200u);
  EXPECT_EQ(st.planMisses, bucketsSeen.size()) << "one plan per bucket";
  EXPECT_LE(st.captures, 2u) << "batch 1 is its own family; every other bucket shares one trace";
  std::lock_guard<std::mutex> lock(counter->mu);
  for (const auto& [key, count] : counter->counts)
    EXPECT_EQ(count, 1) << key.first << " for bucket " << key.second << " compiled " << count
                        << " times";
  // At most one kernel set per bucket, plus the generic set.
  EXPECT_LE(counter->buckets.size(), bucketsSeen.size() + 1);
  EXPECT_EQ(static_cast<uint64_t>(counter->total), st.kernelsCompiled);
}

// A hook that blocks background compiles until released, and records any foreground compile.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  bool closing = false;
  int blocked = 0;
  std::vector<std::string> foreground;  // buckets compiled while a caller waited
  void operator()(const CompileEvent& e) {
    std::unique_lock<std::mutex> lock(mu);
    if (!closing) return;
    if (!e.background) {
      foreground.push_back(e.bucket);
      return;
    }
    ++blocked;
    cv.notify_all();
    // Bounded, so a broken implementation fails the test instead of hanging it.
    cv.wait_for(lock, std::chrono::seconds(120), [&] { return open; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu);
    open = true;
    cv.notify_all();
  }
};

TEST(Buckets, NewBucketIsServedByGenericKernelsWithoutWaitingForNvrtc) {
  auto s = compileOnlySession();
  auto gate = std::make_shared<Gate>();
  s->setCompileHook([gate](const CompileEvent& e) { (*gate)(e); });
  auto m = maskedSoftmax();
  auto fast = kiln::jit::optimize(m, rowsDynamic(*s));
  expectEager(m, fast, rows(3));  // bucket 4, compiled now; generic kernels in the background
  s->waitForBackground();
  auto st = fast.stats();
  EXPECT_GT(st.backgroundCompiles, 0u) << "generic kernels were compiled in the background";
  EXPECT_EQ(st.backgroundPending, 0u);
  {
    std::lock_guard<std::mutex> lock(gate->mu);
    gate->closing = true;
  }
  // New buckets: served at once by the generic kernels while their own kernels wait at the gate.
  for (int64_t n : {20, 300}) expectEager(m, fast, rows(n));
  st = fast.stats();
  EXPECT_EQ(st.plansServedGeneric, 2u) << fast.explain();
  EXPECT_EQ(st.swaps, 0u);
  {
    std::unique_lock<std::mutex> lock(gate->mu);
    EXPECT_TRUE(gate->foreground.empty())
        << "a caller waited on NVRTC for bucket " << gate->foreground.front();
    gate->cv.wait_for(lock, std::chrono::seconds(60), [&] { return gate->blocked > 0; });
    EXPECT_GT(gate->blocked, 0) << "the specialization should be compiling in the background";
  }
  EXPECT_NE(fast.explain().find("specializing in the background"), std::string::npos);
  expectEager(m, fast, rows(21));  // same bucket while specializing: a hit
  gate->release();
  s->waitForBackground();
  st = fast.stats();
  EXPECT_EQ(st.swaps, 2u) << fast.explain();
  EXPECT_NE(fast.explain().find("swapped in from the background"), std::string::npos);
  for (int64_t n : {17, 257}) expectEager(m, fast, rows(n));
  EXPECT_EQ(fast.stats().planMisses, 3u);
}

TEST(Buckets, SizesPastTheLastEdgeRunGenericKernels) {
  auto s = compileOnlySession();
  auto m = maskedSoftmax();
  kiln::jit::Options opt = rowsDynamic(*s);
  opt.buckets = {{"x", 1, {8, 64}}};
  auto fast = kiln::jit::optimize(m, opt);
  expectEager(m, fast, rows(5));
  expectEager(m, fast, rows(50));
  expectEager(m, fast, rows(65));    // overflow: the generic kernels, not an error
  expectEager(m, fast, rows(1000));  // same overflow bucket
  s->waitForBackground();
  auto st = fast.stats();
  EXPECT_EQ(st.planMisses, 3u);
  EXPECT_EQ(st.captures, 1u);
  EXPECT_NE(fast.explain().find("generic kernels"), std::string::npos) << fast.explain();
}

TEST(Buckets, PlanCapEvictsLeastRecentlyUsed) {
  auto s = compileOnlySession(/*maxPlans=*/2);
  auto m = maskedSoftmax();
  auto fast = kiln::jit::optimize(m, rowsDynamic(*s));
  for (int64_t n : {3, 6, 12, 3}) expectEager(m, fast, rows(n));
  s->waitForBackground();
  auto st = fast.stats();
  EXPECT_EQ(st.plansAlive, 2u);
  EXPECT_EQ(st.plansEvicted, 2u);
  EXPECT_EQ(st.planMisses, 4u) << "bucket 4 was evicted and rebuilt";
  EXPECT_EQ(st.captures, 1u) << "bucket 4's family lived on in the plans of buckets 8 and 16";
}

// Note [Call fast path]: a repeated call takes the last call's plan without a signature, but
// never a plan that has left the table meanwhile. prepare() builds plans without a call, so it
// can evict the very plan the fast path remembers.
TEST(Buckets, CallFastPathNeverServesAnEvictedPlan) {
  auto s = compileOnlySession(/*maxPlans=*/1);
  auto m = maskedSoftmax();
  auto fast = kiln::jit::optimize(m, rowsDynamic(*s));
  const std::vector<torch::IValue> small = rows(3);
  for (int i = 0; i < 3; ++i) expectEager(m, fast, small);
  EXPECT_EQ(fast.stats().planMisses, 1u);
  EXPECT_EQ(fast.stats().planHits, 2u);
  kiln::jit::PreparedPlan p = fast.prepare(small, {{3, 40}, {3, 40}});  // evicts bucket 4
  ASSERT_NE(p.plan, nullptr) << p.eagerReason;
  EXPECT_EQ(fast.stats().plansEvicted, 1u);
  expectEager(m, fast, small);
  s->waitForBackground();
  auto st = fast.stats();
  EXPECT_EQ(st.planMisses, 3u) << "the evicted plan of bucket 4 must be rebuilt, not reused";
  EXPECT_EQ(st.plansEvicted, 2u);
  EXPECT_EQ(st.plansAlive, 1u);
}

TEST(Buckets, MixedShapesFromEightThreadsDuringBackgroundCompiles) {
  auto s = compileOnlySession();
  auto m = maskedSoftmax();
  auto fast = kiln::jit::optimize(m, rowsDynamic(*s));
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      torch::NoGradGuard g;
      std::mt19937 rng(static_cast<unsigned>(t));
      std::uniform_int_distribution<int64_t> batch(2, 300);
      for (int i = 0; i < 25; ++i) {
        std::vector<torch::IValue> in = rows(batch(rng));
        if (!torch::allclose(fast.forward(in).toTensor(), m.forward(in).toTensor(), 1e-5, 1e-5))
          bad++;
      }
    });
  for (auto& th : threads) th.join();
  s->waitForBackground();
  EXPECT_EQ(bad.load(), 0);
  auto st = fast.stats();
  EXPECT_EQ(st.calls, 200u);
  EXPECT_LE(st.planMisses, 9u) << "sizes 2..300 span 9 buckets (2, 4, ..., 512)";
  EXPECT_EQ(st.backgroundPending, 0u);
}

TEST(Buckets, DestroyingTheModuleDuringBackgroundCompilesIsSafe) {
  auto s = compileOnlySession();
  auto gate = std::make_shared<Gate>();
  s->setCompileHook([gate](const CompileEvent& e) { (*gate)(e); });
  auto m = maskedSoftmax();
  {
    auto fast = kiln::jit::optimize(m, rowsDynamic(*s));
    expectEager(m, fast, rows(3));
    s->waitForBackground();
    {
      std::lock_guard<std::mutex> lock(gate->mu);
      gate->closing = true;
    }
    expectEager(m, fast, rows(40));  // specialization blocked at the gate
  }                                  // module gone while its job waits
  gate->release();
  s->waitForBackground();  // the job finds the module gone and stops; no crash, no hang
  SUCCEED();
}

}  // namespace

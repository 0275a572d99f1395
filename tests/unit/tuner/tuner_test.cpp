// The autotuner's GPU-free parts: decisions from (fake) timings, schedule encoding, tuning records
// (Notes [Tuning decisions] and [Tuning records] in jit/tuner/).
#include <gtest/gtest.h>

#include "cache/kernel_cache.h"
#include "codegen/kernel_abi.h"
#include "codegen/schedule.h"
#include "jit/tuner/decision.h"
#include "jit/tuner/records.h"
#include "src/ir/parser.h"
#include "src/partition/partition.h"
#include "src/passes/pipeline.h"

namespace {

using kiln::tuner::Candidate;
using kiln::tuner::Timing;

Timing steady(double ms, double jitter = 0.0) {
  Timing t;
  for (int i = 0; i < 9; ++i) t.ms.push_back(ms * (1.0 + jitter * ((i % 3) - 1)));
  return t;
}

TEST(TunerDecision, FasterBeyondNoiseReplaces) {
  auto d = kiln::tuner::decide(steady(1.0), steady(0.8), true);
  EXPECT_TRUE(d.replace) << d.reason;
  EXPECT_NEAR(d.speedup, 1.25, 1e-9);
}

TEST(TunerDecision, TiesAndSmallGainsKeepTheIncumbent) {
  EXPECT_FALSE(kiln::tuner::decide(steady(1.0), steady(1.0), true).replace);
  EXPECT_FALSE(kiln::tuner::decide(steady(1.0), steady(0.98), true).replace) << "2% < minGain";
  EXPECT_FALSE(kiln::tuner::decide(steady(1.0), steady(1.3), true).replace) << "slower";
}

TEST(TunerDecision, NoiseRaisesTheBar) {
  // +-10% jitter: the interquartile spread is about 20%, so a 25% gain is not enough (needs ~40%).
  auto noisy = kiln::tuner::decide(steady(1.0, 0.1), steady(0.8, 0.1), true);
  EXPECT_FALSE(noisy.replace) << noisy.reason;
  EXPECT_TRUE(kiln::tuner::decide(steady(1.0, 0.1), steady(0.5, 0.1), true).replace);
}

TEST(TunerDecision, FasterButWrongIsRejected) {
  auto d = kiln::tuner::decide(steady(1.0), steady(0.3), false);
  EXPECT_FALSE(d.replace);
  EXPECT_EQ(d.reason, "wrong result");
  EXPECT_FALSE(kiln::tuner::decide(steady(1.0), Timing{}, true).replace);
}

TEST(TunerDecision, PickBestTakesTheLargestValidGain) {
  std::vector<Candidate> c = {
      {steady(0.9), true}, {steady(0.5), false}, {steady(0.7), true}, {steady(1.0), true}};
  EXPECT_EQ(kiln::tuner::pickBest(steady(1.0), c), 2);
  EXPECT_EQ(kiln::tuner::pickBest(steady(1.0), {{steady(0.99), true}}), -1);
}

struct Program {
  std::unique_ptr<kiln::ir::Graph> graph;
  kiln::partition::Partition partition;
  const kiln::partition::FusionGroup& group(size_t i = 0) const {
    for (const auto& s : partition.steps)
      if (s.kind == kiln::partition::StepKind::kFusion && i-- == 0) return s.group;
    throw std::runtime_error("no such group");
  }
};

Program build(std::string_view text) {
  Program p;
  p.graph = kiln::ir::parse(text);
  kiln::passes::runDefaultPasses(*p.graph);
  p.partition = kiln::partition::partitionGraph(*p.graph);
  return p;
}

constexpr std::string_view kLayerNorm = R"(graph(%x: f16[s0, 4096], %w: f16[4096] param) {
  %0: f16[s0, 4096] = layer_norm(%x, %w) {eps = 1e-05, normalized_ndim = 1}
  %1: f16[s0, 4096] = gelu(%0)
  return(%1)
})";
constexpr std::string_view kPointwise = R"(graph(%x: f32[s0, 1000]) {
  %0: f32[s0, 1000] = sigmoid(%x)
  return(%0)
})";

kiln::codegen::BucketInfo bucket512() {
  kiln::codegen::BucketInfo b;
  b.symbolHint = {512};
  b.symbolMax = {512};
  return b;
}

TEST(TunerSchedules, EveryCandidateEncodesAndDecodes) {
  for (std::string_view text : {kLayerNorm, kPointwise}) {
    Program p = build(text);
    auto candidates = kiln::codegen::candidateSchedules(p.group(), bucket512());
    ASSERT_GT(candidates.size(), 4u);
    for (const auto& s : candidates) {
      std::string e = kiln::codegen::encodeSchedule(s);
      auto back = kiln::codegen::decodeSchedule(e);
      ASSERT_TRUE(back.has_value()) << e;
      EXPECT_TRUE(*back == s) << e;
    }
  }
  for (std::string_view bad :
       {"", "pw", "pw 1 2 3", "row 32 8 4 2 1 1", "pw 256 4 1 0 4 9", "fancy 1 2 3 4 5"})
    EXPECT_FALSE(kiln::codegen::decodeSchedule(bad).has_value()) << bad;
}

TEST(TunerRecords, RoundTripThroughTheCacheAndKeyedByGroupBucketArch) {
  kiln::cache::KernelCacheOptions o;
  o.diskEnabled = false;
  kiln::cache::KernelCache cache(o);
  Program ln = build(kLayerNorm), pw = build(kPointwise);
  auto candidates = kiln::codegen::candidateSchedules(ln.group(), bucket512());
  kiln::tuner::TuningRecord rec{candidates.back(), 1.4, static_cast<int>(candidates.size())};
  kiln::tuner::saveRecord(cache, *ln.graph, ln.group(), "s0<=512", "sm_90", rec);  // memory only
  auto back = kiln::tuner::loadRecord(cache, *ln.graph, ln.group(), "s0<=512", "sm_90");
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->schedule == rec.schedule);
  EXPECT_DOUBLE_EQ(back->speedup, 1.4);
  EXPECT_EQ(back->variantsTried, rec.variantsTried);
  EXPECT_FALSE(kiln::tuner::loadRecord(cache, *ln.graph, ln.group(), "s0<=1024", "sm_90"));
  EXPECT_FALSE(kiln::tuner::loadRecord(cache, *ln.graph, ln.group(), "s0<=512", "sm_80"));
  EXPECT_FALSE(kiln::tuner::loadRecord(cache, *pw.graph, pw.group(), "s0<=512", "sm_90"));
  EXPECT_FALSE(kiln::tuner::decodeRecord("schedule row 1\nspeedup 2\n").has_value());
  // The signature names the computation: the same text parsed again gives the same key.
  Program again = build(kLayerNorm);
  EXPECT_EQ(kiln::tuner::groupSignature(*again.graph, again.group()),
            kiln::tuner::groupSignature(*ln.graph, ln.group()));
}

}  // namespace

// The capture cache (Note [Capture cache] in jit/runtime/capture_cache.h): a second process (here:
// a second Session over the same cache directory, with a freshly loaded module) builds its plans
// from the stored capture without tracing, binds the new module's own weights, and matches eager;
// unusable entries fall back to tracing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <torch/script.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

#include "tests/support/temp_dir.h"

#include "codegen/schedule.h"
#include "jit/capture/lower.h"
#include "jit/runtime/buckets.h"
#include "jit/runtime/capture_cache.h"
#include "jit/runtime/program.h"
#include "jit/tuner/records.h"

namespace {

std::unique_ptr<kiln::Session> sessionOver(const std::string& dir) {
  kiln::Options o;
  o.arch = "sm_90";
  o.cacheDir = dir;
  return std::make_unique<kiln::Session>(o, [](std::string_view) { return std::nullopt; });
}

kiln::jit::Options encoderOptions(kiln::Session& s) {
  kiln::jit::Options opt;
  opt.session = &s;
  opt.inputNames = {"x", "mask"};
  opt.dynamicDims = {{"x", 0, "batch"},
                     {"mask", 0, "batch"},
                     {"x", 1, "seq"},
                     {"mask", 2, "seq"},
                     {"mask", 3, "seq"}};
  return opt;
}

torch::jit::Module loadEncoder() {
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/encoder_block.pt");
  m.eval();
  return m;
}

std::vector<torch::IValue> encoderInputs(int64_t batch, int64_t seq) {
  return {torch::randn({batch, seq, 768}), torch::zeros({batch, 1, seq, seq})};
}

void expectEager(torch::jit::Module& m, kiln::jit::OptimizedModule& fast,
                 const std::vector<torch::IValue>& in) {
  torch::Tensor got = fast.forward(in).toTensor();
  torch::Tensor want = m.forward(in).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-4);
}

TEST(CaptureCache, FreshSessionBuildsPlansWithoutTracing) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-capture-cache-test");
  const std::string& dir = scratch.path();
  {
    auto s = sessionOver(dir);
    auto m = loadEncoder();
    auto fast = kiln::jit::optimize(m, encoderOptions(*s));
    expectEager(m, fast, encoderInputs(3, 7));
    EXPECT_EQ(fast.stats().captures, 1u);
    EXPECT_EQ(fast.stats().capturesCached, 0u);
    // Note [First call breakdown]: where the first call went.
    const std::string explain = fast.explain();
    EXPECT_NE(explain.find("first call: built in"), std::string::npos) << explain;
    EXPECT_NE(explain.find(" traced, passes "), std::string::npos) << explain;
    EXPECT_NE(explain.find("; first run "), std::string::npos) << explain;
    EXPECT_NE(explain.find("(slowest: step "), std::string::npos) << explain;
    s->waitForBackground();
  }
  {
    // "A new process": new session over the same directory, the model loaded again, and its
    // weights changed: params are bound by name, so the new values must be used.
    auto s = sessionOver(dir);
    auto m = loadEncoder();
    for (const auto& p : m.parameters()) p.mul_(0.5);
    auto fast = kiln::jit::optimize(m, encoderOptions(*s));
    expectEager(m, fast, encoderInputs(4, 8));  // the bucket (4, 8) of the first session
    s->waitForBackground();
    auto st = fast.stats();
    EXPECT_EQ(st.captures, 0u) << st.toString();
    EXPECT_EQ(st.capturesCached, 1u) << st.toString();
    EXPECT_EQ(st.kernelsCompiled, 0u) << "every kernel is in the disk cache\n" << fast.explain();
    EXPECT_GT(st.kernelsCached, 0u) << st.toString();
    const std::string explain = fast.explain();
    EXPECT_NE(explain.find(" from the capture cache, passes "), std::string::npos) << explain;
    const nlohmann::json first = nlohmann::json::parse(fast.explainJson())["plan"]["firstCall"];
    EXPECT_TRUE(first["captureFromCache"].get<bool>()) << first.dump();
    EXPECT_GT(first["firstRunMs"].get<double>(), 0.0) << first.dump();
    EXPECT_GT(first["kernelsMs"].get<double>(), 0.0) << first.dump();
    EXPECT_FALSE(first["slowestSteps"].empty()) << first.dump();
  }
}

TEST(CaptureCache, DifferentArchitectureOrGuardFamilyMisses) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-capture-cache-test");
  const std::string& dir = scratch.path();
  auto s = sessionOver(dir);
  auto enc = loadEncoder();
  auto a = kiln::jit::optimize(enc, encoderOptions(*s));
  expectEager(enc, a, encoderInputs(3, 7));
  // Another dtype is another guard family: traced, not loaded.
  auto b = kiln::jit::optimize(enc, encoderOptions(*s));
  std::vector<torch::IValue> dbl{torch::randn({3, 7, 768}).to(torch::kBFloat16),
                                 torch::zeros({3, 1, 7, 7}).to(torch::kBFloat16)};
  enc.to(torch::kBFloat16);
  torch::Tensor got = b.forward(dbl).toTensor();
  EXPECT_EQ(b.stats().captures, 1u);
  EXPECT_EQ(got.scalar_type(), torch::kBFloat16);
  enc.to(torch::kFloat);
  // Another module of other code: a miss.
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x, mask):
    return torch.softmax(x * 0.5, -1)
)");
  auto c = kiln::jit::optimize(m, encoderOptions(*s));
  c.forward(encoderInputs(3, 7));
  EXPECT_EQ(c.stats().captures, 1u);
  EXPECT_EQ(c.stats().capturesCached, 0u);
  s->waitForBackground();
}

TEST(CaptureCache, PayloadRoundTripAndBadPayloads) {
  torch::NoGradGuard ng;
  auto m = loadEncoder();
  kiln::jit::CaptureOptions copt;
  copt.inputNames = {"x", "mask"};
  copt.dynamicDims = {{"x", 0, "batch"},
                      {"x", 1, "seq"},
                      {"mask", 0, "batch"},
                      {"mask", 2, "seq"},
                      {"mask", 3, "seq"}};
  kiln::jit::CapturedGraph c = kiln::jit::capture(m, encoderInputs(3, 7), copt);
  std::optional<std::string> payload = kiln::jit::serializeCapture(c, m);
  ASSERT_TRUE(payload.has_value());
  std::string why;
  auto back = kiln::jit::deserializeCapture(*payload, m, &why);
  ASSERT_TRUE(back.has_value()) << why;
  EXPECT_EQ(back->paramNames, c.paramNames);
  EXPECT_EQ(back->exampleSymbolValues, c.exampleSymbolValues);
  EXPECT_EQ(back->params.size(), c.params.size());
  for (size_t i = 0; i < c.params.size(); ++i)
    EXPECT_TRUE(back->params[i].is_same(c.params[i])) << "params bound by reference";

  for (const std::string& bad :
       {std::string(), std::string("garbage"), payload->substr(0, payload->size() / 2),
        std::string("kiln-capture 999\n")}) {
    EXPECT_FALSE(kiln::jit::deserializeCapture(bad, m, &why).has_value());
    EXPECT_FALSE(why.empty());
  }
  // A module without those params cannot take the capture.
  torch::jit::Module other("Other");
  other.define("def forward(self, x):\n    return x\n");
  EXPECT_FALSE(kiln::jit::deserializeCapture(*payload, other, &why).has_value());
  EXPECT_NE(why.find("is not in the module"), std::string::npos) << why;
}

// Eager calls (cumsum with a dtype, arange of a size) and a size assumption (table[:n] is right
// while n <= 16, Note [Size assumptions]).
constexpr const char* kEagerCallsModule = R"(
def forward(self, x):
    n = x.size(0)
    y = torch.cumsum(x, 1, dtype=6) * 2.0
    return y + self.table[:n].sum(0) + torch.arange(n, dtype=6).unsqueeze(1)
)";

// Note [Eager calls in the capture cache]: eager calls (an ATen op with constant and run-time
// arguments) and size assumptions are stored, and the loaded capture runs like the traced one.
TEST(CaptureCache, EagerCallsAndAssumptionsRoundTrip) {
  torch::NoGradGuard ng;
  torch::jit::Module m("M");
  m.register_buffer("table", torch::randn({16, 5}));
  m.define(kEagerCallsModule);
  kiln::jit::CaptureOptions copt;
  copt.inputNames = {"x"};
  copt.dynamicDims = {{"x", 0, "n"}};
  kiln::jit::CapturedGraph c = kiln::jit::capture(m, {torch::randn({3, 5})}, copt);
  ASSERT_FALSE(c.eagerCalls.empty()) << c.report();
  ASSERT_FALSE(c.assumptions.empty()) << c.report();
  std::string why;
  std::optional<std::string> payload = kiln::jit::serializeCapture(c, m, &why);
  ASSERT_TRUE(payload.has_value()) << why;
  std::optional<kiln::jit::CapturedGraph> back = kiln::jit::deserializeCapture(*payload, m, &why);
  ASSERT_TRUE(back.has_value()) << why;
  EXPECT_EQ(back->report(), c.report());
  EXPECT_EQ(back->unsupportedOps, c.unsupportedOps);
  EXPECT_EQ(back->unsupportedReasons, c.unsupportedReasons);
  ASSERT_EQ(back->assumptions.size(), c.assumptions.size());
  for (size_t k = 0; k < c.assumptions.size(); ++k) {
    EXPECT_EQ(back->assumptions[k].lhs, c.assumptions[k].lhs);
    EXPECT_EQ(back->assumptions[k].rhs, c.assumptions[k].rhs);
    EXPECT_EQ(back->assumptions[k].what, c.assumptions[k].what);
  }
  // Same operators, slots and constant arguments.
  ASSERT_EQ(back->eagerCalls.size(), c.eagerCalls.size());
  for (size_t k = 0; k < c.eagerCalls.size(); ++k) {
    const kiln::jit::EagerCall& want = *c.eagerCalls[k];
    const kiln::jit::EagerCall& got = *back->eagerCalls[k];
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.overload, want.overload);
    EXPECT_EQ(static_cast<bool>(got.op), static_cast<bool>(want.op));
    EXPECT_EQ(got.results, want.results);
    ASSERT_EQ(got.slots.size(), want.slots.size());
    for (size_t i = 0; i < want.slots.size(); ++i) {
      EXPECT_EQ(got.slots[i].stackIndex, want.slots[i].stackIndex);
      EXPECT_EQ(got.slots[i].kind, want.slots[i].kind);
      EXPECT_EQ(got.slots[i].operands, want.slots[i].operands);
      ASSERT_EQ(got.slots[i].scalars.size(), want.slots[i].scalars.size());
      for (size_t j = 0; j < want.slots[i].scalars.size(); ++j) {
        EXPECT_EQ(got.slots[i].scalars[j].sym, want.slots[i].scalars[j].sym);
        EXPECT_EQ(got.slots[i].scalars[j].operand, want.slots[i].scalars[j].operand);
        EXPECT_EQ(got.slots[i].scalars[j].type, want.slots[i].scalars[j].type);
      }
    }
    ASSERT_EQ(got.stackTemplate.size(), want.stackTemplate.size());
    for (size_t i = 0; i < want.stackTemplate.size(); ++i)
      EXPECT_EQ(got.stackTemplate[i].tagKind(), want.stackTemplate[i].tagKind()) << i;
  }
  // A payload whose eager-call section is damaged is refused, with a reason.
  const size_t at = payload->find("call aten::");
  ASSERT_NE(at, std::string::npos);
  std::string bad = *payload;
  bad.replace(at, 10, "call aten:X");
  EXPECT_FALSE(kiln::jit::deserializeCapture(bad, m, &why).has_value());
  EXPECT_FALSE(why.empty());
}

// The same module through optimize(): a second session loads the capture, eager calls included,
// and its plans match the module at a new size.
TEST(CaptureCache, EagerCallsRunFromACachedCapture) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-capture-cache-test");
  torch::jit::Module m("M");
  m.register_buffer("table", torch::randn({16, 5}));
  m.define(kEagerCallsModule);
  auto options = [](kiln::Session& s) {
    kiln::jit::Options o;
    o.session = &s;
    o.inputNames = {"x"};
    o.dynamicDims = {{"x", 0, "n"}};
    return o;
  };
  {
    auto s = sessionOver(scratch.path());
    auto fast = kiln::jit::optimize(m, options(*s));
    fast.forward({torch::randn({3, 5})});
    ASSERT_EQ(fast.stats().captures, 1u);
    s->waitForBackground();
  }
  auto s = sessionOver(scratch.path());
  auto fast = kiln::jit::optimize(m, options(*s));
  std::vector<torch::IValue> in{torch::randn({11, 5})};
  torch::Tensor got = fast.forward(in).toTensor();
  torch::Tensor want = m.forward(in).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-4) << fast.explain();
  EXPECT_EQ(fast.stats().captures, 0u) << fast.stats().toString();
  EXPECT_EQ(fast.stats().capturesCached, 1u) << fast.stats().toString();
  // A call breaking the stored assumption (n <= 16, the table's rows) runs eagerly, and right.
  std::vector<torch::IValue> big{torch::randn({20, 5})};
  got = fast.forward(big).toTensor();
  want = m.forward(big).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-4) << fast.explain();
}

// Options for a module of one input x [b, n], both dims dynamic, in session `s`.
kiln::jit::Options batchAndLength(kiln::Session& s) {
  kiln::jit::Options o;
  o.session = &s;
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "b"}, {"x", 1, "n"}};
  return o;
}

// Note [Indexing by aranges] (jit/capture/lower_indexing.cpp): an embedding of an arange is rows
// of the table, transformers' mask indexing by aranges is a reshape and a 0-dim boolean ones() a
// literal, at the batch-1 guard family too (where every index is all ones). The aranges they read
// are dropped with their eager calls, the cumsum after them is numbered again, and the capture
// still round-trips through the cache. A call past the table runs eagerly and raises as the
// module does.
TEST(CaptureCache, IndexingByArangesLeavesNoEagerCalls) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-capture-cache-test");
  torch::jit::Module m("M");
  m.register_buffer("table", torch::randn({16, 8}));
  m.define(R"(
def forward(self, x):
    b = x.size(0)
    n = x.size(1)
    pos = torch.embedding(self.table, torch.arange(2, n + 2).unsqueeze(0))
    keep = torch.ones([], dtype=11)
    mask = (x > 0.0)[torch.arange(b)[:, None, None], torch.arange(n)[None, None, :]]
    c = torch.cumsum(x, 1)
    w = torch.where(mask & keep, 1.0, 0.0)[:, 0, :]
    return w.unsqueeze(-1) * pos + c.unsqueeze(-1)
)");
  auto options = batchAndLength;
  const std::vector<std::pair<int64_t, int64_t>> shapes{{3, 5}, {1, 4}, {2, 9}};
  {
    auto s = sessionOver(scratch.path());
    auto fast = kiln::jit::optimize(m, options(*s));
    for (auto [b, n] : shapes) expectEager(m, fast, {torch::randn({b, n})});
    const std::string explain = fast.explain();
    for (const char* op : {"aten::embedding", "aten::index", "aten::arange", "aten::ones"})
      EXPECT_EQ(explain.find(op), std::string::npos) << op << "\n" << explain;
    EXPECT_NE(explain.find("aten::cumsum x1"), std::string::npos) << explain;
    EXPECT_EQ(fast.stats().captures, 2u) << "one per guard family: b >= 2 and b = 1";
    s->waitForBackground();
  }
  auto s = sessionOver(scratch.path());
  auto fast = kiln::jit::optimize(m, options(*s));
  for (auto [b, n] : shapes) expectEager(m, fast, {torch::randn({b, n})});
  EXPECT_EQ(fast.stats().captures, 0u) << fast.stats().toString();
  EXPECT_EQ(fast.stats().capturesCached, 2u) << fast.stats().toString();
  // 15 + 2 rows > 16: eager, which raises.
  const std::vector<torch::IValue> past{torch::randn({2, 15})};
  EXPECT_ANY_THROW(m.forward(past));
  EXPECT_ANY_THROW(fast.forward(past));
}

// Note [Buffers with known contents] (capture.h): BERT's embeddings read an integer buffer that
// holds arange(16) (sliced to the sequence) and one of zeros (gathered by those positions and
// expanded). Both embeddings become rows of their tables, with no eager gather or embedding; the
// assumed contents are in the capture report and the cache entry; a write into a buffer makes the
// next call run eagerly, and right, until the content is back; a module whose buffer holds
// another value gets a capture of its own.
TEST(CaptureCache, BuffersWithKnownContentsLeaveNoEagerCalls) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-capture-cache-test");
  auto make = [](int64_t type) {
    torch::jit::Module m("M");
    m.register_buffer("pos_ids", torch::arange(16).unsqueeze(0));
    m.register_buffer("types", torch::full({1, 16}, type, torch::kLong));
    m.register_buffer("ptable", torch::randn({16, 8}));
    m.register_buffer("ttable", torch::randn({2, 8}));
    m.define(R"(
def forward(self, x):
    b = x.size(0)
    n = x.size(1)
    pos = self.pos_ids[:, 0:n]
    t = torch.gather(self.types.expand(1, 16), 1, pos).expand(b, n)
    return x.unsqueeze(-1) + torch.embedding(self.ptable, pos) + torch.embedding(self.ttable, t)
)");
    return m;
  };
  auto options = batchAndLength;
  const std::vector<std::pair<int64_t, int64_t>> shapes{{3, 5}, {1, 4}, {2, 9}};
  torch::jit::Module m = make(0);
  {
    auto s = sessionOver(scratch.path());
    auto fast = kiln::jit::optimize(m, options(*s));
    for (auto [b, n] : shapes) expectEager(m, fast, {torch::randn({b, n})});
    const std::string explain = fast.explain();
    for (const char* op : {"aten::embedding", "aten::gather"})
      EXPECT_EQ(explain.find(op), std::string::npos) << op << "\n" << explain;
    EXPECT_EQ(fast.stats().captures, 2u) << "one per guard family: b >= 2 and b = 1";
    s->waitForBackground();
  }
  auto s = sessionOver(scratch.path());
  auto fast = kiln::jit::optimize(m, options(*s));
  for (auto [b, n] : shapes) expectEager(m, fast, {torch::randn({b, n})});
  EXPECT_EQ(fast.stats().captures, 0u) << fast.stats().toString();
  EXPECT_EQ(fast.stats().capturesCached, 2u) << fast.stats().toString();
  const std::string json = fast.explainJson();
  EXPECT_NE(json.find("assumes pos_ids holds arange(0, 16)"), std::string::npos) << json;
  EXPECT_NE(json.find("assumes types holds 0 16 times"), std::string::npos) << json;
  // A write into the buffer: the next calls run eagerly (and match) until it holds zeros again.
  const uint64_t eagerBefore = fast.stats().eagerCalls;
  torch::Tensor types = m.attr("types").toTensor();
  types.fill_(1);
  expectEager(m, fast, {torch::randn({3, 5})});
  expectEager(m, fast, {torch::randn({3, 6})});
  EXPECT_EQ(fast.stats().eagerCalls, eagerBefore + 2) << fast.stats().toString();
  types.fill_(0);
  expectEager(m, fast, {torch::randn({3, 5})});
  EXPECT_EQ(fast.stats().eagerCalls, eagerBefore + 2) << fast.stats().toString();
  // Another module whose buffer holds ones: its own capture (row 1 of the table), not this one.
  torch::jit::Module ones = make(1);
  auto fastOnes = kiln::jit::optimize(ones, options(*s));
  expectEager(ones, fastOnes, {torch::randn({3, 5})});
  EXPECT_EQ(fastOnes.stats().captures, 1u) << fastOnes.stats().toString();
  // 17 positions past the 16 the buffer has: eager, which raises.
  const std::vector<torch::IValue> past{torch::randn({2, 17})};
  EXPECT_ANY_THROW(m.forward(past));
  EXPECT_ANY_THROW(fast.forward(past));
}

// Note [Tuning records]: a schedule recorded for (group, bucket, arch) is what a new session's
// kernels use; KILN_TUNE=off ignores records.
TEST(TuningRecords, ARecordedScheduleSteersANewSession) {
  torch::NoGradGuard ng;
  const kiln::testing::ScratchDir scratch("kiln-capture-cache-test");
  const std::string& dir = scratch.path();
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x, r):
    return torch.softmax(x * 0.125 + r, -1)
)");
  std::vector<torch::IValue> in{torch::randn({6, 1024}), torch::randn({6, 1024})};
  kiln::jit::CaptureOptions copt;
  copt.inputNames = {"x", "r"};
  copt.dynamicDims = {{"x", 0, "n"}, {"r", 0, "n"}};
  std::string chosen;
  {
    auto s = sessionOver(dir);
    kiln::jit::CapturedGraph c = kiln::jit::capture(m, in, copt);
    const kiln::codegen::BucketInfo bucket = kiln::jit::bucketFor(c.exampleSymbolValues);
    auto program = kiln::jit::Program::build(std::move(c), *s);
    const kiln::partition::FusionGroup* group = nullptr;
    for (const auto& step : program->partition().steps)
      if (step.kind == kiln::partition::StepKind::kFusion) group = &step.group;
    ASSERT_NE(group, nullptr);
    auto candidates = kiln::codegen::candidateSchedules(*group, bucket);
    ASSERT_GT(candidates.size(), 2u);
    const kiln::codegen::ScheduleParams pick = candidates[candidates.size() / 2];
    ASSERT_FALSE(pick == kiln::codegen::defaultSchedule(*group, bucket));
    chosen = kiln::codegen::toString(pick);
    kiln::tuner::TuningRecord rec{pick, 1.2, static_cast<int>(candidates.size())};
    EXPECT_TRUE(kiln::tuner::saveRecord(s->kernelCache(), program->graph(), *group,
                                        kiln::jit::bucketLabel(program->graph(), bucket), "sm_90",
                                        rec));
  }
  auto run = [&](kiln::TuneMode mode) {
    kiln::Options o;
    o.arch = "sm_90";
    o.cacheDir = dir;
    o.tune = mode;
    kiln::Session s(o, [](std::string_view) { return std::nullopt; });
    kiln::jit::Options opt;
    opt.session = &s;
    opt.inputNames = copt.inputNames;
    opt.dynamicDims = copt.dynamicDims;
    auto fast = kiln::jit::optimize(m, opt);
    torch::Tensor got = fast.forward(in).toTensor();
    EXPECT_TRUE(torch::allclose(got, m.forward(in).toTensor(), 1e-5, 1e-5));
    std::string explain = fast.explain();
    s.waitForBackground();
    return explain;
  };
  std::string tuned = run(kiln::TuneMode::kBackground);
  EXPECT_NE(tuned.find(chosen + ", tuned"), std::string::npos) << chosen << "\n" << tuned;
  std::string off = run(kiln::TuneMode::kOff);
  EXPECT_EQ(off.find(", tuned"), std::string::npos) << off;
}

}  // namespace

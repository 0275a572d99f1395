// The JSON forms of stats(), explain() and profile() on the CPU: parsed back with nlohmann-json,
// they carry the same values as the structs and the text forms, and strings with quotes,
// backslashes, newlines and control characters round-trip exactly.
#include <gtest/gtest.h>

#include <memory>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

namespace {

using Json = nlohmann::json;
using kiln::testing::compileOnlySession;
using kiln::testing::noEnvironment;

// No compile target and not strict: what kiln cannot capture runs as the module itself.
kiln::Session& lenientSession() {
  static kiln::Session* s = [] {
    kiln::Options o;
    o.diskCache = false;
    o.tune = kiln::TuneMode::kOff;
    return new kiln::Session(o, noEnvironment());
  }();
  return *s;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void expectStatsEqual(const Json& j, const kiln::jit::ModuleStats& s) {
  EXPECT_EQ(j.at("calls").get<uint64_t>(), s.calls);
  EXPECT_EQ(j.at("planHits").get<uint64_t>(), s.planHits);
  EXPECT_EQ(j.at("planMisses").get<uint64_t>(), s.planMisses);
  EXPECT_EQ(j.at("captures").get<uint64_t>(), s.captures);
  EXPECT_EQ(j.at("capturesCached").get<uint64_t>(), s.capturesCached);
  EXPECT_EQ(j.at("plansAlive").get<uint64_t>(), s.plansAlive);
  EXPECT_EQ(j.at("familiesAlive").get<uint64_t>(), s.familiesAlive);
  EXPECT_EQ(j.at("plansEvicted").get<uint64_t>(), s.plansEvicted);
  EXPECT_EQ(j.at("kernelsCompiled").get<uint64_t>(), s.kernelsCompiled);
  EXPECT_EQ(j.at("backgroundCompiles").get<uint64_t>(), s.backgroundCompiles);
  EXPECT_EQ(j.at("kernelsCached").get<uint64_t>(), s.kernelsCached);
  EXPECT_EQ(j.at("plansServedGeneric").get<uint64_t>(), s.plansServedGeneric);
  EXPECT_EQ(j.at("swaps").get<uint64_t>(), s.swaps);
  EXPECT_EQ(j.at("backgroundPending").get<uint64_t>(), s.backgroundPending);
  EXPECT_EQ(j.at("kernelLaunches").get<uint64_t>(), s.kernelLaunches);
  EXPECT_EQ(j.at("groupFallbacks").get<uint64_t>(), s.groupFallbacks);
  EXPECT_EQ(j.at("graphCaptures").get<uint64_t>(), s.graphCaptures);
  EXPECT_EQ(j.at("graphReplays").get<uint64_t>(), s.graphReplays);
  EXPECT_EQ(j.at("eagerFallbacks").get<uint64_t>(), s.eagerFallbacks);
  EXPECT_EQ(j.at("eagerCalls").get<uint64_t>(), s.eagerCalls);
  EXPECT_EQ(j.at("moduleFasterCalls").get<uint64_t>(), s.moduleFasterCalls);
  EXPECT_EQ(j.at("derivedParamBytes").get<uint64_t>(), s.derivedParamBytes);
  EXPECT_DOUBLE_EQ(j.at("compileSeconds").get<double>(), s.compileSeconds);
  EXPECT_EQ(j.at("tuningJobs").get<uint64_t>(), s.tuningJobs);
  EXPECT_EQ(j.at("variantsTried").get<uint64_t>(), s.variantsTried);
  EXPECT_EQ(j.at("kernelsTuned").get<uint64_t>(), s.kernelsTuned);
  EXPECT_EQ(j.at("tuning").get<std::vector<std::string>>(), s.tuning);
  EXPECT_EQ(j.size(), 27u) << "one key per ModuleStats field";
}

// The exported MLP (fc1, gelu, fc2), its kernels compiled for sm_90 and run through ATen.
kiln::jit::OptimizedModule optimizedMlp() {
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/mlp.pt");
  m.eval();
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  return kiln::jit::optimize(m, opt);
}

TEST(ObservabilityJson, StatsJsonHasEveryField) {
  torch::NoGradGuard ng;
  auto fast = optimizedMlp();
  std::vector<torch::IValue> in{torch::randn({2, 5, 1024})};
  fast.forward(in);
  fast.forward(in);
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.calls, 2u);
  expectStatsEqual(Json::parse(st.toJson()), st);
}

// A library matmul, a fused softmax, a reduction over the outer dim (an eager leftover with a
// reason: Note [What fuses] in partition.h), a view and a pointwise epilogue.
TEST(ObservabilityJson, ExplainJsonMirrorsExplain) {
  torch::NoGradGuard ng;
  torch::jit::Module m("m");
  m.register_parameter("w", torch::randn({8, 8}), /*is_buffer=*/false);
  m.define(R"(
def forward(self, x):
    y = torch.softmax(torch.matmul(x, self.w) * 2.0, -1)
    return y.sum(0, keepdim=True).transpose(0, 1) + 1.0
)");
  m.eval();
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  opt.inputNames = {"x"};
  auto fast = kiln::jit::optimize(m, opt);
  EXPECT_TRUE(Json::parse(fast.explainJson()).at("plan").is_null()) << "no plan before a call";
  torch::Tensor x = torch::randn({4, 8});
  kiln::testing::expectClose(fast.forward({x}).toTensor(), m.forward({x}).toTensor(), 1e-5);

  const std::string text = fast.explain();
  const Json j = Json::parse(fast.explainJson());
  expectStatsEqual(j.at("stats"), fast.stats());

  ASSERT_EQ(j.at("plans").size(), 1u) << j.dump(2);
  const Json& planLine = j.at("plans")[0];
  EXPECT_TRUE(contains(text, "  " + planLine.at("signature").get<std::string>() + " -> ")) << text;
  EXPECT_EQ(planLine.at("calls").get<uint64_t>(), 1u);
  EXPECT_FALSE(planLine.at("generic").get<bool>());
  EXPECT_TRUE(planLine.at("background").is_null());
  EXPECT_TRUE(j.at("eagerFallbacks").empty());

  const Json& plan = j.at("plan");
  const Json& partition = plan.at("partition");
  std::smatch counts;
  ASSERT_TRUE(std::regex_search(
      text, counts,
      std::regex(R"(partition: ([0-9]+) steps \(([0-9]+) fusion, ([0-9]+) library, ([0-9]+) )"
                 R"(view, ([0-9]+) eager\))")))
      << text;
  EXPECT_EQ(partition.at("steps").size(), std::stoul(counts[1]));
  EXPECT_EQ(partition.at("counts").at("fusion").get<int>(), std::stoi(counts[2]));
  EXPECT_EQ(partition.at("counts").at("library").get<int>(), std::stoi(counts[3]));
  EXPECT_EQ(partition.at("counts").at("view").get<int>(), std::stoi(counts[4]));
  EXPECT_EQ(partition.at("counts").at("eager").get<int>(), std::stoi(counts[5]));
  EXPECT_GE(partition.at("counts").at("library").get<int>(), 1) << text;
  EXPECT_GE(partition.at("counts").at("fusion").get<int>(), 1) << text;

  for (const Json& step : partition.at("steps")) {
    const std::string head = "step " + std::to_string(step.at("step").get<size_t>()) + ": ";
    const std::string kind = step.at("kind").get<std::string>();
    EXPECT_FALSE(step.at("label").get<std::string>().empty());
    if (kind == "fusion") {
      const Json& g = step.at("group");
      EXPECT_TRUE(contains(text, head + "fusion #" + std::to_string(g.at("id").get<int>()) + " " +
                                     g.at("kind").get<std::string>()))
          << text;
      EXPECT_TRUE(step.contains("kernel"));
      ASSERT_FALSE(g.at("nodes").empty());
      for (const Json& node : g.at("nodes"))
        EXPECT_TRUE(contains(text, "  " + node.get<std::string>() + "\n")) << node;
      EXPECT_TRUE(contains(text, "domain=[" + g.at("domain")[0].get<std::string>())) << text;
    } else {
      EXPECT_TRUE(contains(text, head + kind + " " + step.at("op").get<std::string>() + "\n  " +
                                     step.at("node").get<std::string>() + "\n"))
          << step.dump(2) << "\n"
          << text;
    }
  }

  ASSERT_FALSE(partition.at("eagerLeftovers").empty()) << text;
  for (const Json& e : partition.at("eagerLeftovers")) {
    const std::string reason = e.at("reason").get<std::string>();
    EXPECT_TRUE(contains(text, "  step " + std::to_string(e.at("step").get<size_t>()) + ": " +
                                   e.at("node").get<std::string>() +
                                   (reason.empty() ? "" : " (" + reason + ")")))
        << e.dump(2) << "\n"
        << text;
  }

  // CPU inputs: every group runs through ATen, with the reason explain() gives.
  ASSERT_EQ(plan.at("kernels").size(),
            static_cast<size_t>(partition.at("counts").at("fusion").get<int>()));
  for (const Json& k : plan.at("kernels")) {
    EXPECT_TRUE(contains(text, "  " + k.at("name").get<std::string>() + " ")) << text;
    if (k.at("runsEagerly").get<bool>()) {
      EXPECT_TRUE(contains(text, "runs eagerly: " + k.at("reason").get<std::string>() + "\n"))
          << k.dump(2);
    }
  }
  EXPECT_EQ(plan.at("kernelSet").at("generic").get<bool>(), contains(text, "kernels (generic)"));
  EXPECT_TRUE(contains(text, "capture: " + plan.at("capture").get<std::string>() + "\n")) << text;
}

// Note [Never worse than eager]: a capture failure's message is the fallback's reason, and it
// comes back from the JSON byte for byte.
TEST(ObservabilityJson, EagerFallbackReasonRoundTrips) {
  torch::NoGradGuard ng;
  const std::string reason =
      "kiln test: a \"quoted\" name, a back\\slash,\na second line\ttab, \x01 and \x1f, "
      "caf\xc3\xa9";
  torch::nn::Linear lin(4, 3);
  kiln::jit::ForwardFn forward = [lin, reason](const std::vector<c10::IValue>& in) mutable {
    // Capture traces the module: fail it. The module itself then serves every call.
    if (torch::jit::tracer::isTracing()) throw std::runtime_error(reason);
    return c10::IValue(lin->forward(in.at(0).toTensor()));
  };
  kiln::jit::Options opt;
  opt.session = &lenientSession();
  opt.inputNames = {"x"};
  auto fast = kiln::jit::optimize(lin.ptr(), forward, opt);
  torch::Tensor x = torch::randn({2, 4});
  kiln::testing::expectClose(fast.forward({x}).toTensor(), lin->forward(x), 1e-6);

  const std::string text = fast.explain();
  ASSERT_TRUE(contains(text, reason)) << text;
  const std::string raw = fast.explainJson();
  EXPECT_TRUE(contains(raw, R"(a \"quoted\" name, a back\\slash,\na second line\ttab, \u0001)"))
      << raw;
  const Json j = Json::parse(raw);
  ASSERT_EQ(j.at("eagerFallbacks").size(), 1u) << raw;
  const Json& e = j.at("eagerFallbacks")[0];
  EXPECT_EQ(e.at("kind").get<std::string>(), "guard family");
  EXPECT_EQ(e.at("reason").get<std::string>(), reason);
  EXPECT_TRUE(contains(text, "guard family " + e.at("key").get<std::string>() + ": " + reason));
  EXPECT_TRUE(j.at("plan").is_null());
  EXPECT_TRUE(j.at("plans").empty());
  EXPECT_EQ(j.at("stats").at("eagerFallbacks").get<uint64_t>(), 1u);
  EXPECT_EQ(j.at("stats").at("eagerCalls").get<uint64_t>(), 1u);
}

// Note [Profiling steps]: on the CPU the host clock times each step; the JSON holds the same
// figures as the struct (doubles round-trip exactly).
TEST(ObservabilityJson, ProfileJsonMatchesProfile) {
  torch::NoGradGuard ng;
  auto fast = optimizedMlp();
  std::vector<torch::IValue> in{torch::randn({2, 5, 1024})};
  const kiln::jit::PlanProfile p = fast.profile(in, 3);
  const Json j = Json::parse(p.toJson());
  EXPECT_DOUBLE_EQ(j.at("totalMs").get<double>(), p.totalMs);
  EXPECT_EQ(j.at("reps").get<int>(), 3);
  EXPECT_FALSE(j.at("device").get<bool>());
  EXPECT_EQ(j.at("clock").get<std::string>(), "host clock");
  ASSERT_EQ(j.at("steps").size(), p.steps.size());
  ASSERT_FALSE(p.steps.empty());
  double shares = 0;
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Json& s = j.at("steps")[i];
    EXPECT_EQ(s.at("step").get<size_t>(), p.steps[i].step);
    EXPECT_EQ(s.at("label").get<std::string>(), p.steps[i].label);
    EXPECT_DOUBLE_EQ(s.at("ms").get<double>(), p.steps[i].ms);
    shares += s.at("sharePercent").get<double>();
  }
  EXPECT_NEAR(shares, 100.0, 1e-6);
  // The step labels are explain()'s.
  const Json plan = Json::parse(fast.explainJson()).at("plan");
  ASSERT_EQ(plan.at("partition").at("steps").size(), p.steps.size());
  for (size_t i = 0; i < p.steps.size(); ++i)
    EXPECT_EQ(plan.at("partition").at("steps")[i].at("label").get<std::string>(), p.steps[i].label);
}

}  // namespace

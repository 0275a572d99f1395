#include "jit/runtime/against_module.h"

#include <cmath>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cache/kernel_cache.h"
#include "codegen/kernel_abi.h"
#include "src/ir/printer.h"

namespace kiln::jit {

std::string ModuleComparison::line() const {
  if (!decided) return fmt::format("not compared: {}", reason);
  return fmt::format("kiln {:.3f} ms, module {:.3f} ms (medians of {}): {} ({})", kilnMs, moduleMs,
                     reps, moduleFaster ? "the module runs" : "kiln runs", reason);
}

int signTestWins(int n, double alpha) {
  // P(X >= k) for X ~ Binomial(n, 1/2), from the top down.
  double tail = 0;
  double term = std::pow(0.5, n);  // P(X = n)
  for (int k = n; k >= 0; --k) {
    if (tail + term > alpha) return k + 1;
    tail += term;
    term = term * k / (n - k + 1);  // P(X = k - 1) from P(X = k)
  }
  return 0;
}

ModuleComparison judgeAgainstModule(const tuner::Timing& kiln, const tuner::Timing& module,
                                    bool lastRound, const tuner::DecisionOptions& options) {
  ModuleComparison c;
  const size_t n = std::min(kiln.ms.size(), module.ms.size());
  tuner::Timing ratios;
  int moduleWins = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!(kiln.ms[i] > 0) || !(module.ms[i] > 0)) continue;
    ratios.ms.push_back(kiln.ms[i] / module.ms[i]);
    moduleWins += module.ms[i] < kiln.ms[i] ? 1 : 0;
  }
  if (ratios.ms.empty()) {
    c.reason = "no measurement";
    return c;
  }
  c.kilnMs = kiln.median();
  c.moduleMs = module.median();
  c.reps = static_cast<int>(ratios.ms.size());
  const double ratio = ratios.median();  // > 1: the module is faster
  const int turns = c.reps;
  const int needWins = signTestWins(turns, 0.01);
  const std::string tally = fmt::format("median ratio {:.3f}x, the module faster in {} of {} turns",
                                        ratio, moduleWins, turns);
  c.decided = true;
  if (ratio <= 1.0 + options.minGain) {
    c.reason = fmt::format("{}: within {:.0f}%, a tie keeps kiln", tally, options.minGain * 100);
  } else if (moduleWins >= needWins) {
    c.moduleFaster = true;
    c.reason = fmt::format("{} (>= {} needed)", tally, needWins);
  } else if (lastRound) {
    c.moduleFaster = true;
    c.reason = fmt::format(
        "{} (fewer than the {} that rule out chance, but the last round's "
        "median decides)",
        tally, needWins);
  } else {
    c.decided = false;
    c.reason = fmt::format("inconclusive: {} (< {} needed)", tally, needWins);
  }
  return c;
}

std::pair<tuner::Timing, tuner::Timing> timeInTurns(const std::function<void()>& a,
                                                    const std::function<void()>& b,
                                                    at::Device device) {
  c10::cuda::CUDAGuard guard(device);
  c10::cuda::CUDAStreamGuard onSide(c10::cuda::getStreamFromPool(false, device.index()));
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device.index());
  auto timeOne = [&](const std::function<void()>& run) {
    at::cuda::CUDAEvent start(cudaEventDefault), end(cudaEventDefault);
    start.record(stream);
    run();
    end.record(stream);
    end.synchronize();
    return static_cast<double>(start.elapsed_time(end));
  };
  // Warm-up: whatever either side sets up lazily per stream.
  for (int i = 0; i < 2; ++i) {
    timeOne(a);
    timeOne(b);
  }
  std::pair<tuner::Timing, tuner::Timing> t;
  double spent = 0;
  for (int r = 0; r < kMaxReps && (r < 3 || spent < kBudgetMs); ++r) {
    // Alternating, so drift (clocks, other work on the device) falls on both.
    const double ma = timeOne(a);
    const double mb = timeOne(b);
    t.first.ms.push_back(ma);
    t.second.ms.push_back(mb);
    spent += ma + mb;
  }
  return t;
}

ModuleComparison compareAgainstModule(const std::function<void()>& runPlan,
                                      const std::function<void()>& runModule, at::Device device) {
  tuner::Timing kiln, module;
  ModuleComparison c;
  for (int round = 1; round <= kMaxRounds; ++round) {
    auto [k, m] = timeInTurns(runPlan, runModule, device);
    kiln.ms.insert(kiln.ms.end(), k.ms.begin(), k.ms.end());
    module.ms.insert(module.ms.end(), m.ms.begin(), m.ms.end());
    c = judgeAgainstModule(kiln, module, /*lastRound=*/round == kMaxRounds);
    if (c.decided) {
      if (round > 1) c.reason += fmt::format(" ({} rounds)", round);
      return c;
    }
  }
  return c;
}

namespace {

std::string comparisonSignature(const ir::Graph& graph) {
  // v2: the paired judgement; decisions of the first rule (which could keep a plan far slower
  // than the module) are not reused.
  return "plan against the module v2\n" + ir::print(graph);
}

}  // namespace

std::string encodeComparison(const ModuleComparison& c) {
  return nlohmann::json{{"moduleFaster", c.moduleFaster},
                        {"kilnMs", c.kilnMs},
                        {"moduleMs", c.moduleMs},
                        {"reps", c.reps},
                        {"reason", c.reason}}
      .dump();
}

std::optional<ModuleComparison> decodeComparison(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  try {
    ModuleComparison c;
    c.decided = true;
    c.moduleFaster = j.at("moduleFaster").get<bool>();
    c.kilnMs = j.at("kilnMs").get<double>();
    c.moduleMs = j.at("moduleMs").get<double>();
    c.reps = j.at("reps").get<int>();
    c.reason = j.at("reason").get<std::string>();
    if (!(c.kilnMs > 0) || !(c.moduleMs > 0) || c.reps <= 0) return std::nullopt;
    return c;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

bool storeComparison(cache::KernelCache& records, const ir::Graph& graph, std::string_view bucket,
                     const std::string& arch, const ModuleComparison& c) {
  if (!c.decided) return false;
  return records.putTuningRecord(comparisonSignature(graph), bucket, arch, codegen::kCodegenVersion,
                                 encodeComparison(c));
}

std::optional<ModuleComparison> storedComparison(cache::KernelCache& records,
                                                 const ir::Graph& graph, std::string_view bucket,
                                                 const std::string& arch) {
  const std::optional<std::string> text =
      records.getTuningRecord(comparisonSignature(graph), bucket, arch, codegen::kCodegenVersion);
  if (!text) return std::nullopt;
  std::optional<ModuleComparison> c = decodeComparison(*text);
  if (c) c->reason = "from the tuning records: " + c->reason;
  return c;
}

}  // namespace kiln::jit

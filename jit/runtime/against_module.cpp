#include "jit/runtime/against_module.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>

namespace kiln::jit {

std::string ModuleComparison::line() const {
  if (!decided) return fmt::format("not compared: {}", reason);
  return fmt::format("kiln {:.3f} ms, module {:.3f} ms (medians of {}): {} ({})", kilnMs, moduleMs,
                     reps, moduleFaster ? "the module runs" : "kiln runs", reason);
}

ModuleComparison judgeAgainstModule(const tuner::Timing& kiln, const tuner::Timing& module,
                                    const tuner::DecisionOptions& options) {
  ModuleComparison c;
  if (kiln.ms.empty() || module.ms.empty()) {
    c.reason = "no measurement";
    return c;
  }
  c.decided = true;
  c.kilnMs = kiln.median();
  c.moduleMs = module.median();
  c.reps = static_cast<int>(std::min(kiln.ms.size(), module.ms.size()));
  // The module is the candidate replacing kiln: it must win beyond the noise.
  const tuner::Decision d = tuner::decide(kiln, module, /*candidateCorrect=*/true, options);
  c.moduleFaster = d.replace;
  c.reason = fmt::format("module {}", d.reason);
  return c;
}

ModuleComparison compareAgainstModule(const std::function<void()>& runPlan,
                                      const std::function<void()>& runModule, at::Device device) {
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
    timeOne(runPlan);
    timeOne(runModule);
  }
  tuner::Timing kiln, module;
  double spent = 0;
  for (int r = 0; r < kMaxReps && (r < 3 || spent < kBudgetMs); ++r) {
    // Alternating, so drift (clocks, other work on the device) falls on both.
    const double k = timeOne(runPlan);
    const double m = timeOne(runModule);
    kiln.ms.push_back(k);
    module.ms.push_back(m);
    spent += k + m;
  }
  return judgeAgainstModule(kiln, module);
}

}  // namespace kiln::jit

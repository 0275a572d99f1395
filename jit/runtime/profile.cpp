#include "jit/runtime/profile.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "jit/runtime/plan.h"
#include "src/support/error.h"

namespace kiln::jit {

namespace {

// About 100 us of GPU time (at ~2 GHz) queued before each profiled call.
constexpr int64_t kLeadCycles = 200000;

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::optional<at::Device> cudaDeviceOf(const std::vector<at::Tensor>& inputs) {
  for (const at::Tensor& t : inputs)
    if (t.defined() && t.is_cuda()) return t.device();
  return std::nullopt;
}

}  // namespace

PlanProfile profilePlan(const Plan& plan, const std::vector<at::Tensor>& inputs, int reps) {
  KILN_USER_CHECK(reps >= 1, "profile: reps must be at least 1, got {}", reps);
  const size_t numSteps = plan.partition().steps.size();
  // times[s][r]: step s in repetition r; totals[r]: the whole call.
  std::vector<std::vector<double>> times(numSteps);
  std::vector<double> totals;
  PlanProfile profile;
  profile.reps = reps;
  plan.run(inputs);  // warm-up: allocator, cuDNN/cuBLAS heuristics, lazy loads
  std::optional<at::Device> device = cudaDeviceOf(inputs);
  profile.device = device.has_value();
  if (device) {
    c10::cuda::CUDAGuard guard(*device);
    at::cuda::CUDAStream stream = at::cuda::getCurrentCUDAStream(device->index());
    for (int r = 0; r < reps; ++r) {
      std::vector<at::cuda::CUDAEvent> events;
      events.reserve(numSteps + 1);
      for (size_t i = 0; i <= numSteps; ++i) events.emplace_back(cudaEventDefault);
      // Keep the GPU busy while the host prepares the call, so that step 0's time is the
      // device's and not the host's latency to its first launch.
      at::cuda::sleep(kLeadCycles);
      events[0].record(stream);
      std::function<void(size_t)> hook = [&](size_t s) { events[s + 1].record(stream); };
      plan.run(inputs, &hook);
      events[numSteps].synchronize();
      for (size_t s = 0; s < numSteps; ++s)
        times[s].push_back(static_cast<double>(events[s].elapsed_time(events[s + 1])));
      totals.push_back(static_cast<double>(events[0].elapsed_time(events[numSteps])));
    }
  } else {
    using Clock = std::chrono::steady_clock;
    for (int r = 0; r < reps; ++r) {
      std::vector<Clock::time_point> marks(numSteps + 1);
      marks[0] = Clock::now();
      std::function<void(size_t)> hook = [&](size_t s) { marks[s + 1] = Clock::now(); };
      plan.run(inputs, &hook);
      for (size_t s = 0; s < numSteps; ++s)
        times[s].push_back(
            std::chrono::duration<double, std::milli>(marks[s + 1] - marks[s]).count());
      totals.push_back(
          std::chrono::duration<double, std::milli>(marks[numSteps] - marks[0]).count());
    }
  }
  for (size_t s = 0; s < numSteps; ++s)
    profile.steps.push_back({s, plan.stepLabel(s), median(times[s])});
  profile.totalMs = median(totals);
  return profile;
}

namespace {

// Each step's share of the sum of the step medians, in percent (0 when the sum is 0).
std::vector<double> sharesOf(const std::vector<StepTime>& steps) {
  double sum = 0;
  for (const StepTime& s : steps) sum += s.ms;
  std::vector<double> shares;
  for (const StepTime& s : steps) shares.push_back(sum > 0 ? 100.0 * s.ms / sum : 0.0);
  return shares;
}

const char* clockName(bool device) {
  return device ? "CUDA events" : "host clock";
}

}  // namespace

std::string PlanProfile::toString() const {
  std::string out = fmt::format("profile: {} per call (median of {}, {})\n",
                                fmt::format("{:.4f} ms", totalMs), reps, clockName(device));
  const std::vector<double> shares = sharesOf(steps);
  for (size_t i = 0; i < steps.size(); ++i) {
    const StepTime& s = steps[i];
    out +=
        fmt::format("  step {:>3}  {:>9.4f} ms  {:>5.1f}%  {}\n", s.step, s.ms, shares[i], s.label);
  }
  return out;
}

std::string PlanProfile::toJson() const {
  using Json = nlohmann::ordered_json;
  const std::vector<double> shares = sharesOf(steps);
  Json list = Json::array();
  for (size_t i = 0; i < steps.size(); ++i)
    list.push_back({{"step", steps[i].step},
                    {"label", steps[i].label},
                    {"ms", steps[i].ms},
                    {"sharePercent", shares[i]}});
  Json out = {{"totalMs", totalMs},
              {"reps", reps},
              {"device", device},
              {"clock", clockName(device)},
              {"steps", std::move(list)}};
  return out.dump(2, ' ', false, Json::error_handler_t::replace);
}

}  // namespace kiln::jit

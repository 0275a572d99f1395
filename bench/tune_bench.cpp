// kiln-tune-bench: issue 7's benchmark, on one GPU. For each workload:
//  1. steady state with the default (untuned) kernels: a session with tuning off;
//  2. a fresh session with KILN_TUNE=background over an empty cache directory, serving a stream
//     of requests (closed loop: each request is forward() + stream sync, timed on the host) while
//     the plan reaches the threshold and its tuning job runs, then 500 requests after the swap;
//  3. steady state after tuning, alternating with the untuned module's (same method as 1).
// Reported: before/after medians (CUDA events, 10 calls a sample), effective bandwidth after
// tuning against the copy bandwidth measured in the same run, the tuning job's wall time,
// variants tried and kernels replaced, and request latency p50/p99 during tuning and after.
// fp16 (the memory-bound workloads and the encoder block); --fp32 adds the memory-bound ones in
// fp32. Output: markdown on stdout. Usage: kiln-tune-bench [--quick] [--fp32] [--threshold N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <fmt/format.h>

#include <kiln/kiln.h>

#include "bench/timing.h"
#include "bench/workloads.h"
#include "src/support/version_flag.h"
#include "tests/support/temp_dir.h"

namespace {

using Clock = std::chrono::steady_clock;
using kiln::bench::medianMs;

struct Case {
  std::string name;
  torch::ScalarType dtype;
  int64_t n;
  torch::jit::Module module;
  kiln::jit::Options options;                      // session set per run
  std::vector<std::vector<torch::IValue>> inputs;  // rotated
  double bytes = 0;  // read + written once per call (0: not memory-bound)
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

double steadyMs(const kiln::jit::OptimizedModule& fast, const Case& c) {
  const size_t sets = c.inputs.size();
  for (int i = 0; i < 5; ++i) fast.forward(c.inputs[static_cast<size_t>(i) % sets]);
  return medianMs([&](int i) { fast.forward(c.inputs[static_cast<size_t>(i) % sets]); }, 20, 10);
}

std::vector<Case> cases(bool quick, bool fp32) {
  std::vector<Case> out;
  const int64_t n = quick ? 4096 : 32768;
  std::vector<torch::ScalarType> dtypes = {torch::kHalf};
  if (fp32) dtypes.push_back(torch::kFloat);
  for (const kiln::bench::Workload& w : kiln::bench::memoryBoundWorkloads())
    for (auto dt : dtypes) {
      auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dt);
      Case c{w.name, dt, n, w.module(opts), {}, {}, w.bytesPerCall(n, dt)};
      for (const auto& set : w.rotatedInputs(n, opts)) c.inputs.emplace_back(set.begin(), set.end());
      out.push_back(std::move(c));
    }
  auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kHalf);
  Case enc{"encoder block, hidden 768, 12 heads, seq 128",
           torch::kHalf,
           n,
           torch::jit::load(std::string(KILN_MODELS_DIR) + "/encoder_block.pt"),
           {},
           {},
           0};
  enc.module.eval();
  enc.module.to(torch::kCUDA, torch::kHalf);
  enc.options.inputNames = {"x", "mask"};
  enc.options.dynamicDims = {{"x", 0, "batch"}, {"mask", 0, "batch"}};
  for (int i = 0; i < 2; ++i)
    enc.inputs.push_back(
        {torch::randn({n / 128, 128, 768}, opts), torch::zeros({n / 128, 1, 128, 128}, opts)});
  out.push_back(std::move(enc));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "kiln-tune-bench: needs a GPU\n");
    return 1;
  }
  bool quick = false, fp32 = false;
  int threshold = 100;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--fp32") {
      fp32 = true;
    } else if (a == "--threshold" && i + 1 < argc) {
      threshold = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: kiln-tune-bench [--quick] [--fp32] [--threshold N]\n");
      return 2;
    }
  }
  torch::NoGradGuard ng;
  kiln::Options untunedOptions;
  untunedOptions.tune = kiln::TuneMode::kOff;
  untunedOptions.diskCache = false;
  kiln::Session untuned(untunedOptions);
  std::printf("device: %s\n", untuned.cudaEnvironment().describe().c_str());
  const double copyGBs = kiln::bench::copyBandwidthGBs();
  std::printf("device-to-device copy: %.0f GB/s; tuning threshold %d calls\n\n", copyGBs,
              threshold);
  std::printf(
      "| workload | dtype | n | untuned ms | tuned ms | gain | tuned %% of copy | tuning s | "
      "variants | replaced | p50 during | p99 during | p50 after | p99 after | p99 during / p50 "
      "after |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (Case& c : cases(quick, fp32)) {
    kiln::jit::Options o = c.options;
    o.session = &untuned;
    const kiln::jit::OptimizedModule untunedModule = kiln::jit::optimize(c.module, o);
    steadyMs(untunedModule, c);

    kiln::testing::ScratchDir dir("kiln-tune-bench");
    kiln::Options tuneOptions;
    tuneOptions.tune = kiln::TuneMode::kBackground;
    tuneOptions.tuneThreshold = threshold;
    tuneOptions.cacheDir = dir.path();
    kiln::Session session(tuneOptions);
    o.session = &session;
    auto fast = kiln::jit::optimize(c.module, o);
    fast.forward(c.inputs[0]);
    session.waitForBackground();
    const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
    std::vector<double> during, after;
    Clock::time_point tuneStart{}, tuneEnd{};
    const auto deadline = Clock::now() + std::chrono::seconds(300);
    for (size_t i = 1; Clock::now() < deadline; ++i) {
      const auto t0 = Clock::now();
      fast.forward(c.inputs[i % c.inputs.size()]);
      stream.synchronize();
      const auto t1 = Clock::now();
      const double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
      const bool done = fast.stats().tuningJobs > 0;
      if (i + 1 == static_cast<size_t>(threshold)) tuneStart = t1;  // the next call starts the job
      if (i + 1 > static_cast<size_t>(threshold) && !done) during.push_back(ms);
      if (done) {
        if (tuneEnd == Clock::time_point{}) tuneEnd = t1;
        after.push_back(ms);
        if (after.size() >= 500) break;
      }
    }
    const auto st = fast.stats();
    // Untuned and tuned alternately, after the stream: clocks and temperature drift over a
    // minute of traffic, and both sides must see the same card.
    std::vector<double> untunedMs, tunedMs;
    for (int r = 0; r < 3; ++r) {
      untunedMs.push_back(steadyMs(untunedModule, c));
      tunedMs.push_back(steadyMs(fast, c));
    }
    const double before = percentile(untunedMs, 0.5), tuned = percentile(tunedMs, 0.5);
    const double tuneSeconds = tuneEnd == Clock::time_point{}
                                   ? -1
                                   : std::chrono::duration<double>(tuneEnd - tuneStart).count();
    const std::string pct =
        c.bytes > 0 ? fmt::format("{:.0f}%", 100.0 * c.bytes / (tuned * 1e-3) / 1e9 / copyGBs)
                    : "-";
    const double p50After = percentile(after, 0.5);
    std::printf(
        "| %s | %s | %lld | %.4f | %.4f | %.2fx | %s | %.1f | %llu | %llu | %.3f | %.3f | "
        "%.3f | %.3f | %.2fx |\n",
        c.name.c_str(), c.dtype == torch::kHalf ? "fp16" : "fp32", static_cast<long long>(c.n),
        before, tuned, before / tuned, pct.c_str(), tuneSeconds,
        static_cast<unsigned long long>(st.variantsTried),
        static_cast<unsigned long long>(st.kernelsTuned), percentile(during, 0.5),
        percentile(during, 0.99), p50After, percentile(after, 0.99),
        p50After > 0 ? percentile(during, 0.99) / p50After : 0.0);
    std::fflush(stdout);
    std::fprintf(stderr, "== %s %s: %zu requests during tuning\n%s\n", c.name.c_str(),
                 c.dtype == torch::kHalf ? "fp16" : "fp32", during.size(), fast.explain().c_str());
  }
  return 0;
}

// kiln-bench: memory-bound fused workloads, kiln vs eager LibTorch, on one GPU, in one run.
// Steady-state medians with CUDA events after warm-up (10 back-to-back calls a sample, eager and
// kiln sampled in turns), inputs rotated; effective bandwidth counts bytes read + written once
// against the device-to-device copy bandwidth measured in the same run; host overhead per call
// (n=128) measured separately as wall time per call of a long loop. Then the GEMM/conv-bound models
// (MLP, encoder block, CNN block) with TFLOP/s. Output: markdown tables on stdout (bench/run_gpu.sh
// puts them into RESULTS.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <kiln/kiln.h>

#include "bench/timing.h"
#include "bench/workloads.h"
#include "src/support/version_flag.h"

namespace {

using Clock = std::chrono::steady_clock;

using kiln::bench::copyBandwidthGBs;

const char* dtypeName(torch::ScalarType t) {
  return t == torch::kHalf ? "fp16" : "fp32";
}

// The models' table. `profile`: after the table, each model's per-step kiln profile at its largest
// size. `filter`: only models whose name contains it.
void benchModels(kiln::Session& session, bool quick, bool profile, const std::string& filter) {
  std::string profiles;
  std::printf("\n| model | dtype | n | eager ms | kiln ms | speedup | kiln TFLOP/s | max err |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const kiln::bench::ModelWorkload& w : kiln::bench::modelWorkloads(quick))
    for (auto dt : {torch::kHalf, torch::kFloat})
      if (w.name.find(filter) != std::string::npos)
        for (int64_t n : w.sizes) {
          auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/" + w.file);
          m.eval();
          m.to(torch::kCUDA, dt);
          kiln::jit::Options o;
          o.inputNames = w.inputNames;
          for (const std::string& input : w.inputNames)
            o.dynamicDims.push_back({input, 0, "batch"});
          o.session = &session;
          auto fast = kiln::jit::optimize(m, o);
          auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dt);
          std::vector<std::vector<torch::IValue>> inputs;
          for (int i = 0; i < 2; ++i) {
            std::vector<torch::Tensor> in = w.inputs(n, opts);
            inputs.emplace_back(in.begin(), in.end());
          }
          auto want = m.forward(inputs[0]).toTensor();
          auto got = fast.forward(inputs[0]).toTensor();
          double err = (got.to(torch::kFloat) - want.to(torch::kFloat)).abs().max().item<double>();
          for (int i = 0; i < 3; ++i) {
            m.forward(inputs[static_cast<size_t>(i % 2)]);
            fast.forward(inputs[static_cast<size_t>(i % 2)]);
          }
          const int reps = 10;
          const std::vector<double> ms = kiln::bench::medianMsInTurns(
              {[&](int i) { m.forward(inputs[static_cast<size_t>(i % 2)]); },
               [&](int i) { fast.forward(inputs[static_cast<size_t>(i % 2)]); }},
              reps, 5);
          const double eagerMs = ms[0], kilnMs = ms[1];
          std::printf("| %s | %s | %lld | %.4f | %.4f | %.2fx | %.1f | %.2g |%s\n", w.name.c_str(),
                      dtypeName(dt), static_cast<long long>(n), eagerMs, kilnMs, eagerMs / kilnMs,
                      w.flops(n) / (kilnMs * 1e-3) / 1e12, err,
                      fast.stats().groupFallbacks > 0 ? " (some groups ran eagerly)" : "");
          std::fflush(stdout);
          if (profile && n == w.sizes.back())
            profiles += "\n" + w.name + ", " + dtypeName(dt) + ", n=" + std::to_string(n) +
                        ":\n```\n" + fast.profile(inputs[0], 20).toString() + "```\n";
        }
  if (!profiles.empty())
    std::printf("\n### Where kiln's time goes (`kiln-bench --profile`)\n%s", profiles.c_str());
}

}  // namespace

// kiln-bench [--quick] [--models | --memory-bound] [--profile] [--filter TEXT]: --quick drops
// n=32768, --models skips the memory-bound workloads and --memory-bound the models, --profile adds
// per-step profiles of the models, --filter runs only workloads whose name contains TEXT.
int main(int argc, char** argv) {
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  bool quick = false, modelsOnly = false, memoryOnly = false, profile = false;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--models")
      modelsOnly = true;
    else if (a == "--memory-bound")
      memoryOnly = true;
    else if (a == "--profile")
      profile = true;
    else if (a == "--filter" && i + 1 < argc)
      filter = argv[++i];
    else {
      std::fprintf(
          stderr,
          "kiln-bench: unknown argument %s (use --quick, --models, --memory-bound, --profile, "
          "--filter TEXT)\n",
          a.c_str());
      return 2;
    }
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "kiln-bench: needs a GPU\n");
    return 1;
  }
  torch::NoGradGuard ng;
  kiln::Options kopt;
  kopt.tune = kiln::TuneMode::kOff;
  kiln::Session session(kopt);
  std::printf("device: %s\n", session.cudaEnvironment().describe().c_str());
  double copyGBs = copyBandwidthGBs();
  std::printf("device-to-device copy: %.0f GB/s\n\n", copyGBs);

  std::vector<kiln::bench::Workload> workloads = kiln::bench::memoryBoundWorkloads();
  if (modelsOnly) workloads.clear();
  std::erase_if(workloads, [&](const kiln::bench::Workload& w) {
    return w.name.find(filter) == std::string::npos;
  });
  std::vector<int64_t> sizes = {128, 4096, 32768};
  if (quick) sizes = {128, 4096};

  std::printf("| workload | dtype | n | eager ms | kiln ms | speedup | kiln GB/s | %% of copy | "
              "max err | host us/call (eager / kiln) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const kiln::bench::Workload& w : workloads)
    for (auto dt : {torch::kHalf, torch::kFloat})
      for (int64_t n : sizes) {
        auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dt);
        torch::jit::Module m = w.module(opts);
        kiln::jit::Options o;
        o.session = &session;
        auto fast = kiln::jit::optimize(m, o);
        std::vector<std::vector<torch::IValue>> inputs;
        for (const auto& set : w.rotatedInputs(n, opts)) inputs.emplace_back(set.begin(), set.end());
        const int sets = static_cast<int>(inputs.size());
        auto want = m.forward(inputs[0]).toTensor();
        auto got = fast.forward(inputs[0]).toTensor();
        double err = (got.to(torch::kFloat) - want.to(torch::kFloat)).abs().max().item<double>();
        for (int i = 0; i < 5; ++i) {
          m.forward(inputs[static_cast<size_t>(i % sets)]);
          fast.forward(inputs[static_cast<size_t>(i % sets)]);
        }
        int reps = 20;
        const std::vector<double> ms = kiln::bench::medianMsInTurns(
            {[&](int i) { m.forward(inputs[static_cast<size_t>(i % sets)]); },
             [&](int i) { fast.forward(inputs[static_cast<size_t>(i % sets)]); }},
            reps, 10);
        const double eagerMs = ms[0], kilnMs = ms[1];
        double gbs = w.bytesPerCall(n, dt) / (kilnMs * 1e-3) / 1e9;
        std::string host = "";
        if (n == 128) {
          auto hostUs = [&](const std::function<void()>& f) {
            c10::cuda::device_synchronize();
            auto t0 = Clock::now();
            const int calls = 2000;
            for (int i = 0; i < calls; ++i) f();
            double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / calls;
            c10::cuda::device_synchronize();
            return us;
          };
          double he = hostUs([&] { m.forward(inputs[0]); });
          double hk = hostUs([&] { fast.forward(inputs[0]); });
          char buf[64];
          std::snprintf(buf, sizeof(buf), "%.1f / %.1f", he, hk);
          host = buf;
        }
        auto st = fast.stats();
        std::printf("| %s | %s | %lld | %.4f | %.4f | %.2fx | %.0f | %.0f%% | %.2g | %s |%s\n",
                    w.name.c_str(), dtypeName(dt), static_cast<long long>(n), eagerMs, kilnMs,
                    eagerMs / kilnMs, gbs, 100.0 * gbs / copyGBs, err, host.c_str(),
                    st.groupFallbacks > 0 ? " (some groups ran eagerly)" : "");
        std::fflush(stdout);
      }
  if (!memoryOnly) benchModels(session, quick, profile, filter);
  return 0;
}

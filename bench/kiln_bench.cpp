// kiln-bench: memory-bound fused workloads, kiln vs eager LibTorch, on one GPU, in one run.
// Steady-state medians with CUDA events after warm-up, inputs rotated; effective bandwidth counts
// bytes read + written once against the device-to-device copy bandwidth measured in the same run;
// host overhead per call (n=128) measured separately as wall time per call of a long loop.
// Output: one markdown table on stdout (bench/run_gpu.sh puts it into RESULTS.md).
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

namespace {

using Clock = std::chrono::steady_clock;

double medianMs(const std::function<void(int)>& fn, int reps) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    fn(i);
    stop.record();
    stop.synchronize();
    ms.push_back(start.elapsed_time(stop));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double copyBandwidthGBs() {
  auto src = torch::empty({1ll << 29}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kByte));
  auto dst = torch::empty_like(src);
  for (int i = 0; i < 3; ++i) dst.copy_(src);
  double ms = medianMs([&](int) { dst.copy_(src); }, 20);
  return 2.0 * static_cast<double>(src.numel()) / (ms * 1e-3) / 1e9;
}

struct Workload {
  std::string name;
  std::string source;
  int64_t cols;
  int numInputs;                         // x, then extra [n, cols] inputs
  std::vector<std::string> paramNames;   // [cols] params
};

const char* dtypeName(torch::ScalarType t) { return t == torch::kHalf ? "fp16" : "fp32"; }

}  // namespace

int main(int argc, char** argv) {
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

  std::vector<Workload> workloads = {
      {"pointwise gelu(x*w+b)*sigmoid(x)+x", R"(
def forward(self, x):
    return torch.gelu(x * self.w + self.b) * torch.sigmoid(x) + x
)", 4096, 1, {"w", "b"}},
      {"add+layernorm+gelu", R"(
def forward(self, x, r):
    return torch.gelu(torch.layer_norm(x + r, [4096], self.w, self.b, 1e-5))
)", 4096, 2, {"w", "b"}},
      {"masked softmax", R"(
def forward(self, x, m):
    return torch.softmax(x * 0.125 + m, -1)
)", 1024, 2, {}},
  };
  std::vector<int64_t> sizes = {128, 4096, 32768};
  if (argc > 1 && std::string(argv[1]) == "--quick") sizes = {128, 4096};

  std::printf("| workload | dtype | n | eager ms | kiln ms | speedup | kiln GB/s | %% of copy | "
              "max err | host us/call (eager / kiln) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Workload& w : workloads)
    for (auto dt : {torch::kHalf, torch::kFloat})
      for (int64_t n : sizes) {
        auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dt);
        torch::jit::Module m("M");
        for (const auto& p : w.paramNames)
          m.register_parameter(p, torch::randn({w.cols}, opts), false);
        m.define(w.source);
        m.eval();
        kiln::jit::Options o;
        o.session = &session;
        auto fast = kiln::jit::optimize(m, o);
        // Rotate input sets so consecutive calls do not hit in L2 (>= 256 MB in flight).
        int64_t bytesPerSet = n * w.cols * torch::elementSize(dt) * (w.numInputs + 1);
        int sets = static_cast<int>(std::clamp<int64_t>((256ll << 20) / bytesPerSet, 1, 8));
        std::vector<std::vector<torch::IValue>> inputs(static_cast<size_t>(sets));
        for (auto& in : inputs)
          for (int i = 0; i < w.numInputs; ++i) in.push_back(torch::randn({n, w.cols}, opts));
        auto want = m.forward(inputs[0]).toTensor();
        auto got = fast.forward(inputs[0]).toTensor();
        double err = (got.to(torch::kFloat) - want.to(torch::kFloat)).abs().max().item<double>();
        for (int i = 0; i < 5; ++i) {
          m.forward(inputs[static_cast<size_t>(i % sets)]);
          fast.forward(inputs[static_cast<size_t>(i % sets)]);
        }
        int reps = 50;
        double eagerMs = medianMs([&](int i) { m.forward(inputs[static_cast<size_t>(i % sets)]); }, reps);
        double kilnMs = medianMs([&](int i) { fast.forward(inputs[static_cast<size_t>(i % sets)]); }, reps);
        double bytes = static_cast<double>(n * w.cols * torch::elementSize(dt) * (w.numInputs + 1) +
                                           w.paramNames.size() * w.cols * torch::elementSize(dt));
        double gbs = bytes / (kilnMs * 1e-3) / 1e9;
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
  return 0;
}

#pragma once
// GPU timing shared by kiln's benchmarks: CUDA-event medians and the device-to-device copy
// bandwidth every bandwidth figure is compared against (measured in the same run).
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>

#include <ATen/cuda/CUDAEvent.h>
#include <torch/torch.h>

namespace kiln::bench {

// Median over `reps` samples of the time per call of `batch` back-to-back calls between two CUDA
// events. batch > 1 is steady state, where the host queues work ahead of the GPU; with one call
// between events the host's launch latency (the GPU idles meanwhile) is counted too.
inline double sampleMs(const std::function<void(int)>& fn, int i, int batch) {
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  start.record();
  for (int b = 0; b < batch; ++b) fn(i * batch + b);
  stop.record();
  stop.synchronize();
  return start.elapsed_time(stop) / batch;
}

inline double median(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

inline double medianMs(const std::function<void(int)>& fn, int reps, int batch = 1) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) ms.push_back(sampleMs(fn, i, batch));
  return median(ms);
}

// medianMs of several contenders measured in turns: sample i of each runs before sample i + 1 of
// any. Clock and temperature drift during a run (GEMM-bound loops heat the card and lower its
// clocks over seconds) then falls on all contenders alike, not on whichever was timed last.
inline std::vector<double> medianMsInTurns(const std::vector<std::function<void(int)>>& fns,
                                           int reps, int batch = 1) {
  std::vector<std::vector<double>> ms(fns.size());
  for (int i = 0; i < reps; ++i)
    for (size_t f = 0; f < fns.size(); ++f) ms[f].push_back(sampleMs(fns[f], i, batch));
  std::vector<double> out;
  for (const std::vector<double>& m : ms) out.push_back(median(m));
  return out;
}

// Device-to-device copy of 512 MiB: bytes read + written per second, in GB/s.
inline double copyBandwidthGBs() {
  auto src =
      torch::empty({1ll << 29}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kByte));
  auto dst = torch::empty_like(src);
  for (int i = 0; i < 3; ++i) dst.copy_(src);
  double ms = medianMs([&](int) { dst.copy_(src); }, 20);
  return 2.0 * static_cast<double>(src.numel()) / (ms * 1e-3) / 1e9;
}

// Times on the chosen device: CUDA-event medians sampled in turns (medianMsInTurns), or wall-clock
// medians on the CPU (the benchmarks' --device cpu smoke mode).
struct Device {
  bool cuda;
  torch::Device device() const { return cuda ? torch::kCUDA : torch::kCPU; }
  void sync() const {
    if (cuda) c10::cuda::device_synchronize();
  }
  std::vector<double> medianMsInTurns(const std::vector<std::function<void(int)>>& fns, int reps,
                                      int batch) const {
    if (cuda) return kiln::bench::medianMsInTurns(fns, reps, batch);
    std::vector<std::vector<double>> ms(fns.size());
    for (int i = 0; i < reps; ++i)
      for (size_t f = 0; f < fns.size(); ++f) {
        auto t0 = std::chrono::steady_clock::now();
        for (int b = 0; b < batch; ++b) fns[f](i * batch + b);
        ms[f].push_back(wallMsSince(t0) / batch);
      }
    std::vector<double> out;
    for (const std::vector<double>& m : ms) out.push_back(median(m));
    return out;
  }
  // Wall time of `fn`, synchronized before and after.
  double wallMs(const std::function<void()>& fn) const {
    sync();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    sync();
    return wallMsSince(t0);
  }
  static double wallMsSince(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
};

}  // namespace kiln::bench

#pragma once
// GPU timing shared by kiln's benchmarks: CUDA-event medians and the device-to-device copy
// bandwidth every bandwidth figure is compared against (measured in the same run).
#include <algorithm>
#include <functional>
#include <vector>

#include <ATen/cuda/CUDAEvent.h>
#include <torch/torch.h>

namespace kiln::bench {

// Median over `reps` samples of the time per call of `batch` back-to-back calls between two CUDA
// events. batch > 1 is steady state, where the host queues work ahead of the GPU; with one call
// between events the host's launch latency (the GPU idles meanwhile) is counted too.
inline double medianMs(const std::function<void(int)>& fn, int reps, int batch = 1) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
    start.record();
    for (int b = 0; b < batch; ++b) fn(i * batch + b);
    stop.record();
    stop.synchronize();
    ms.push_back(start.elapsed_time(stop) / batch);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
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

}  // namespace kiln::bench

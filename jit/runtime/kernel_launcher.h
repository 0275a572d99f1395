#pragma once
// Loads cubins through the driver table and launches them on LibTorch's current stream.
//
// Note [Contexts]
// LibTorch uses each device's primary context. A thread that calls forward() may never have made
// a CUDA runtime call, so it may have no current context; ensureContext() retains the device's
// primary context once and makes it current when it is not, which is one cheap cuCtxGetCurrent on
// the hot path.
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "codegen/kernel_abi.h"
#include "jit/cuda_api.h"

namespace kiln::jit {

void ensureContext(const cuda::DriverApi& api, int device);

// A compiled kernel, loaded into each device's context on first use there. Thread-safe.
class LoadedKernel {
 public:
  LoadedKernel(const cuda::DriverApi& api, std::string name, std::string cubin);
  ~LoadedKernel();
  LoadedKernel(const LoadedKernel&) = delete;
  LoadedKernel& operator=(const LoadedKernel&) = delete;

  const std::string& name() const { return name_; }
  // The function in `device`'s primary context (loads the module there on first use).
  CUfunction function(int device);
  int multiprocessors(int device);

  // Launches with args on `stream`. dims.gridX == 0 launches nothing.
  void launch(int device, const codegen::LaunchDims& dims, codegen::KilnArgs& args,
              CUstream stream);
  // Launches a kernel whose one parameter `param` points at, with `sharedBytes` of dynamic shared
  // memory (the function's limit is raised past the 48 KiB default on first use). gridX == 0
  // launches nothing.
  void launch(int device, int64_t gridX, int blockX, int sharedBytes, void* param, CUstream stream);

 private:
  struct PerDevice {
    CUmodule module = nullptr;
    CUfunction function = nullptr;
    int multiprocessors = 0;
    std::atomic<int> sharedLimit{48 * 1024};  // dynamic shared memory the function may use
  };
  PerDevice& load(int device);

  const cuda::DriverApi& api_;
  std::string name_;
  std::string cubin_;
  std::mutex mutex_;
  std::unordered_map<int, PerDevice> devices_;  // nodes: their addresses stay
  // A device's entry once its function is loaded: each launch reads it without the mutex.
  std::array<std::atomic<PerDevice*>, cuda::kMaxDevices> loaded_{};
};

}  // namespace kiln::jit

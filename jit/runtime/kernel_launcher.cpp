#include "jit/runtime/kernel_launcher.h"

#include <array>
#include <atomic>

#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {
using cuda::kMaxDevices;
std::array<std::atomic<CUcontext>, kMaxDevices> gPrimary{};
std::mutex gPrimaryMutex;
}  // namespace

void ensureContext(const cuda::DriverApi& api, int device) {
  KILN_CHECK(device >= 0 && device < kMaxDevices, "device ordinal {} out of range", device);
  CUcontext ctx = gPrimary[static_cast<size_t>(device)].load(std::memory_order_acquire);
  if (ctx == nullptr) {
    std::lock_guard<std::mutex> lock(gPrimaryMutex);
    ctx = gPrimary[static_cast<size_t>(device)].load();
    if (ctx == nullptr) {
      CUdevice dev = 0;
      KILN_CU_CHECK(api, cuDeviceGet(&dev, device));
      // Retained for the life of the process, like LibTorch's own use of the primary context.
      KILN_CU_CHECK(api, cuDevicePrimaryCtxRetain(&ctx, dev));
      gPrimary[static_cast<size_t>(device)].store(ctx, std::memory_order_release);
    }
  }
  CUcontext current = nullptr;
  KILN_CU_CHECK(api, cuCtxGetCurrent(&current));
  if (current != ctx) KILN_CU_CHECK(api, cuCtxSetCurrent(ctx));
}

LoadedKernel::LoadedKernel(const cuda::DriverApi& api, std::string name, std::string cubin)
    : api_(api), name_(std::move(name)), cubin_(std::move(cubin)) {}

LoadedKernel::~LoadedKernel() {
  for (auto& [device, d] : devices_) {
    if (d.module == nullptr) continue;
    try {
      ensureContext(api_, device);
      api_.cuModuleUnload(d.module);
    } catch (const std::exception& e) {
      // Unloading at shutdown can fail once the driver is deinitialized; nothing else to do.
      KILN_LOG_DEBUG("kiln: unloading {} failed: {}", name_, e.what());
    }
  }
}

LoadedKernel::PerDevice& LoadedKernel::load(int device) {
  KILN_CHECK(device >= 0 && device < kMaxDevices, "device ordinal {} out of range", device);
  if (PerDevice* ready = loaded_[static_cast<size_t>(device)].load(std::memory_order_acquire))
    return *ready;
  std::lock_guard<std::mutex> lock(mutex_);
  PerDevice& d = devices_[device];
  if (d.function != nullptr) return d;
  ensureContext(api_, device);
  KILN_CU_CHECK(api_, cuModuleLoadData(&d.module, cubin_.data()));
  KILN_CU_CHECK(api_, cuModuleGetFunction(&d.function, d.module, name_.c_str()));
  CUdevice dev = 0;
  KILN_CU_CHECK(api_, cuDeviceGet(&dev, device));
  KILN_CU_CHECK(api_, cuDeviceGetAttribute(&d.multiprocessors,
                                           CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
  loaded_[static_cast<size_t>(device)].store(&d, std::memory_order_release);
  return d;
}

CUfunction LoadedKernel::function(int device) { return load(device).function; }
int LoadedKernel::multiprocessors(int device) { return load(device).multiprocessors; }

void LoadedKernel::launch(int device, const codegen::LaunchDims& dims, codegen::KilnArgs& args,
                          CUstream stream) {
  launch(device, dims.gridX, dims.blockX, 0, &args, stream);
}

void LoadedKernel::launch(int device, int64_t gridX, int blockX, int sharedBytes, void* param,
                          CUstream stream) {
  if (gridX == 0) return;
  KILN_CHECK(gridX <= 0x7fffffff && blockX > 0, "bad launch dims {}x{} for {}", gridX, blockX,
             name_);
  PerDevice& d = load(device);
  ensureContext(api_, device);
  if (sharedBytes > d.sharedLimit) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (sharedBytes > d.sharedLimit) {
      KILN_CU_CHECK(api_,
                    cuFuncSetAttribute(d.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                       sharedBytes));
      d.sharedLimit.store(sharedBytes);
    }
  }
  void* params[] = {param};
  KILN_CU_CHECK(api_, cuLaunchKernel(d.function, static_cast<unsigned>(gridX), 1, 1,
                                     static_cast<unsigned>(blockX), 1, 1,
                                     static_cast<unsigned>(sharedBytes), stream, params, nullptr));
}

}  // namespace kiln::jit

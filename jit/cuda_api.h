#pragma once
// Note [CUDA seam]
// This header (with nvrtc.h) is the only place kiln includes cuda.h. The driver (libcuda.so.1) is
// never linked: it is loaded with dlopen into a table of function pointers, so kiln builds, tests
// and runs (capture, compile-only, eager execution) on machines without a GPU or driver, and says
// so once instead of failing to start. Everything else receives the table by reference.
// Functions are resolved with cuGetProcAddress for the toolkit's CUDA_VERSION, so versioned entry
// points (cuEventElapsedTime_v2, ...) match the headers we compiled against; plain dlsym is the
// fallback for drivers without it.
#include <cuda.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::cuda {

// Device ordinals kiln keeps per-device state for (primary contexts, loaded kernels, prewarms).
inline constexpr int kMaxDevices = 64;

// X-macro of the driver functions kiln uses. Adding one here adds the member and its lookup.
#define KILN_CUDA_DRIVER_FUNCS(X)                                                              \
  X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetAttribute)   \
  X(cuDeviceGetName) X(cuDeviceTotalMem) X(cuDevicePrimaryCtxRetain)                           \
  X(cuDevicePrimaryCtxRelease) X(cuCtxGetCurrent) X(cuCtxSetCurrent) X(cuCtxGetDevice)         \
  X(cuModuleLoadData) X(cuModuleUnload) X(cuModuleGetFunction) X(cuFuncSetAttribute)           \
  X(cuFuncGetAttribute) X(cuLaunchKernel) X(cuStreamCreate) X(cuStreamDestroy)                 \
  X(cuStreamSynchronize) X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord)                   \
  X(cuEventSynchronize) X(cuEventElapsedTime) X(cuGetErrorName) X(cuGetErrorString)            \
  X(cuMemGetInfo) X(cuOccupancyMaxActiveBlocksPerMultiprocessor) X(cuTensorMapEncodeTiled)

struct DriverApi {
#define KILN_CUDA_DECLARE_MEMBER(fn) decltype(&::fn) fn = nullptr;
  KILN_CUDA_DRIVER_FUNCS(KILN_CUDA_DECLARE_MEMBER)
#undef KILN_CUDA_DECLARE_MEMBER
  int driverVersion = 0;  // cuDriverGetVersion, e.g. 13000
  std::string libraryPath;
};

// Result of loading a driver library: either a usable table or the reason there is none.
struct DriverLoad {
  std::shared_ptr<const DriverApi> api;  // null when unavailable
  std::string reason;                    // why unavailable ("libcuda.so.1: cannot open ...")
};

// Loads and initializes (cuInit) the driver at `path`. Never throws for a missing or broken driver:
// the reason comes back instead. Exposed for tests; production code uses driver().
DriverLoad loadDriver(const std::string& path = "libcuda.so.1");

// The process's driver, loaded once on first use (thread-safe). Null when there is none; then
// driverUnavailableReason() says why.
const DriverApi* driver();
const std::string& driverUnavailableReason();

// Throws CudaError naming the call and the CUresult (e.g. CUDA_ERROR_OUT_OF_MEMORY).
void check(const DriverApi& api, CUresult result, const char* call);
#define KILN_CU_CHECK(api, expr) ::kiln::cuda::check((api), (api).expr, #expr)

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int major = 0;
  int minor = 0;
  int multiprocessors = 0;
  size_t totalMemory = 0;
  std::string arch() const;  // "sm_90"
};

// Devices visible through `api`; empty when none.
std::vector<DeviceInfo> listDevices(const DriverApi& api);

// What kiln can do on this machine, for the demo, logs and `kiln-warmup`.
struct CudaEnvironment {
  bool driverLoaded = false;
  std::string reason;  // why no device, when devices is empty
  int driverVersion = 0;
  int nvrtcVersion = 0;  // major*1000 + minor*10, like CUDA_VERSION
  std::vector<DeviceInfo> devices;
  std::string describe() const;
};
CudaEnvironment probeCuda(const DriverApi* api);

// The arch to compile for: an explicit `requested` arch ("sm_90") wins, else device 0's, else
// nullopt (capture-only, eager execution).
std::optional<std::string> targetArch(const std::string& requested, const CudaEnvironment& env);

}  // namespace kiln::cuda

namespace kiln {
// Convenience: device 0 of the process's driver, or nullopt when there is no usable device.
std::optional<cuda::DeviceInfo> deviceInfo();
}  // namespace kiln

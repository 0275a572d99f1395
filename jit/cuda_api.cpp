#include "jit/cuda_api.h"

#include <dlfcn.h>

#include <mutex>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nvrtc.h>
#include "src/support/error.h"

namespace kiln::cuda {
namespace {

#define KILN_CUDA_STR2(x) #x
#define KILN_CUDA_STR(x) KILN_CUDA_STR2(x)

using GetProcAddressFn = CUresult (*)(const char*, void**, int, cuuint64_t,
                                      CUdriverProcAddressQueryResult*);

struct LibraryCloser {
  void operator()(void* handle) const {
    if (handle != nullptr) dlclose(handle);
  }
};

// The table keeps the library open for as long as anyone holds it.
struct LoadedDriver : DriverApi {
  std::unique_ptr<void, LibraryCloser> handle;
};

}  // namespace

DriverLoad loadDriver(const std::string& path) {
  dlerror();
  void* raw = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (raw == nullptr) {
    const char* err = dlerror();
    return {nullptr, fmt::format("no CUDA driver: {}", err != nullptr ? err : path)};
  }
  auto api = std::make_shared<LoadedDriver>();
  api->handle.reset(raw);
  api->libraryPath = path;
  auto getProc = reinterpret_cast<GetProcAddressFn>(dlsym(raw, "cuGetProcAddress_v2"));
  std::vector<std::string> missing;
  // fn's first spelling (#fn) is the base name cuGetProcAddress wants; KILN_CUDA_STR(fn) is the
  // versioned export (cuEventElapsedTime_v2) for plain dlsym.
#define KILN_CUDA_RESOLVE(fn)                                                               \
  {                                                                                         \
    void* p = nullptr;                                                                      \
    CUdriverProcAddressQueryResult status{};                                                \
    if (getProc == nullptr || getProc(#fn, &p, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT,   \
                                      &status) != CUDA_SUCCESS)                             \
      p = nullptr;                                                                          \
    if (p == nullptr) p = dlsym(raw, KILN_CUDA_STR(fn));                                    \
    if (p == nullptr) missing.emplace_back(#fn);                                            \
    api->fn = reinterpret_cast<decltype(api->fn)>(p);                                       \
  }
  KILN_CUDA_DRIVER_FUNCS(KILN_CUDA_RESOLVE)
#undef KILN_CUDA_RESOLVE
  if (!missing.empty())
    return {nullptr, fmt::format("CUDA driver {} lacks {} (driver too old for CUDA {}.{})", path,
                                 fmt::join(missing, ", "), CUDA_VERSION / 1000,
                                 (CUDA_VERSION % 1000) / 10)};
  CUresult rc = api->cuInit(0);
  if (rc != CUDA_SUCCESS) {
    const char* name = nullptr;
    api->cuGetErrorName(rc, &name);
    return {nullptr, fmt::format("cuInit failed: {} ({})", name != nullptr ? name : "?",
                                 static_cast<int>(rc))};
  }
  api->cuDriverGetVersion(&api->driverVersion);
  return {std::move(api), {}};
}

namespace {
struct ProcessDriver {
  std::once_flag once;
  DriverLoad load;
};
ProcessDriver& processDriver() {
  // Leaked on purpose: kernels may be unloaded from static destructors after main returns.
  static auto* d = new ProcessDriver();
  std::call_once(d->once, [] { d->load = loadDriver(); });
  return *d;
}
}  // namespace

const DriverApi* driver() { return processDriver().load.api.get(); }
const std::string& driverUnavailableReason() { return processDriver().load.reason; }

void check(const DriverApi& api, CUresult result, const char* call) {
  if (result == CUDA_SUCCESS) return;
  const char* name = nullptr;
  const char* text = nullptr;
  if (api.cuGetErrorName != nullptr) api.cuGetErrorName(result, &name);
  if (api.cuGetErrorString != nullptr) api.cuGetErrorString(result, &text);
  throw CudaError(call, static_cast<int>(result), name != nullptr ? name : "CUDA_ERROR_UNKNOWN",
                  text != nullptr ? text : "");
}

std::string DeviceInfo::arch() const { return fmt::format("sm_{}{}", major, minor); }

std::vector<DeviceInfo> listDevices(const DriverApi& api) {
  int count = 0;
  if (api.cuDeviceGetCount(&count) != CUDA_SUCCESS) return {};
  std::vector<DeviceInfo> out;
  for (int i = 0; i < count; ++i) {
    CUdevice dev = 0;
    KILN_CU_CHECK(api, cuDeviceGet(&dev, i));
    DeviceInfo info;
    info.ordinal = i;
    char name[256] = {};
    KILN_CU_CHECK(api, cuDeviceGetName(name, sizeof(name), dev));
    info.name = name;
    KILN_CU_CHECK(api, cuDeviceGetAttribute(&info.major,
                                            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
    KILN_CU_CHECK(api, cuDeviceGetAttribute(&info.minor,
                                            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
    KILN_CU_CHECK(api, cuDeviceGetAttribute(&info.multiprocessors,
                                            CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    KILN_CU_CHECK(api, cuDeviceTotalMem(&info.totalMemory, dev));
    out.push_back(std::move(info));
  }
  return out;
}

CudaEnvironment probeCuda(const DriverApi* api) {
  CudaEnvironment env;
  int major = 0, minor = 0;
  if (::nvrtcVersion(&major, &minor) == NVRTC_SUCCESS) env.nvrtcVersion = major * 1000 + minor * 10;
  if (api == nullptr) {
    env.reason = driverUnavailableReason().empty() ? "no CUDA driver" : driverUnavailableReason();
    return env;
  }
  env.driverLoaded = true;
  env.driverVersion = api->driverVersion;
  try {
    env.devices = listDevices(*api);
  } catch (const CudaError& e) {
    env.reason = e.what();
  }
  if (env.devices.empty() && env.reason.empty()) env.reason = "CUDA driver loaded but no device";
  return env;
}

std::string CudaEnvironment::describe() const {
  std::string nvrtc = fmt::format("NVRTC {}.{}", nvrtcVersion / 1000, (nvrtcVersion % 1000) / 10);
  if (devices.empty()) return fmt::format("no GPU ({}); {}", reason, nvrtc);
  const DeviceInfo& d = devices.front();
  return fmt::format("{} ({}, {} SMs, {:.1f} GiB), driver {}.{}, {}", d.name, d.arch(),
                     d.multiprocessors, static_cast<double>(d.totalMemory) / (1ull << 30),
                     driverVersion / 1000, (driverVersion % 1000) / 10, nvrtc);
}

std::optional<std::string> targetArch(const std::string& requested, const CudaEnvironment& env) {
  if (!requested.empty()) return requested;
  if (!env.devices.empty()) return env.devices.front().arch();
  return std::nullopt;
}

}  // namespace kiln::cuda

namespace kiln {
std::optional<cuda::DeviceInfo> deviceInfo() {
  const cuda::DriverApi* api = cuda::driver();
  if (api == nullptr) return std::nullopt;
  auto devices = cuda::listDevices(*api);
  if (devices.empty()) return std::nullopt;
  return devices.front();
}
}  // namespace kiln

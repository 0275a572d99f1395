#include "jit/runtime/session.h"

namespace kiln {

Session::Session(Options options, const EnvLookup& env)
    : options_(applyEnvironment(std::move(options), env)) {
  setLogLevel(options_.logLevel);
}

Session::~Session() = default;

const cuda::CudaEnvironment& Session::cudaEnvironment() const {
  std::call_once(probeOnce_, [this] {
    cudaEnv_ = cuda::probeCuda(cuda::driver());
    if (cudaEnv_.devices.empty())
      logOnce(LogLevel::kWarn, "session.no-gpu",
              fmt::format("kiln: {}; optimized modules will run eagerly", cudaEnv_.describe()));
    else
      KILN_LOG_INFO("kiln: {}", cudaEnv_.describe());
  });
  return cudaEnv_;
}

const cuda::DriverApi* Session::driver() const {
  return cudaEnvironment().devices.empty() ? nullptr : cuda::driver();
}

std::optional<std::string> Session::targetArch() const {
  return cuda::targetArch(options_.arch, cudaEnvironment());
}

cache::KernelCache& Session::kernelCache() const {
  std::call_once(cacheOnce_, [this] {
    cache::KernelCacheOptions o;
    if (!options_.cacheDir.empty()) o.dir = options_.cacheDir;
    o.diskEnabled = options_.diskCache;
    o.diskMaxBytes = options_.cacheMaxBytes;
    cache_ = std::make_unique<cache::KernelCache>(o);
  });
  return *cache_;
}

Session& Session::defaultSession() {
  // Intentionally leaked: a tuner thread may still hold it while static destructors run.
  static Session* session = new Session();
  return *session;
}

}  // namespace kiln

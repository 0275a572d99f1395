#pragma once
// A Session owns kiln's options and, as they land, its caches and tuner thread. optimize() uses
// the default session unless one is passed; tests make their own, so no global state needs
// resetting between tests (Note [Sessions, not singletons] in ../shared/DESIGN.md).
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cache/kernel_cache.h"
#include "jit/cuda_api.h"
#include "src/support/options.h"

namespace kiln {

class Session {
 public:
  // `options` are the caller's; KILN_* variables from `env` override them (parsed once, here).
  explicit Session(Options options = {}, const EnvLookup& env = processEnvironment());
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  const Options& options() const { return options_; }
  // The CUDA driver and devices as seen by this process (probed once, on first use).
  const cuda::CudaEnvironment& cudaEnvironment() const;
  // The driver table, or null when kiln must run eagerly.
  const cuda::DriverApi* driver() const;
  // Arch to compile for (Options::arch, else device 0's), or nullopt: capture only, run eagerly.
  std::optional<std::string> targetArch() const;

  // Compiled kernels and tuning records: memory LRU over the disk store (created on first use;
  // KILN_CACHE_DIR, KILN_DISK_CACHE, KILN_CACHE_MAX_BYTES).
  cache::KernelCache& kernelCache() const;

  // The process-wide session used by optimize() without an explicit one (created on first use,
  // from the environment).
  static Session& defaultSession();

 private:
  Options options_;
  mutable std::once_flag probeOnce_;
  mutable cuda::CudaEnvironment cudaEnv_;
  mutable std::once_flag cacheOnce_;
  mutable std::unique_ptr<cache::KernelCache> cache_;
};

}  // namespace kiln

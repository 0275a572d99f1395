#pragma once
// A Session owns kiln's options and, as they land, its caches and tuner thread. optimize() uses
// the default session unless one is passed; tests make their own, so no global state needs
// resetting between tests (Note [Sessions, not singletons] in ../shared/DESIGN.md).
//
// Note [Background compiles]
// A Session runs background work (specialized kernels for a new shape bucket, generic kernels
// for a new guard family) on its own low-priority TBB arena. A job must not touch anything that
// can die before it: it holds shared_ptrs to what it needs (plan, kernel sets, module counters)
// and checks the module's `alive` flag and backgroundStopping() before each compile. ~Session
// stops taking jobs, skips queued ones and waits for running ones, so no job outlives the caches
// and hooks it uses. The default session is never destroyed: call waitForBackground() before
// exit if a process must not end during a compile.
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cache/kernel_cache.h"
#include "jit/cuda_api.h"
#include "src/support/options.h"

namespace kiln {

// What is about to be compiled by NVRTC (the compile hook's argument).
struct CompileEvent {
  std::string kernel;  // kernel name
  std::string arch;
  std::string bucket;       // jit::bucketLabel of the kernel set: "s0<=8", "generic", ...
  bool background = false;  // on the session's background arena, not in a forward() call
};
using CompileHook = std::function<void(const CompileEvent&)>;

}  // namespace kiln
namespace kiln::jit {
class TuningLab;
}  // namespace kiln::jit
namespace kiln {

// Makes the lab a tuning job measures with (jit/tuner/tuner.h); null: no tuning.
using TuningLabFactory = std::function<std::unique_ptr<jit::TuningLab>()>;

class Session {
 public:
  // `options` are the caller's; KILN_* variables from `env` override them (parsed once, here).
  explicit Session(Options options = {}, const EnvLookup& env = processEnvironment());
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();  // Note [Background compiles]

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

  // Test seam: called (on the compiling thread) right before every NVRTC compile this session
  // runs, foreground or background; it may block. Null removes it. Thread-safe.
  void setCompileHook(CompileHook hook);
  void notifyCompile(const CompileEvent& event) const;
  // Test seam: the lab tuning jobs use (default: the CUDA lab, when there is a driver).
  void setTuningLabFactory(TuningLabFactory factory);
  std::unique_ptr<jit::TuningLab> makeTuningLab() const;

  // Note [Background compiles]. Queues `job` on the background arena; returns at once. Exceptions
  // a job throws are logged, never propagated.
  void runInBackground(std::function<void()> job) const;
  // Blocks until every job queued so far has finished (tests, orderly shutdown).
  void waitForBackground() const;
  bool backgroundStopping() const { return stopping_.load(std::memory_order_relaxed); }
  // Stops taking background jobs, skips queued ones and waits for running ones (~Session, and
  // at process exit: Note [Background jobs at exit] in session.cpp). Later jobs are dropped.
  void stopBackground();
  // Called after each NVRTC compile (Note [Background jobs at exit] in session.cpp).
  static void afterCompile();

  // The process-wide session used by optimize() without an explicit one (created on first use,
  // from the environment).
  static Session& defaultSession();

 private:
  struct Background;
  Options options_;
  mutable std::once_flag probeOnce_;
  mutable cuda::CudaEnvironment cudaEnv_;
  mutable std::once_flag cacheOnce_;
  mutable std::unique_ptr<cache::KernelCache> cache_;
  std::atomic<std::shared_ptr<const CompileHook>> hook_;
  std::atomic<std::shared_ptr<const TuningLabFactory>> labFactory_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<Background> background_;
};

}  // namespace kiln

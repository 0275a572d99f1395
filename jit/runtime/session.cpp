#include "jit/runtime/session.h"

#include "jit/nvrtc.h"
#include "jit/tuner/tuner.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <exception>

#include <tbb/global_control.h>
#include <tbb/info.h>
#include <tbb/task_arena.h>

namespace kiln {

// Jobs are enqueued (fire and forget: a TBB worker runs them even when no thread waits); a
// counter and a condition variable let waitForBackground() and ~Session wait for them.
// The background arena has no slot reserved for an application thread (jobs are enqueued, never
// waited on inside it), so all its concurrency is TBB workers: at most one less than the cores,
// which leaves a core to the threads calling forward() and keeps TBB from warning that it cannot
// supply the workers asked for.
static int backgroundConcurrency(int threads) {
  if (threads > 0) return threads;
  return std::max(1, tbb::info::default_concurrency() - 1);
}

struct Session::Background {
  explicit Background(int threads)
      : arena(backgroundConcurrency(threads), 0, tbb::task_arena::priority::low) {}
  tbb::task_arena arena;
  std::mutex mutex;
  std::condition_variable idle;
  int64_t pending = 0;
};

namespace {

// Note [Background jobs at exit]
// Sessions that are never destroyed (the default one, a test's static one) may still run a
// background compile when the process exits; static destructors (NVRTC's, LibTorch's, ours) would
// then run under it. An atexit handler stops every live session: queued jobs are skipped and
// running ones finish (one NVRTC compile at most) before exit goes on. Handlers run in reverse
// order of registration, and NVRTC registers its own teardown lazily, during its first compile:
// so the handler is registered once when the first session is made and once more after the
// first compile (Session::afterCompile), which puts it ahead of NVRTC's teardown. Other libraries
// make statics lazily too, after both (LibTorch's cuBLAS handle pool at the first GPU matmul, the
// CUDA caching allocator's state): a tuning or compile job still running at exit then used them
// after their destructors, and the process crashed after its last test had passed (the
// intermittent "GEMM crash" of issue 20: GpuGemm.ErfGeluLinearMatchesEager, and the real-model
// CPU tests on a GPU machine, on an H200, 2026-12-05). So the handler is also registered again
// with each queued job, ahead of every static made before that job: at most
// kMaxExitRegistrations times (each costs a few bytes of the exit list), which covers the
// warm-up of any real process; past that the earlier registrations still apply.
// Not covered: exit during the process's first NVRTC compile when that compile runs on a
// background thread. NVRTC registers its teardown during it, after every handler of ours, so the
// teardown runs under the compile. On the CPU host (2026-12-07), a process whose first compile ran
// on another thread and whose main returned 200 ms later crashed in 3 of 11 runs ("LLVM ERROR:
// out of memory" or a segfault); a trivial compile on the main thread first avoided it in 13 of
// 13, but costs about 90 ms of the caller's time, so it is not done. A process whose first
// compile is in the foreground (a cold first call) is covered; fold kernels are compiled ahead
// only in the foreground (Note [Fold kernels compiled ahead] in fold_conv_bn.cpp).
struct LiveSessions {
  std::mutex mutex;
  std::vector<Session*> sessions;
};
LiveSessions& liveSessions();
void stopLiveSessions() {
  std::vector<Session*> sessions;
  {
    std::lock_guard<std::mutex> lock(liveSessions().mutex);
    sessions = liveSessions().sessions;
  }
  for (Session* s : sessions) s->stopBackground();
}
constexpr int kMaxExitRegistrations = 4096;
std::atomic<int> gExitRegistrations{0};

// Note [Background jobs at exit]: registers the handler again, at most kMaxExitRegistrations times.
void registerExitStop() {
  if (gExitRegistrations.fetch_add(1, std::memory_order_relaxed) < kMaxExitRegistrations)
    std::atexit(stopLiveSessions);
}

LiveSessions& liveSessions() {
  static LiveSessions* live = [] {
    // NVRTC recurses deeply on large kernels, and compiles run on TBB workers, whose default
    // stack is small. Leaked: it must stay in force for the life of the process.
    new tbb::global_control(tbb::global_control::thread_stack_size, size_t{64} << 20);
    auto* l = new LiveSessions();  // leaked: used by the atexit handler
    std::atexit(stopLiveSessions);
    return l;
  }();
  return *live;
}

}  // namespace

Session::Session(Options options, const EnvLookup& env)
    : options_(applyEnvironment(std::move(options), env)),
      background_(std::make_unique<Background>(options_.compileThreads)) {
  setLogLevel(options_.logLevel);
  // An arch NVRTC lacks would fail every compile, one kernel at a time (issue 20).
  if (!options_.arch.empty()) jit::checkArch("KILN_ARCH / Options::arch", options_.arch);
  LiveSessions& live = liveSessions();
  std::lock_guard<std::mutex> lock(live.mutex);
  live.sessions.push_back(this);
}

Session::~Session() {
  {
    LiveSessions& live = liveSessions();
    std::lock_guard<std::mutex> lock(live.mutex);
    live.sessions.erase(std::remove(live.sessions.begin(), live.sessions.end(), this),
                        live.sessions.end());
  }
  stopBackground();
}

void Session::afterCompile() {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(stopLiveSessions); });
}

void Session::stopBackground() {
  {
    std::lock_guard<std::mutex> lock(background_->mutex);
    stopping_.store(true);
  }
  waitForBackground();
}

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

void Session::setCompileHook(CompileHook hook) {
  hook_.store(hook ? std::make_shared<const CompileHook>(std::move(hook)) : nullptr);
}

void Session::setTuningLabFactory(TuningLabFactory factory) {
  labFactory_.store(factory ? std::make_shared<const TuningLabFactory>(std::move(factory))
                            : nullptr);
}

std::unique_ptr<jit::TuningLab> Session::makeTuningLab() const {
  if (std::shared_ptr<const TuningLabFactory> f = labFactory_.load()) return (*f)();
  return jit::makeCudaLab(*this);
}

void Session::notifyCompile(const CompileEvent& event) const {
  std::shared_ptr<const CompileHook> hook = hook_.load();
  if (hook) (*hook)(event);
}

void Session::runInBackground(std::function<void()> job) const {
  Background& bg = *background_;
  {
    std::lock_guard<std::mutex> lock(bg.mutex);
    if (stopping_.load()) return;
    ++bg.pending;
  }
  registerExitStop();  // Note [Background jobs at exit]
  // enqueue() wants a const-callable functor; the holder lets the job be released early.
  auto holder = std::make_shared<std::function<void()>>(std::move(job));
  bg.arena.enqueue([this, &bg, holder] {
    if (!stopping_.load()) {
      try {
        (*holder)();
      } catch (const std::exception& e) {
        logOnce(LogLevel::kWarn, std::string("background.") + e.what(),
                fmt::format("kiln: a background compile failed: {}", e.what()));
      } catch (...) {
        logOnce(LogLevel::kWarn, "background.unknown", "kiln: a background compile failed");
      }
    }
    *holder = nullptr;  // release what the job holds before ~Session may return
    std::lock_guard<std::mutex> lock(bg.mutex);
    if (--bg.pending == 0) bg.idle.notify_all();
  });
}

void Session::waitForBackground() const {
  Background& bg = *background_;
  std::unique_lock<std::mutex> lock(bg.mutex);
  bg.idle.wait(lock, [&] { return bg.pending == 0; });
}

Session& Session::defaultSession() {
  // Intentionally leaked: a tuner thread may still hold it while static destructors run.
  static Session* session = new Session();
  return *session;
}

}  // namespace kiln

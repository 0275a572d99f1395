#include "jit/runtime/kernel_build.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include "cache/kernel_cache.h"
#include "codegen/emit_cuda.h"
#include "jit/nvrtc.h"
#include "jit/runtime/buckets.h"
#include "jit/runtime/kernel_launcher.h"
#include "jit/runtime/profiler_range.h"
#include "jit/runtime/session.h"
#include "jit/tuner/records.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {

using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

bool KernelSet::covers(const KernelSet& other) const {
  if (kernels.size() != other.kernels.size()) return false;
  for (size_t k = 0; k < kernels.size(); ++k)
    if (other.kernels[k].state != KernelState::kNoKernel && kernels[k].state != KernelState::kReady)
      return false;
  return true;
}

bool KernelSet::pending() const {
  return std::any_of(kernels.begin(), kernels.end(),
                     [](const KernelStep& k) { return k.state == KernelState::kPending; });
}

// The toolkit include path (-I...) differs between machines but not the binary: the headers it
// names ship with NVRTC, whose version is in the key. Leaving it out lets a cache built by
// kiln-warmup on one machine serve another.
std::vector<std::string> kernelKeyOptions(const std::string& arch) {
  std::vector<std::string> out;
  for (std::string& o : nvrtcOptions(arch))
    if (o.rfind("-I", 0) != 0) out.push_back(std::move(o));
  return out;
}

cache::CacheKey kernelKey(const std::string& source, const std::string& arch) {
  return cache::CacheKey::kernel(source, kernelKeyOptions(arch), arch, nvrtcVersionString(),
                                 codegen::kCodegenVersion);
}

std::string cubinThroughCache(const Session& session, const cache::CacheKey& key,
                              const std::string& source, const std::string& name,
                              const std::string& arch, const std::string& bucket, bool background,
                              bool* compiled) {
  return session.kernelCache().getOrCreate(key, [&] {
    if (compiled != nullptr) *compiled = true;
    session.notifyCompile(CompileEvent{name, arch, bucket, background});
    struct AfterCompile {  // also when NVRTC throws
      ~AfterCompile() { Session::afterCompile(); }
    } after;
    const std::string range = "kiln::compile " + name;  // Note [Profiler ranges]
    const ProfilerRange profilerRange(range.c_str());
    CompiledKernel kernel = compileToCubin(source, name, arch);
    return std::string(kernel.cubin.begin(), kernel.cubin.end());
  });
}

cache::KernelCache* tuningRecords(const Session& session) {
  return session.options().tune == TuneMode::kOff ? nullptr : &session.kernelCache();
}

KernelStep emitVariant(const ir::Graph& graph, const partition::FusionGroup& group,
                       const codegen::ScheduleParams& schedule, const codegen::BucketInfo& bucket,
                       const std::string& arch) {
  KernelStep ks;
  ks.schedule = schedule;
  try {
    codegen::KernelSource src = codegen::emitCuda(graph, group, schedule, bucket);
    ks.name = src.name;
    ks.abi = src.abi;
    ks.launch = src.launch;
    if (arch.empty()) {
      ks.fallbackReason = "no target arch (no GPU, KILN_ARCH unset)";
      return ks;
    }
    // Note [Cache key contents] (cache/cache_key.h): source, options, arch, NVRTC version and
    // codegen version name the binary; a hit skips NVRTC entirely.
    ks.key = kernelKey(src.source, arch);
    ks.source = std::move(src.source);
    ks.state = KernelState::kPending;
  } catch (const Unsupported& e) {
    ks.fallbackReason = fmt::format("codegen: {}", e.what());
  }
  return ks;
}

std::shared_ptr<KernelSet> emitKernels(const ir::Graph& graph,
                                       std::span<const partition::FusionGroup* const> groups,
                                       const codegen::BucketInfo& bucket, const std::string& arch,
                                       cache::KernelCache* records) {
  auto set = std::make_shared<KernelSet>();
  set->bucket = bucketLabel(graph, bucket);
  set->bucketInfo = bucket;
  set->generic = isGeneric(bucket);
  set->kernels.reserve(groups.size());
  for (const partition::FusionGroup* g : groups) {
    const partition::FusionGroup& group = *g;
    codegen::ScheduleParams schedule = codegen::defaultSchedule(group, bucket);
    bool tuned = false;
    if (records != nullptr && !arch.empty()) {
      if (auto rec = tuner::loadRecord(*records, graph, group, set->bucket, arch);
          rec && codegen::validateSchedule(group, rec->schedule, bucket).empty()) {
        schedule = rec->schedule;
        tuned = true;
      }
    }
    set->kernels.push_back(emitVariant(graph, group, schedule, bucket, arch));
    set->kernels.back().tuned = tuned;
  }
  return set;
}

namespace {

// A ready kernel keeps its binary in the kernel cache; the step keeps only the loaded kernel.
void markReady(KernelStep& ks, std::string binary, bool fromCache, const Session& session) {
  ks.state = KernelState::kReady;
  ks.fromCache = fromCache;
  ks.source.clear();
  ks.source.shrink_to_fit();
  const cuda::DriverApi* api = session.driver();
  if (api == nullptr) {
    ks.fallbackReason = "compiled, but no CUDA driver to run it";
    return;
  }
  ks.kernel = std::make_shared<LoadedKernel>(*api, ks.name, std::move(binary));
}

}  // namespace

int loadCachedKernels(KernelSet& set, const std::string& arch, const Session& session) {
  if (arch.empty()) return 0;
  cache::KernelCache& cache = session.kernelCache();
  int loaded = 0;
  for (KernelStep& ks : set.kernels) {
    if (ks.state != KernelState::kPending) continue;
    if (std::optional<std::string> bin = cache.get(ks.key)) {
      markReady(ks, std::move(*bin), /*fromCache=*/true, session);
      ++loaded;
    }
  }
  return loaded;
}

CompileReport compileKernels(KernelSet& set, const std::string& arch, const Session& session,
                             bool background, const std::atomic<bool>* alive) {
  CompileReport report;
  if (arch.empty() || !set.pending()) return report;
  auto t0 = Clock::now();
  std::vector<size_t> todo;
  for (size_t k = 0; k < set.kernels.size(); ++k)
    if (set.kernels[k].state == KernelState::kPending) todo.push_back(k);
  std::vector<std::string> binaries(set.kernels.size());
  std::vector<char> produced(set.kernels.size(), 0), done(set.kernels.size(), 0);
  auto compileOne = [&](size_t k) {
    KernelStep& ks = set.kernels[k];
    if (background && ((alive != nullptr && !alive->load()) || session.backgroundStopping()))
      return;
    auto c0 = Clock::now();
    try {
      bool compiled = false;
      binaries[k] = cubinThroughCache(session, ks.key, ks.source, ks.name, arch, set.bucket,
                                      background, &compiled);
      produced[k] = compiled ? 1 : 0;
      done[k] = 1;
    } catch (const CompileError& e) {
      ks.state = KernelState::kFailed;
      ks.fallbackReason = fmt::format("NVRTC: {}", e.what());
      logOnce(LogLevel::kWarn, "compile." + ks.name,
              fmt::format("kiln: kernel {} failed to compile, its group runs eagerly: {}\n{}",
                          ks.name, e.what(), e.log()));
    }
    ks.compileSeconds = secondsSince(c0);
  };
  if (background) {
    // Already on the session's background arena: nest there.
    tbb::parallel_for(size_t{0}, todo.size(), [&](size_t i) { compileOne(todo[i]); });
  } else {
    int threads = session.options().compileThreads;
    tbb::task_arena arena(threads > 0 ? threads : tbb::task_arena::automatic);
    arena.execute(
        [&] { tbb::parallel_for(size_t{0}, todo.size(), [&](size_t i) { compileOne(todo[i]); }); });
  }
  for (size_t k : todo) {
    if (!done[k]) {
      if (set.kernels[k].state == KernelState::kPending) report.cancelled = true;
      continue;
    }
    ++(produced[k] ? report.compiled : report.cached);
    markReady(set.kernels[k], std::move(binaries[k]), !produced[k], session);
  }
  report.seconds = secondsSince(t0);
  return report;
}

}  // namespace kiln::jit

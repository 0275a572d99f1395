#include "jit/runtime/plan.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <nlohmann/json.hpp>

#include "cache/kernel_cache.h"
#include "codegen/emit_cuda.h"
#include "jit/nvrtc.h"
#include "jit/runtime/fold_conv_bn.h"
#include "jit/runtime/kernel_launcher.h"
#include "jit/runtime/session.h"
#include "jit/tuner/records.h"
#include "src/passes/pipeline.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {

using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

codegen::BucketInfo bucketFor(const std::vector<int64_t>& exampleSymbolValues) {
  // Note [Buckets are deterministic]: the bucket of a value is the next power of two (its upper
  // edge), and the BucketInfo is a function of the bucket alone, never of the example that created
  // it. So the kernel text (and its cache key) for a bucket is the same in every process, which is
  // what lets kiln-warmup fill a cache that a later process hits.
  std::vector<int64_t> edges;
  for (int64_t v : exampleSymbolValues) edges.push_back(bucketEdge(v));
  return bucketInfoForEdges(edges);
}

codegen::BucketInfo bucketInfoForEdges(const std::vector<int64_t>& symbolEdges) {
  codegen::BucketInfo b;
  for (int64_t edge : symbolEdges) {
    if (edge == kOverflowBucket) return genericBucket(symbolEdges.size());
    b.symbolHint.push_back(edge);
    b.symbolMax.push_back(edge);
  }
  return b;
}

codegen::BucketInfo genericBucket(size_t numSymbols) {
  // No hints (heuristics fall back to their defaults) and every bound -1: 64-bit indexing, rows
  // reloaded unless their length is static. Deterministic, so generic kernels are cacheable.
  codegen::BucketInfo b;
  b.symbolMax.assign(numSymbols, -1);
  return b;
}

bool isGeneric(const codegen::BucketInfo& bucket) {
  return bucket.symbolHint.empty() && !bucket.symbolMax.empty() &&
         std::all_of(bucket.symbolMax.begin(), bucket.symbolMax.end(),
                     [](int64_t m) { return m < 0; });
}

std::string bucketLabel(const ir::Graph& graph, const codegen::BucketInfo& bucket) {
  if (graph.numSymbols() == 0) return "static";
  if (isGeneric(bucket)) return "generic";
  std::string out;
  for (int s = 0; s < graph.numSymbols(); ++s) {
    if (!out.empty()) out += ", ";
    const auto& bounds = bucket.symbolMax.empty() ? bucket.symbolHint : bucket.symbolMax;
    int64_t m = s < static_cast<int>(bounds.size()) ? bounds[static_cast<size_t>(s)] : -1;
    out += m < 0 ? fmt::format("{} any", graph.symbolName(s))
                 : fmt::format("{}<={}", graph.symbolName(s), m);
  }
  return out;
}

int64_t bucketEdge(int64_t value) {
  if (value <= 1) return std::max<int64_t>(value, 0);  // 0 and 1 are buckets of their own
  return int64_t{1} << std::bit_width(static_cast<uint64_t>(value - 1));
}

int64_t bucketEdge(int64_t value, std::span<const int64_t> edges) {
  if (value <= 1 || edges.empty()) return bucketEdge(value);
  auto it = std::lower_bound(edges.begin(), edges.end(), value);
  return it == edges.end() ? kOverflowBucket : *it;
}

void validateBucketEdges(std::string_view who, std::span<const int64_t> edges) {
  for (size_t i = 0; i < edges.size(); ++i) {
    KILN_USER_CHECK(edges[i] >= 1, "{}: bucket edges must be >= 1, got {} at position {}", who,
                    edges[i], i);
    KILN_USER_CHECK(i == 0 || edges[i] > edges[i - 1],
                    "{}: bucket edges must be strictly increasing, got {} after {}", who, edges[i],
                    edges[i - 1]);
  }
}

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

std::shared_ptr<const Program> Program::build(CapturedGraph captured, const Session& session) {
  std::shared_ptr<Program> program(new Program());
  Program& p = *program;
  p.captured_ = std::move(captured);
  p.convLayout_ = chooseConvLayout(p.captured_, session.options().convLayout);
  // Needs the param tensors, so here rather than among the passes; adds params.
  p.folds_ =
      foldConvBatchNorm(p.captured_, p.convLayout_.channelsLast ? at::MemoryFormat::ChannelsLast
                                                                : at::MemoryFormat::Contiguous);
  ir::Graph& graph = *p.captured_.graph;
  passes::PassOptions passOptions;
  passOptions.geluGemmEpilogue = kilnGemmTarget(session);
  passes::runDefaultPasses(graph, passOptions);
  if (p.convLayout_.channelsLast) {
    p.convEntryInputs_ = convEntryInputs(graph);
    for (const auto& n : graph.nodes())
      if (n->kind() == ir::OpKind::kConv2d) {
        p.layout_ =
            std::make_shared<const LayoutConverter>(session, toAtenDType(n->output()->dtype()));
        break;
      }
  }
  p.partition_ = partition::partitionGraph(graph);

  // Value table layout and constants/params bound once.
  int maxId = -1;
  for (const auto& n : graph.nodes())
    for (const ir::Value* v : n->outputs()) maxId = std::max(maxId, v->id());
  p.numValues_ = maxId + 1;
  p.constantValues_.resize(static_cast<size_t>(p.numValues_));
  std::map<std::string, at::Tensor> paramsByName;
  for (size_t i = 0; i < p.captured_.params.size() && i < p.captured_.paramNames.size(); ++i)
    paramsByName[p.captured_.paramNames[i]] = p.captured_.params[i];
  for (const auto& n : graph.nodes()) {
    if (n->kind() == ir::OpKind::kConstant) {
      p.constantValues_[static_cast<size_t>(n->output()->id())] =
          makeScalarOperand(n->attrs().getDouble("value"), n->output()->dtype());
    } else if (n->kind() == ir::OpKind::kParam) {
      const std::string& name = n->attrs().getString("name");
      auto it = paramsByName.find(name);
      KILN_CHECK(it != paramsByName.end(), "param '{}' has no captured tensor", name);
      p.constantValues_[static_cast<size_t>(n->output()->id())] = it->second;
    }
  }
  for (const ir::Value* v : graph.outputs()) p.outputIds_.push_back(v->id());

  // Step bookkeeping: which values each step reads and writes, and where each value dies.
  p.runtime_.resize(p.partition_.steps.size());
  std::vector<int> lastUse(static_cast<size_t>(p.numValues_), -1);
  for (size_t s = 0; s < p.partition_.steps.size(); ++s) {
    const partition::Step& step = p.partition_.steps[s];
    StepRuntime& rt = p.runtime_[s];
    if (step.kind == partition::StepKind::kFusion) {
      rt.kernel = static_cast<int>(p.fusionSteps_.size());
      p.fusionSteps_.push_back(s);
      for (const ir::Value* v : step.group.inputs) rt.inputIds.push_back(v->id());
      // Constants inside a group are inlined by codegen but the ATen fallback reads them.
      for (const ir::Node* n : step.group.nodes)
        for (const ir::Value* v : n->inputs())
          if (v->producer()->kind() == ir::OpKind::kConstant) rt.inputIds.push_back(v->id());
      for (const ir::Value* v : step.group.outputs) rt.outputIds.push_back(v->id());
    } else {
      for (const ir::Value* v : step.node->inputs()) rt.inputIds.push_back(v->id());
      for (const ir::Value* v : step.node->outputs()) rt.outputIds.push_back(v->id());
      const ir::Node& node = *step.node;
      if (node.kind() == ir::OpKind::kLinear && node.attrs().has("activation") &&
          node.attrs().getString("activation") == "gelu") {
        codegen::GemmSpec spec;
        spec.dtype = node.output()->dtype();
        spec.activation = codegen::GemmActivation::kGeluErf;
        spec.hasBias = node.inputs().size() == 3;
        for (const StepRuntime& other : p.runtime_)  // one kernel per spec
          if (other.gemm != nullptr && other.gemm->spec().dtype == spec.dtype &&
              other.gemm->spec().hasBias == spec.hasBias)
            rt.gemm = other.gemm;
        if (rt.gemm == nullptr) rt.gemm = std::make_shared<const KilnGemm>(session, spec);
      }
    }
    for (int id : rt.inputIds) lastUse[static_cast<size_t>(id)] = static_cast<int>(s);
  }
  for (int id : p.outputIds_) lastUse[static_cast<size_t>(id)] = -2;  // never released
  for (int id = 0; id < p.numValues_; ++id) {
    int s = lastUse[static_cast<size_t>(id)];
    if (s >= 0 && !p.constantValues_[static_cast<size_t>(id)].defined())
      p.runtime_[static_cast<size_t>(s)].release.push_back(id);
  }

  const CapturedGraph* cap = &p.captured_;
  p.eager_ = [cap](const ir::Node& node, const std::vector<at::Tensor>& in,
                   const std::vector<int64_t>& symbols) {
    return runEagerNode(*cap, node, in, symbols);
  };
  return program;
}

bool Program::foldedParamsStale() const {
  return folds_ != nullptr && folds_->stale();
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
    CompiledKernel kernel = compileToCubin(source, name, arch);
    return std::string(kernel.cubin.begin(), kernel.cubin.end());
  });
}

cache::KernelCache* tuningRecords(const Session& session) {
  return session.options().tune == TuneMode::kOff ? nullptr : &session.kernelCache();
}

KernelStep emitVariant(const Program& program, size_t k, const codegen::ScheduleParams& schedule,
                       const codegen::BucketInfo& bucket, const std::string& arch) {
  KernelStep ks;
  ks.schedule = schedule;
  try {
    codegen::KernelSource src =
        codegen::emitCuda(program.graph(), program.group(k), schedule, bucket);
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

std::shared_ptr<KernelSet> emitKernels(const Program& program, const codegen::BucketInfo& bucket,
                                       const std::string& arch, cache::KernelCache* records) {
  auto set = std::make_shared<KernelSet>();
  set->bucket = bucketLabel(program.graph(), bucket);
  set->bucketInfo = bucket;
  set->generic = isGeneric(bucket);
  set->kernels.reserve(program.numKernels());
  for (size_t k = 0; k < program.numKernels(); ++k) {
    const partition::FusionGroup& group = program.group(k);
    codegen::ScheduleParams schedule = codegen::defaultSchedule(group, bucket);
    bool tuned = false;
    if (records != nullptr && !arch.empty()) {
      if (auto rec = tuner::loadRecord(*records, program.graph(), group, set->bucket, arch);
          rec && codegen::validateSchedule(group, rec->schedule, bucket).empty()) {
        schedule = rec->schedule;
        tuned = true;
      }
    }
    set->kernels.push_back(emitVariant(program, k, schedule, bucket, arch));
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

std::shared_ptr<Plan> Plan::create(std::shared_ptr<const Program> program,
                                   std::shared_ptr<const KernelSet> kernels, PlanBuildInfo info,
                                   const Session& session) {
  KILN_CHECK(program != nullptr && kernels != nullptr, "Plan::create without program or kernels");
  KILN_CHECK(kernels->kernels.size() == program->numKernels(),
             "kernel set of {} kernels for a program of {} groups", kernels->kernels.size(),
             program->numKernels());
  std::shared_ptr<Plan> plan(new Plan());
  plan->program_ = std::move(program);
  plan->kernels_.store(std::move(kernels));
  plan->poisonOutputs_ = session.options().poisonOutputs;
  plan->info_ = info;
  return plan;
}

std::shared_ptr<Plan> Plan::build(CapturedGraph captured, const std::string& arch,
                                  const Session& session) {
  codegen::BucketInfo bucket = bucketFor(captured.exampleSymbolValues);
  std::shared_ptr<const Program> program = Program::build(std::move(captured), session);
  std::shared_ptr<KernelSet> set = emitKernels(*program, bucket, arch, tuningRecords(session));
  PlanBuildInfo info;
  CompileReport r = compileKernels(*set, arch, session, /*background=*/false);
  info.kernelsCompiled = r.compiled;
  info.kernelsCached = r.cached;
  info.compileSeconds = r.seconds;
  for (const KernelStep& ks : set->kernels)
    if (ks.kernel == nullptr) ++info.groupsWithoutKernel;
  return create(std::move(program), std::move(set), info, session);
}

void Plan::swapKernels(std::shared_ptr<const KernelSet> kernels) {
  KILN_CHECK(kernels != nullptr && kernels->kernels.size() == program_->numKernels(),
             "swapKernels: kernel set does not match the program");
  kernels_.store(std::move(kernels));
  swaps_.fetch_add(1, std::memory_order_relaxed);
}

void Plan::runGroupEagerly(const partition::FusionGroup& group, std::vector<at::Tensor>& values,
                           const std::vector<int64_t>& symbols) const {
  // Intermediates of the group live in `values` only until the group ends.
  std::vector<int> produced;
  for (const ir::Node* n : group.nodes) {
    std::vector<at::Tensor> in;
    in.reserve(n->inputs().size());
    for (const ir::Value* v : n->inputs()) in.push_back(values[static_cast<size_t>(v->id())]);
    std::vector<at::Tensor> out = evalNode(*n, in, symbols, program_->eager_);
    for (size_t i = 0; i < out.size(); ++i) {
      int id = n->output(static_cast<int>(i))->id();
      values[static_cast<size_t>(id)] = std::move(out[i]);
      produced.push_back(id);
    }
  }
  for (int id : produced) {
    bool isOutput = false;
    for (const ir::Value* v : group.outputs) isOutput |= v->id() == id;
    if (!isOutput) values[static_cast<size_t>(id)].reset();
  }
}

bool Plan::runKernel(const KernelStep& k, const Program::StepRuntime& rt,
                     std::vector<at::Tensor>& values, const std::vector<int64_t>& symbols) const {
  const codegen::KernelAbi& abi = k.abi;
  const size_t numInputs = static_cast<size_t>(abi.numInputs);
  KILN_CHECK(abi.tensors.size() == numInputs + rt.outputIds.size(), "ABI of {} disagrees with plan",
             k.name);
  std::vector<at::Tensor> tensors;
  tensors.reserve(abi.tensors.size());
  for (size_t i = 0; i < numInputs; ++i) {
    const at::Tensor& t = values[static_cast<size_t>(abi.tensors[i].valueId)];
    if (!t.defined() || !t.is_cuda()) return false;
    tensors.push_back(t);
  }
  const at::Device device = tensors.empty() ? at::Device(at::kCUDA, 0) : tensors.front().device();
  for (const at::Tensor& t : tensors)
    if (t.device() != device) return false;  // eager would raise; let ATen say so
  std::vector<int64_t> domain = codegen::domainSizes(abi, symbols);
  for (size_t i = numInputs; i < abi.tensors.size(); ++i) {
    const codegen::TensorArg& arg = abi.tensors[i];
    tensors.push_back(at::empty(concreteShape(arg.shape, symbols),
                                at::TensorOptions().dtype(toAtenDType(arg.dtype)).device(device)));
    if (poisonOutputs_) {
      at::Tensor& t = tensors.back();
      t.fill_(at::isFloatingType(t.scalar_type()) ? std::numeric_limits<double>::quiet_NaN()
                                                    : (t.scalar_type() == at::kBool ? 1.0 : -77.0));
    }
  }
  std::vector<codegen::TensorView> views;
  views.reserve(tensors.size());
  for (const at::Tensor& t : tensors)
    views.push_back({t.data_ptr(), t.sizes(), t.strides()});
  codegen::KilnArgs args;
  try {
    args = codegen::packArgs(abi, domain, views);
  } catch (const Unsupported& e) {
    logOnce(LogLevel::kInfo, "pack." + k.name,
            fmt::format("kiln: {} cannot serve this call ({}); running its group eagerly", k.name,
                        e.what()));
    return false;
  }
  c10::cuda::CUDAGuard guard(device);
  const int ordinal = device.index();
  codegen::LaunchDims dims = codegen::launchDims(k.launch, abi, args,
                                                 k.kernel->multiprocessors(ordinal));
  CUstream stream = at::cuda::getCurrentCUDAStream(ordinal).stream();
  k.kernel->launch(ordinal, dims, args, stream);
  for (size_t i = numInputs; i < abi.tensors.size(); ++i)
    values[static_cast<size_t>(abi.tensors[i].valueId)] = std::move(tensors[i]);
  stats_.kernelLaunches.fetch_add(1, std::memory_order_relaxed);
  return true;
}

std::vector<at::Tensor> Plan::run(const std::vector<at::Tensor>& inputs,
                                  const std::function<void(size_t step)>* afterStep) const {
  const Program& p = *program_;
  if (p.folds_ != nullptr) p.folds_->refresh();  // Note [Folded params are snapshots]
  const ir::Graph& g = p.graph();
  // One set for the whole call, even if a swap lands meanwhile.
  std::shared_ptr<const KernelSet> set = kernels_.load(std::memory_order_acquire);
  stats_.calls.fetch_add(1, std::memory_order_relaxed);
  std::vector<int64_t> symbols = bindSymbols(g, inputs);
  for (const SizeAssumption& a : p.captured_.assumptions) {
    const int64_t lhs = a.lhs.evaluate(symbols);
    const int64_t rhs = a.rhs.evaluate(symbols);
    if (lhs > rhs)
      throw AssumptionViolated(
          fmt::format("size assumption {} does not hold ({} > {})", a.what, lhs, rhs));
  }
  std::vector<at::Tensor> values = p.constantValues_;
  std::vector<ir::Value*> graphInputs = g.inputs();
  for (size_t i = 0; i < graphInputs.size(); ++i)
    values[static_cast<size_t>(graphInputs[i]->id())] = inputs[i];
  // Note [Channels-last convolutions]: convert what convs read at entry, once.
  bool restoreContiguous = false;
  for (int id : p.convEntryInputs_) {
    at::Tensor& t = values[static_cast<size_t>(id)];
    if (!t.is_cuda() || t.dim() != 4) continue;
    // Eager's conv output follows its input's suggested layout: NCHW unless that was already
    // channels-last (a sliced NCHW input too).
    restoreContiguous =
        restoreContiguous || t.suggest_memory_format() != at::MemoryFormat::ChannelsLast;
    t = p.layout_ ? p.layout_->convert(t, at::MemoryFormat::ChannelsLast)
                  : t.contiguous(at::MemoryFormat::ChannelsLast);
  }

  for (size_t s = 0; s < p.partition_.steps.size(); ++s) {
    const partition::Step& step = p.partition_.steps[s];
    const Program::StepRuntime& rt = p.runtime_[s];
    if (step.kind == partition::StepKind::kFusion) {
      const KernelStep& k = set->kernels[static_cast<size_t>(rt.kernel)];
      if (k.kernel == nullptr || !runKernel(k, rt, values, symbols)) {
        stats_.groupFallbacks.fetch_add(1, std::memory_order_relaxed);
        runGroupEagerly(step.group, values, symbols);
      }
    } else {
      std::vector<at::Tensor> in;
      in.reserve(rt.inputIds.size());
      for (int id : rt.inputIds) in.push_back(values[static_cast<size_t>(id)]);
      std::vector<at::Tensor> out;
      if (rt.gemm != nullptr) {
        if (std::optional<at::Tensor> y =
                rt.gemm->run(in[0], in[1], in.size() > 2 ? &in[2] : nullptr)) {
          out.push_back(std::move(*y));
          stats_.kernelLaunches.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (out.empty()) out = evalNode(*step.node, in, symbols, p.eager_);
      for (size_t i = 0; i < out.size(); ++i)
        values[static_cast<size_t>(rt.outputIds[i])] = std::move(out[i]);
    }
    for (int id : rt.release) values[static_cast<size_t>(id)].reset();
    // The last step's mark comes after the outputs' layout conversion below.
    if (afterStep != nullptr && s + 1 < p.partition_.steps.size()) (*afterStep)(s);
  }
  std::vector<at::Tensor> outputs;
  outputs.reserve(p.outputIds_.size());
  for (size_t i = 0; i < p.outputIds_.size(); ++i) {
    at::Tensor t = values[static_cast<size_t>(p.outputIds_[i])];
    // A graph output that is a constant is a wrapped number inside kiln; hand out a real tensor.
    if (isScalarOperand(t))
      t = at::full({}, t.item(), at::TensorOptions().dtype(toAtenDType(g.outputs()[i]->dtype())));
    else if (restoreContiguous && t.dim() == 4 && !t.is_contiguous() &&
             t.is_contiguous(at::MemoryFormat::ChannelsLast))
      t = p.layout_ ? p.layout_->convert(t, at::MemoryFormat::Contiguous) : t.contiguous();
    outputs.push_back(std::move(t));
  }
  if (afterStep != nullptr && !p.partition_.steps.empty())
    (*afterStep)(p.partition_.steps.size() - 1);
  return outputs;
}

std::string Plan::stepLabel(size_t s) const {
  auto kindLabel = [&]() -> std::string {
    const partition::Step& step = partition().steps.at(s);
    switch (step.kind) {
      case partition::StepKind::kFusion: {
        std::shared_ptr<const KernelSet> set = kernels_.load();
        const KernelStep& k = set->kernels[static_cast<size_t>(program_->runtime_[s].kernel)];
        if (k.kernel != nullptr) return "kernel " + k.name;
        return fmt::format("eager group #{}", step.group.id);
      }
      case partition::StepKind::kLibrary: {
        const std::shared_ptr<const KilnGemm>& gemm = program_->runtime_[s].gemm;
        if (gemm != nullptr && gemm->hasKernel()) return "kernel " + gemm->name();
        return fmt::format("library {}", ir::toString(step.node->kind()));
      }
      case partition::StepKind::kView:
        return fmt::format("view {}", ir::toString(step.node->kind()));
      case partition::StepKind::kEager:
        return fmt::format("eager {}", ir::toString(step.node->kind()));
    }
    return "?";
  };
  // Profiles charge the layout conversions at a channels-last program's boundary (Note
  // [Channels-last convolutions]) to its first and last steps.
  std::string label = kindLabel();
  if (s == 0 && !program_->convEntryInputs_.empty())
    label += fmt::format(" (+ {} input(s) to channels-last)", program_->convEntryInputs_.size());
  if (s + 1 == partition().steps.size() && program_->convLayout_.channelsLast)
    label += " (+ outputs back to NCHW)";
  return label;
}

namespace {

// Why kernel `k` leaves its group to ATen (Note [Fallback is per group]); empty when it launches.
std::string whyEager(const KernelStep& k) {
  if (k.kernel != nullptr) return "";
  return k.state == KernelState::kPending ? "not compiled yet" : k.fallbackReason;
}

std::string_view kernelStateName(KernelState state) {
  switch (state) {
    case KernelState::kNoKernel:
      return "noKernel";
    case KernelState::kPending:
      return "pending";
    case KernelState::kReady:
      return "ready";
    case KernelState::kFailed:
      return "failed";
  }
  return "?";
}

}  // namespace

std::string Plan::explain() const {
  std::shared_ptr<const KernelSet> set = kernels_.load();
  std::string out = partition::explain(graph(), partition());
  out += fmt::format("kernels ({}):\n", set->generic ? "generic" : "bucket " + set->bucket);
  for (const KernelStep& k : set->kernels) {
    if (k.kernel != nullptr)
      out += fmt::format("  {} [{}{}] {} in {:.1f} ms\n", k.name, codegen::toString(k.schedule),
                         k.tuned ? ", tuned" : "", k.fromCache ? "loaded from cache" : "compiled",
                         k.compileSeconds * 1e3);
    else if (k.state == KernelState::kNoKernel)
      out +=
          fmt::format("  {} runs eagerly: {}\n", k.name.empty() ? "<group>" : k.name, whyEager(k));
    else
      out += fmt::format("  {} [{}{}] runs eagerly: {}\n", k.name, codegen::toString(k.schedule),
                         k.tuned ? ", tuned" : "", whyEager(k));
  }
  for (size_t s = 0; s < program_->runtime_.size(); ++s)
    if (const KilnGemm* gemm = program_->runtime_[s].gemm.get())
      out += gemm->hasKernel()
                 ? fmt::format("step {}: kiln GEMM {} (bias + {} in its epilogue)\n", s,
                               gemm->name(), codegen::toString(gemm->spec().activation))
                 : fmt::format("step {}: linear + gelu through ATen: {}\n", s, gemm->reason());
  if (!program_->convLayout().reason.empty())
    out += fmt::format("conv layout: {}\n", program_->convLayout().reason);
  out += fmt::format("capture: {}\n", captured().report());
  return out;
}

std::string Plan::explainJson() const {
  using Json = nlohmann::ordered_json;
  std::shared_ptr<const KernelSet> set = kernels_.load();
  Json out;
  out["partition"] = Json::parse(partition::explainJson(graph(), partition()));
  for (Json& step : out["partition"]["steps"]) {
    const size_t s = step["step"].get<size_t>();
    step["label"] = stepLabel(s);
    if (program_->runtime_[s].kernel >= 0) step["kernel"] = program_->runtime_[s].kernel;
  }
  out["kernelSet"] = {{"generic", set->generic}, {"bucket", set->bucket}};
  Json kernels = Json::array();
  for (size_t i = 0; i < set->kernels.size(); ++i) {
    const KernelStep& k = set->kernels[i];
    kernels.push_back(
        {{"name", k.name},
         {"group", program_->group(i).id},
         {"state", kernelStateName(k.state)},
         {"schedule",
          k.state == KernelState::kNoKernel ? Json(nullptr) : Json(codegen::toString(k.schedule))},
         {"tuned", k.tuned},
         {"runsEagerly", k.kernel == nullptr},
         {"reason", whyEager(k)},
         {"fromCache", k.fromCache},
         {"compileMs", k.compileSeconds * 1e3}});
  }
  out["kernels"] = std::move(kernels);
  Json gemms = Json::array();
  for (size_t s = 0; s < program_->runtime_.size(); ++s)
    if (const KilnGemm* gemm = program_->runtime_[s].gemm.get())
      gemms.push_back({{"step", s},
                       {"kernel", gemm->hasKernel()},
                       {"name", gemm->name()},
                       {"activation", codegen::toString(gemm->spec().activation)},
                       {"reason", gemm->reason()}});
  out["gemms"] = std::move(gemms);
  out["convLayout"] = {{"channelsLast", program_->convLayout().channelsLast},
                       {"reason", program_->convLayout().reason}};
  out["capture"] = captured().report();
  return out.dump(2, ' ', false, Json::error_handler_t::replace);
}

}  // namespace kiln::jit

#include "jit/runtime/plan.h"

#include <bit>
#include <chrono>
#include <limits>
#include <map>
#include <mutex>
#include <unordered_map>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include "cache/kernel_cache.h"
#include "codegen/emit_cuda.h"
#include "jit/nvrtc.h"
#include "jit/runtime/kernel_launcher.h"
#include "jit/runtime/session.h"
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
  codegen::BucketInfo b;
  for (int64_t v : exampleSymbolValues) {
    int64_t edge = bucketEdge(v);
    b.symbolHint.push_back(edge);
    b.symbolMax.push_back(edge);
  }
  return b;
}

int64_t bucketEdge(int64_t value) {
  if (value <= 1) return std::max<int64_t>(value, 0);  // 0 and 1 are buckets of their own
  return int64_t{1} << std::bit_width(static_cast<uint64_t>(value - 1));
}

namespace {

}  // namespace

std::shared_ptr<Plan> Plan::build(CapturedGraph captured, const std::string& arch,
                                  const Session& session) {
  std::shared_ptr<Plan> plan(new Plan());
  Plan& p = *plan;
  p.captured_ = std::move(captured);
  p.poisonOutputs_ = session.options().poisonOutputs;
  ir::Graph& graph = *p.captured_.graph;
  passes::runDefaultPasses(graph);
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
      for (const ir::Value* v : step.group.inputs) rt.inputIds.push_back(v->id());
      // Constants inside a group are inlined by codegen but the ATen fallback reads them.
      for (const ir::Node* n : step.group.nodes)
        for (const ir::Value* v : n->inputs())
          if (v->producer()->kind() == ir::OpKind::kConstant) rt.inputIds.push_back(v->id());
      for (const ir::Value* v : step.group.outputs) rt.outputIds.push_back(v->id());
    } else {
      for (const ir::Value* v : step.node->inputs()) rt.inputIds.push_back(v->id());
      for (const ir::Value* v : step.node->outputs()) rt.outputIds.push_back(v->id());
    }
    for (int id : rt.inputIds) lastUse[static_cast<size_t>(id)] = static_cast<int>(s);
  }
  for (int id : p.outputIds_) lastUse[static_cast<size_t>(id)] = -2;  // never released
  for (int id = 0; id < p.numValues_; ++id) {
    int s = lastUse[static_cast<size_t>(id)];
    if (s >= 0 && !p.constantValues_[static_cast<size_t>(id)].defined())
      p.runtime_[static_cast<size_t>(s)].release.push_back(id);
  }

  // Codegen is cheap and deterministic; compiles are not: run them in parallel on TBB.
  codegen::BucketInfo bucket = bucketFor(p.captured_.exampleSymbolValues);
  std::vector<size_t> fusionSteps;
  for (size_t s = 0; s < p.partition_.steps.size(); ++s)
    if (p.partition_.steps[s].kind == partition::StepKind::kFusion) fusionSteps.push_back(s);
  p.kernels_.resize(fusionSteps.size());
  std::vector<std::string> cubins(fusionSteps.size());
  for (size_t k = 0; k < fusionSteps.size(); ++k) {
    const partition::FusionGroup& group = p.partition_.steps[fusionSteps[k]].group;
    p.runtime_[fusionSteps[k]].kernel = static_cast<int>(k);
    KernelStep& ks = p.kernels_[k];
    try {
      ks.schedule = codegen::defaultSchedule(group, bucket);
      codegen::KernelSource src = codegen::emitCuda(graph, group, ks.schedule, bucket);
      ks.name = src.name;
      ks.abi = src.abi;
      ks.launch = src.launch;
      cubins[k] = std::move(src.source);  // compiled below, replaced by the cubin
    } catch (const Unsupported& e) {
      ks.fallbackReason = fmt::format("codegen: {}", e.what());
    }
  }
  const cuda::DriverApi* api = session.driver();
  if (arch.empty()) {
    for (KernelStep& ks : p.kernels_)
      if (ks.fallbackReason.empty()) ks.fallbackReason = "no target arch (no GPU, KILN_ARCH unset)";
  } else {
    auto t0 = Clock::now();
    cache::KernelCache& cache = session.kernelCache();
    // The toolkit include path (-I...) differs between machines but not the binary: the headers
    // it names ship with NVRTC, whose version is in the key. Leaving it out lets a cache built by
    // kiln-warmup on one machine serve another.
    std::vector<std::string> nvrtcOpts;
    for (std::string& o : nvrtcOptions(arch))
      if (o.rfind("-I", 0) != 0) nvrtcOpts.push_back(std::move(o));
    const std::string nvrtcVer = nvrtcVersionString();
    auto compileOne = [&](size_t k) {
      KernelStep& ks = p.kernels_[k];
      if (!ks.fallbackReason.empty()) return;
      auto c0 = Clock::now();
      try {
        // Note [Cache key contents] (cache/cache_key.h): source, options, arch, NVRTC version and
        // codegen version name the binary; a hit skips NVRTC entirely.
        cache::CacheKey key = cache::CacheKey::kernel(cubins[k], nvrtcOpts, arch, nvrtcVer,
                                                      codegen::kCodegenVersion);
        bool produced = false;
        std::string bin = cache.getOrCreate(key, [&] {
          produced = true;
          CompiledKernel compiled = compileToCubin(cubins[k], ks.name, arch);
          return std::string(compiled.cubin.begin(), compiled.cubin.end());
        });
        ks.fromCache = !produced;
        cubins[k] = std::move(bin);
      } catch (const CompileError& e) {
        ks.fallbackReason = fmt::format("NVRTC: {}", e.what());
        logOnce(LogLevel::kWarn, "compile." + ks.name,
                fmt::format("kiln: kernel {} failed to compile, its group runs eagerly: {}\n{}",
                            ks.name, e.what(), e.log()));
      }
      ks.compileSeconds = secondsSince(c0);
    };
    int threads = session.options().compileThreads;
    tbb::task_arena arena(threads > 0 ? threads : tbb::task_arena::automatic);
    arena.execute([&] {
      tbb::parallel_for(size_t{0}, p.kernels_.size(), [&](size_t k) { compileOne(k); });
    });
    p.info_.compileSeconds = secondsSince(t0);
    for (size_t k = 0; k < p.kernels_.size(); ++k) {
      KernelStep& ks = p.kernels_[k];
      if (!ks.fallbackReason.empty()) continue;
      ++(ks.fromCache ? p.info_.kernelsCached : p.info_.kernelsCompiled);
      if (api == nullptr) {
        ks.fallbackReason = "compiled, but no CUDA driver to run it";
        continue;
      }
      ks.kernel = std::make_shared<LoadedKernel>(*api, ks.name, std::move(cubins[k]));
    }
  }
  for (const KernelStep& ks : p.kernels_)
    if (ks.kernel == nullptr) ++p.info_.groupsWithoutKernel;

  const CapturedGraph* cap = &p.captured_;
  p.eager_ = [cap](const ir::Node& node, const std::vector<at::Tensor>& in) {
    return runEagerNode(*cap, node, in);
  };
  return plan;
}

void Plan::runGroupEagerly(const partition::FusionGroup& group, std::vector<at::Tensor>& values,
                           const std::vector<int64_t>& symbols) const {
  // Intermediates of the group live in `values` only until the group ends.
  std::vector<int> produced;
  for (const ir::Node* n : group.nodes) {
    std::vector<at::Tensor> in;
    in.reserve(n->inputs().size());
    for (const ir::Value* v : n->inputs()) in.push_back(values[static_cast<size_t>(v->id())]);
    std::vector<at::Tensor> out = evalNode(*n, in, symbols, eager_);
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

bool Plan::runKernel(const KernelStep& k, const StepRuntime& rt, std::vector<at::Tensor>& values,
                     const std::vector<int64_t>& symbols) const {
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

std::vector<at::Tensor> Plan::run(const std::vector<at::Tensor>& inputs) const {
  const ir::Graph& g = *captured_.graph;
  stats_.calls.fetch_add(1, std::memory_order_relaxed);
  std::vector<int64_t> symbols = bindSymbols(g, inputs);
  std::vector<at::Tensor> values = constantValues_;
  std::vector<ir::Value*> graphInputs = g.inputs();
  for (size_t i = 0; i < graphInputs.size(); ++i)
    values[static_cast<size_t>(graphInputs[i]->id())] = inputs[i];

  for (size_t s = 0; s < partition_.steps.size(); ++s) {
    const partition::Step& step = partition_.steps[s];
    const StepRuntime& rt = runtime_[s];
    if (step.kind == partition::StepKind::kFusion) {
      const KernelStep& k = kernels_[static_cast<size_t>(rt.kernel)];
      if (k.kernel == nullptr || !runKernel(k, rt, values, symbols)) {
        stats_.groupFallbacks.fetch_add(1, std::memory_order_relaxed);
        runGroupEagerly(step.group, values, symbols);
      }
    } else {
      std::vector<at::Tensor> in;
      in.reserve(rt.inputIds.size());
      for (int id : rt.inputIds) in.push_back(values[static_cast<size_t>(id)]);
      std::vector<at::Tensor> out = evalNode(*step.node, in, symbols, eager_);
      for (size_t i = 0; i < out.size(); ++i)
        values[static_cast<size_t>(rt.outputIds[i])] = std::move(out[i]);
    }
    for (int id : rt.release) values[static_cast<size_t>(id)].reset();
  }
  std::vector<at::Tensor> outputs;
  outputs.reserve(outputIds_.size());
  for (size_t i = 0; i < outputIds_.size(); ++i) {
    at::Tensor t = values[static_cast<size_t>(outputIds_[i])];
    // A graph output that is a constant is a wrapped number inside kiln; hand out a real tensor.
    if (isScalarOperand(t))
      t = at::full({}, t.item(), at::TensorOptions().dtype(toAtenDType(g.outputs()[i]->dtype())));
    outputs.push_back(std::move(t));
  }
  return outputs;
}

std::string Plan::explain() const {
  std::string out = partition::explain(*captured_.graph, partition_);
  out += "kernels:\n";
  for (const KernelStep& k : kernels_) {
    if (k.kernel != nullptr)
      out += fmt::format("  {} [{}] {} in {:.1f} ms\n", k.name, codegen::toString(k.schedule),
                         k.fromCache ? "loaded from cache" : "compiled", k.compileSeconds * 1e3);
    else
      out += fmt::format("  {} runs eagerly: {}\n", k.name.empty() ? "<group>" : k.name,
                         k.fallbackReason);
  }
  out += fmt::format("capture: {}\n", captured_.report());
  return out;
}

}  // namespace kiln::jit

#include "jit/runtime/plan.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>
#include <list>
#include <mutex>
#include <optional>
#include <string_view>

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/SmallVector.h>
#include <fmt/format.h>
#include <torch/csrc/jit/ir/ir.h>
#include <nlohmann/json.hpp>

#include "jit/capture/lower.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/buckets.h"
#include "jit/runtime/derived_params.h"
#include "jit/runtime/fold_conv_bn.h"
#include "jit/runtime/kernel_launcher.h"
#include "jit/runtime/profiler_range.h"
#include "jit/runtime/session.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

// Note [Shape-only steps] in program.h.
struct Plan::ShapeOnlyKey {
  int64_t stream = 0;  // the CUDA stream's id; 0 on the CPU
  std::vector<int64_t> symbols;
  std::vector<std::pair<const void*, int64_t>> stamps;  // per param read: storage, version
  bool operator==(const ShapeOnlyKey&) const = default;
};

struct Plan::ShapeOnlyCache {
  static constexpr size_t kCapacity = 8;
  std::mutex mutex;
  std::list<std::pair<ShapeOnlyKey, std::vector<at::Tensor>>> entries;  // front: most recent

  // The frontier values of `key`, or empty.
  std::vector<at::Tensor> find(const ShapeOnlyKey& key) {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = entries.begin(); it != entries.end(); ++it) {
      if (!(it->first == key)) continue;
      entries.splice(entries.begin(), entries, it);
      return entries.front().second;
    }
    return {};
  }
  void insert(ShapeOnlyKey key, std::vector<at::Tensor> values) {
    std::lock_guard<std::mutex> lock(mutex);
    for (const auto& e : entries)
      if (e.first == key) return;
    entries.emplace_front(std::move(key), std::move(values));
    if (entries.size() > kCapacity) entries.pop_back();
  }
};

namespace {

// Host time per step of one run (Note [First call breakdown]): hook() goes to runSteps as its
// afterStep. Not copyable or movable: the hook refers to the timer.
class StepTimer {
 public:
  using Clock = std::chrono::steady_clock;
  StepTimer() : start_(Clock::now()), mark_(start_), hook_([this](size_t s) { lap(s); }) {}
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;
  const std::function<void(size_t)>& hook() const { return hook_; }
  double totalMs() const { return ms(start_, Clock::now()); }
  // The `n` slowest steps, (step, ms), slowest first.
  std::vector<std::pair<size_t, double>> slowest(size_t n) const {
    std::vector<std::pair<size_t, double>> out = steps_;
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    if (out.size() > n) out.resize(n);
    return out;
  }

 private:
  static double ms(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  }
  void lap(size_t step) {
    const Clock::time_point now = Clock::now();
    steps_.emplace_back(step, ms(mark_, now));
    mark_ = now;
  }
  const Clock::time_point start_;
  Clock::time_point mark_;
  std::vector<std::pair<size_t, double>> steps_;
  const std::function<void(size_t)> hook_;
};

// The device of a call: where values made from nothing go (Note [Fills]), and where a kernel
// without inputs runs. The first GPU among the inputs, then among the bound params (a model may
// take a small CPU tensor beside its GPU ones); without a GPU, the first input's device.
at::Device callDevice(const std::vector<at::Tensor>& inputs,
                      const std::vector<at::Tensor>& values) {
  for (const at::Tensor& t : inputs)
    if (t.defined() && t.is_cuda()) return t.device();
  for (const at::Tensor& t : values)
    if (t.defined() && t.is_cuda() && !isScalarOperand(t)) return t.device();
  for (const at::Tensor& t : inputs)
    if (t.defined()) return t.device();
  return at::Device(at::kCPU);
}

// Note [CUDA graph replay]: why no call of this program may be replayed, or "". A graph would
// repeat one draw of an op that draws random numbers.
// Ops whose output shape comes from data, or that hand a tensor's value to the host: the host waits
// for the GPU inside them, which a capture cannot do.
bool readsDataOnTheHost(std::string_view op) {
  static constexpr std::string_view kOps[] = {"aten::nonzero",
                                              "aten::masked_select",
                                              "aten::_unique2",
                                              "aten::unique_dim",
                                              "aten::unique_consecutive",
                                              "aten::item",
                                              "aten::_local_scalar_dense",
                                              "aten::bincount",
                                              "aten::equal",
                                              "aten::allclose",
                                              "aten::is_nonzero",
                                              "aten::tolist"};
  for (std::string_view o : kOps)
    if (o == op) return true;
  return false;
}

// Whether the op's schema takes a Generator: every op that draws random numbers does.
bool takesAGenerator(const EagerCall& call) {
  const std::optional<c10::OperatorHandle> op =
      c10::Dispatcher::singleton().findSchema({call.name, call.overload});
  if (!op) return false;
  for (const c10::Argument& a : op->schema().arguments()) {
    c10::TypePtr t = a.type();
    if (auto opt = t->cast<c10::OptionalType>()) t = opt->getElementType();
    if (t->kind() == c10::TypeKind::GeneratorType) return true;
  }
  return false;
}

// Why a plan is never captured (Note [CUDA graph replay]), or "" when it may be. A step that the
// capture would fail on is caught here, so no capture is attempted (and no CUDA API error raised).
std::string graphBlocker(const Program& p) {
  const CapturedGraph& c = p.captured();
  for (size_t i = 0; i < std::max(c.eagerNodes.size(), c.eagerCalls.size()); ++i) {
    const torch::jit::Node* n = i < c.eagerNodes.size() ? c.eagerNodes[i] : nullptr;
    const EagerCall* call = i < c.eagerCalls.size() ? c.eagerCalls[i].get() : nullptr;
    const std::string name = call != nullptr ? call->name
                             : n != nullptr  ? n->kind().toQualString()
                                             : "";
    if ((n != nullptr && n->isNondeterministic()) || (call != nullptr && takesAGenerator(*call)))
      return fmt::format("{} draws random numbers, which a replay would repeat", name);
    if (readsDataOnTheHost(name))
      return fmt::format("{} reads tensor data on the host, which a capture cannot", name);
    if (call == nullptr) continue;
    for (const EagerCall::Slot& slot : call->slots)
      for (const EagerCall::Scalar& sc : slot.scalars)
        if (sc.operand >= 0)
          return fmt::format(
              "{} takes a scalar read from a tensor on the host at every call (Note [Run-time "
              "scalars]), which a capture cannot",
              name);
  }
  // A replay copies the inputs in and the outputs out around one launch: with few launches a call
  // it saves little host time and adds memory traffic (kiln-bench's one-kernel workloads ran
  // 0.5-0.9x eager with graphs on an H100, 2026-12-05).
  size_t launching = 0;
  const Program::ShapeOnly& so = p.shapeOnly();
  for (size_t s = 0; s < p.partition().steps.size(); ++s)
    launching += p.partition().steps[s].kind != partition::StepKind::kView &&
                 !(so.enabled && s < so.step.size() && so.step[s]);
  if (launching < GraphReplay::kMinStepsForGraphs)
    return fmt::format(
        "{} launching step{} a call; a graph pays for its input and output copies from {}",
        launching, launching == 1 ? "" : "s", GraphReplay::kMinStepsForGraphs);
  return "";
}

}  // namespace

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
  if (plan->program_->shapeOnly().enabled) plan->shapeOnly_ = std::make_shared<ShapeOnlyCache>();
  if (session.options().cudaGraphs)
    plan->graphs_ = std::make_unique<GraphReplay>(graphBlocker(*plan->program_));
  return plan;
}

std::shared_ptr<Plan> Plan::build(CapturedGraph captured, const std::string& arch,
                                  const Session& session) {
  codegen::BucketInfo bucket = bucketFor(captured.exampleSymbolValues);
  std::shared_ptr<const Program> program = Program::build(std::move(captured), session);
  std::shared_ptr<KernelSet> set =
      emitKernels(program->graph(), program->groups(), bucket, arch, tuningRecords(session));
  PlanBuildInfo info;
  CompileReport r = compileKernels(*set, arch, session, /*background=*/false);
  info.kernelsCompiled = r.compiled;
  info.kernelsCached = r.cached;
  info.compileSeconds = r.seconds;
  for (const KernelStep& ks : set->kernels)
    if (ks.kernel == nullptr) ++info.groupsWithoutKernel;
  return create(std::move(program), std::move(set), info, session);
}

FirstRun Plan::firstRun() const {
  std::lock_guard<std::mutex> lock(firstRunMutex_);
  return firstRun_;
}

std::string Plan::firstCallLine() const {
  const PlanBuildInfo& b = info_;
  std::string out = fmt::format(
      "first call: built in {:.1f} ms (capture {:.1f} ms{}, passes {:.1f} ms, kernels {:.1f} ms: "
      "{} cached, {} compiled in {:.1f} ms)",
      (b.captureSeconds + b.passesSeconds + b.kernelsSeconds) * 1e3, b.captureSeconds * 1e3,
      b.captureSeconds == 0 ? ": the family's"
                            : (b.captureFromCache ? " from the capture cache" : " traced"),
      b.passesSeconds * 1e3, b.kernelsSeconds * 1e3, b.kernelsCached, b.kernelsCompiled,
      b.compileSeconds * 1e3);
  const FirstRun fr = firstRun();
  if (!fr.done) return out + "; not run yet";
  out += fmt::format("; first run {:.1f} ms on the host", fr.ms);
  for (size_t i = 0; i < fr.slowest.size(); ++i)
    out += fmt::format("{}{} {:.1f} ms", i == 0 ? " (slowest: " : ", ", fr.slowest[i].first,
                       fr.slowest[i].second);
  return out + (fr.slowest.empty() ? "" : ")");
}

bool Plan::settled() const {
  return settled(*kernels_.load(std::memory_order_acquire));
}

bool Plan::settled(const KernelSet& set) const {
  // Note [Quantized linears]: calibration reads tensors on the host, and changes what runs. Note
  // [Kiln GEMM while cuBLAS loads]: so do the stand-in GEMMs.
  return !set.pending() && !(set.generic && info_.servedGeneric && swaps_.load() == 0) &&
         !program_->calibrating() && !program_->standInGemmsRunning(-1);
}

void Plan::setComparison(ModuleComparison c) const {
  std::lock_guard<std::mutex> lock(comparisonMutex_);
  runsModule_.store(c.decided && c.moduleFaster, std::memory_order_relaxed);
  comparison_ = std::move(c);
}

std::optional<ModuleComparison> Plan::comparison() const {
  std::lock_guard<std::mutex> lock(comparisonMutex_);
  return comparison_;
}

void Plan::swapKernels(std::shared_ptr<const KernelSet> kernels) {
  KILN_CHECK(kernels != nullptr && kernels->kernels.size() == program_->numKernels(),
             "swapKernels: kernel set does not match the program");
  kernels_.store(std::move(kernels));
  swaps_.fetch_add(1, std::memory_order_relaxed);
}

void Plan::runGroupEagerly(const partition::FusionGroup& group, std::vector<at::Tensor>& values,
                           const std::vector<int64_t>& symbols, at::Device device) const {
  // Intermediates of the group live in `values` only until the group ends.
  std::vector<int> produced;
  for (const ir::Node* n : group.nodes) {
    std::vector<at::Tensor> in;
    in.reserve(n->inputs().size());
    for (const ir::Value* v : n->inputs()) in.push_back(values[static_cast<size_t>(v->id())]);
    std::vector<at::Tensor> out = evalNode(*n, in, symbols, program_->eager_, device);
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
  for (const ir::Value* v : group.outputs) {  // Note [Cats written in place]
    at::Tensor& t = values[static_cast<size_t>(v->id())];
    if (!t.defined()) continue;
    at::Tensor place = catPlace(v->id(), values, symbols, t.device());
    if (!place.defined() || place.sizes() != t.sizes()) continue;
    place.copy_(t);
    t = std::move(place);
  }
}

at::Tensor Plan::catPlace(int id, std::vector<at::Tensor>& values,
                          const std::vector<int64_t>& symbols, at::Device device) const {
  const Program::CatSlot* slot = program_->catSlot(id);
  if (slot == nullptr) return {};
  const std::vector<int64_t> dims = partialShape(slot->dims, symbols);
  if (std::find(dims.begin(), dims.end(), kUnboundSymbol) != dims.end()) return {};
  const auto rank = static_cast<std::ptrdiff_t>(slot->rank);
  int64_t offset = 0;
  for (auto d = dims.begin() + rank; d != dims.end() - 1; ++d) offset += *d;
  const int64_t length = dims.back();
  at::Tensor& buffer = values[static_cast<size_t>(slot->catId)];
  if (!buffer.defined())
    buffer = at::empty(at::IntArrayRef(dims.data(), slot->rank),
                       at::TensorOptions().dtype(toAtenDType(slot->dtype)).device(device));
  else if (buffer.device() != device)
    return {};
  return buffer.narrow(slot->dim, offset, length);
}

bool Plan::completeCat(size_t s, const std::vector<at::Tensor>& operands,
                       std::vector<at::Tensor>& values) const {
  const ir::Node& cat = *program_->partition_.steps[s].node;
  at::Tensor& buffer = values[static_cast<size_t>(cat.output()->id())];
  if (!buffer.defined()) return false;  // no operand was placed this call
  int64_t dim = cat.attrs().getInt("dim");
  if (dim < 0) dim += buffer.dim();
  int64_t offset = 0;
  for (const at::Tensor& part : operands) {
    at::Tensor place = buffer.narrow(dim, offset, part.size(dim));
    if (place.data_ptr() != part.data_ptr() || place.sizes() != part.sizes() ||
        place.strides() != part.strides())
      place.copy_(part);
    offset += part.size(dim);
  }
  KILN_CHECK(offset == buffer.size(dim), "cat step {}: operands fill {} of {} along dim {}", s,
             offset, buffer.size(dim), dim);
  return true;
}

bool Plan::runKernel(const KernelStep& k, const Program::StepRuntime& rt,
                     std::vector<at::Tensor>& values, const std::vector<int64_t>& symbols,
                     at::Device callDev) const {
  const codegen::KernelAbi& abi = k.abi;
  const size_t numInputs = static_cast<size_t>(abi.numInputs);
  KILN_CHECK(abi.tensors.size() == numInputs + rt.outputIds.size(), "ABI of {} disagrees with plan",
             k.name);
  c10::SmallVector<at::Tensor, 8> tensors;  // every call: no heap for a usual kernel
  tensors.reserve(abi.tensors.size());
  for (size_t i = 0; i < numInputs; ++i) {
    const at::Tensor& t = values[static_cast<size_t>(abi.tensors[i].valueId)];
    if (!t.defined() || !t.is_cuda()) return false;
    tensors.push_back(t);
  }
  // A kernel without inputs (Note [Fills]) runs on the call's device.
  const at::Device device = tensors.empty() ? callDev : tensors.front().device();
  if (!device.is_cuda()) return false;
  for (const at::Tensor& t : tensors)
    if (t.device() != device) return false;  // eager would raise; let ATen say so
  std::vector<int64_t> domain = codegen::domainSizes(abi, symbols);
  for (size_t i = numInputs; i < abi.tensors.size(); ++i) {
    const codegen::TensorArg& arg = abi.tensors[i];
    std::vector<int64_t> shape = concreteShape(arg.shape, symbols);
    // Note [Cats written in place]: the kernel writes into the cat's buffer.
    at::Tensor place = catPlace(arg.valueId, values, symbols, device);
    tensors.push_back(
        place.defined() && place.sizes() == at::IntArrayRef(shape) &&
                place.scalar_type() == toAtenDType(arg.dtype)
            ? std::move(place)
            : at::empty(shape, at::TensorOptions().dtype(toAtenDType(arg.dtype)).device(device)));
    if (poisonOutputs_) {
      at::Tensor& t = tensors.back();
      t.fill_(at::isFloatingType(t.scalar_type()) ? std::numeric_limits<double>::quiet_NaN()
                                                  : (t.scalar_type() == at::kBool ? 1.0 : -77.0));
    }
  }
  c10::SmallVector<codegen::TensorView, 8> views;
  views.reserve(tensors.size());
  for (const at::Tensor& t : tensors) views.push_back({t.data_ptr(), t.sizes(), t.strides()});
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
  codegen::LaunchDims dims =
      codegen::launchDims(k.launch, abi, args, k.kernel->multiprocessors(ordinal));
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
  p.refreshSnapshots();  // Note [Derived params are snapshots]
  // Note [Buffers with known contents]: before a graph replay too, which runs no step.
  if (std::optional<std::string> why = p.brokenContent()) throw AssumptionViolated(*why);
  // One set for the whole call, even if a swap lands meanwhile.
  std::shared_ptr<const KernelSet> set = kernels_.load(std::memory_order_acquire);
  stats_.calls.fetch_add(1, std::memory_order_relaxed);
  // Note [First call breakdown]: the first run times each step on the host. It takes the same
  // path as any call (graph replay counts it as a warm-up call); later calls make no timer.
  std::optional<StepTimer> firstTimer;
  if (afterStep == nullptr && !firstRunClaimed_.load(std::memory_order_relaxed) &&
      !firstRunClaimed_.exchange(true))
    firstTimer.emplace();
  const std::function<void(size_t)>* hook = firstTimer ? &firstTimer->hook() : afterStep;
  std::optional<std::vector<at::Tensor>> outs;
  if (graphs_ != nullptr && afterStep == nullptr) {
    // Note [CUDA graph replay]: not a set that is about to be swapped for the bucket's own.
    const bool ready = settled(*set);
    const GraphReplay::RunSteps steps = [&](const std::vector<at::Tensor>& in, bool bypass) {
      return runSteps(*set, in, hook, bypass);
    };
    outs = graphs_->run(inputs, set, ready, p.captured_.params, steps);
  }
  if (!outs) outs = runSteps(*set, inputs, hook, /*bypassShapeOnly=*/false);
  if (firstTimer) {
    FirstRun fr;
    fr.done = true;
    fr.ms = firstTimer->totalMs();
    for (const auto& [step, ms] : firstTimer->slowest(5))
      fr.slowest.emplace_back(fmt::format("step {} {}", step, stepLabel(step)), ms);
    std::lock_guard<std::mutex> lock(firstRunMutex_);
    firstRun_ = std::move(fr);
  }
  return std::move(*outs);
}

std::vector<at::Tensor> Plan::runWith(const KernelSet& kernels,
                                      const std::vector<at::Tensor>& inputs) const {
  KILN_CHECK(kernels.kernels.size() == program_->groups().size(),
             "runWith: a set of {} kernels for a program of {} groups", kernels.kernels.size(),
             program_->groups().size());
  const Program& p = *program_;
  p.refreshSnapshots();
  return runSteps(kernels, inputs, nullptr, /*bypassShapeOnly=*/false);
}

std::vector<at::Tensor> Plan::runSteps(const KernelSet& set, const std::vector<at::Tensor>& inputs,
                                       const std::function<void(size_t step)>* afterStep,
                                       bool bypassShapeOnly) const {
  const Program& p = *program_;
  const ir::Graph& g = p.graph();
  std::vector<int64_t> symbols = bindSymbols(g, p.graphInputs_, inputs);
  for (const SizeAssumption& a : p.captured_.assumptions) {
    const int64_t lhs = a.lhs.evaluate(symbols);
    const int64_t rhs = a.rhs.evaluate(symbols);
    if (lhs > rhs)
      throw AssumptionViolated(
          fmt::format("size assumption {} does not hold ({} > {})", a.what, lhs, rhs));
  }
  if (std::optional<std::string> why = p.brokenContent()) throw AssumptionViolated(*why);
  std::vector<at::Tensor> values = p.constantValues_;
  const at::Device device = callDevice(inputs, values);
  for (size_t i = 0; i < p.graphInputs_.size(); ++i)
    values[static_cast<size_t>(p.graphInputs_[i]->id())] = inputs[i];
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

  // Note [Shape-only steps]: reuse what sizes alone determine, or compute and keep it.
  const Program::ShapeOnly& so = p.shapeOnly_;
  ShapeOnlyKey soKey;
  bool soHit = false;
  std::vector<at::Tensor> soValues;
  ShapeOnlyCache* const shapeOnly = bypassShapeOnly ? nullptr : shapeOnly_.get();
  if (shapeOnly != nullptr) {
    for (const at::Tensor& t : inputs)
      if (t.is_cuda()) {
        soKey.stream = at::cuda::getCurrentCUDAStream(t.device().index()).id();
        break;
      }
    soKey.symbols = symbols;
    for (int id : so.params) {
      const at::Tensor& t = values[static_cast<size_t>(id)];
      soKey.stamps.emplace_back(t.data_ptr(), tensorVersion(t));
    }
    soValues = shapeOnly->find(soKey);
    soHit = !soValues.empty();
    if (soHit) {
      stats_.shapeOnlyHits.fetch_add(1, std::memory_order_relaxed);
      for (size_t k = 0; k < so.frontier.size(); ++k)
        values[static_cast<size_t>(so.frontier[k])] = soValues[k];
    } else {
      soValues.resize(so.frontier.size());
    }
  }

  for (size_t s = 0; s < p.partition_.steps.size(); ++s) {
    const partition::Step& step = p.partition_.steps[s];
    const Program::StepRuntime& rt = p.runtime_[s];
    if (soHit && so.step[s]) {
      if (afterStep != nullptr && s + 1 < p.partition_.steps.size()) (*afterStep)(s);
      continue;
    }
    const ProfilerRange range(rt.rangeName.c_str());
    if (step.kind == partition::StepKind::kFusion) {
      const KernelStep& k = set.kernels[static_cast<size_t>(rt.kernel)];
      if (k.kernel == nullptr || !runKernel(k, rt, values, symbols, device)) {
        stats_.groupFallbacks.fetch_add(1, std::memory_order_relaxed);
        runGroupEagerly(step.group, values, symbols, device);
      }
    } else {
      std::vector<at::Tensor> in;
      in.reserve(rt.inputIds.size());
      for (int id : rt.inputIds) in.push_back(values[static_cast<size_t>(id)]);
      std::vector<at::Tensor> out;
      if (rt.quant != nullptr) {  // Note [Quantized linears]: linear(x, w, b), addmm(b, x, w)
        const ir::Attrs& attrs = step.node->attrs();
        std::optional<at::Tensor> y =
            step.node->kind() == ir::OpKind::kAddmm
                ? rt.quant->run(in[1], in[2].t(), &in[0], "")
                : rt.quant->run(in[0], in[1], in.size() > 2 ? &in[2] : nullptr,
                                attrs.has("activation") ? attrs.getString("activation") : "");
        if (y) out.push_back(std::move(*y));
      }
      // Note [Kiln GEMM while cuBLAS loads].
      const KilnGemm* gemm =
          out.empty() && (rt.gemm != nullptr || rt.loadingGemm != nullptr) && in[0].is_cuda()
              ? p.gemmFor(s, in[0].device().index(), !set.libraryGemms)
              : nullptr;
      if (gemm != nullptr) {
        if (std::optional<at::Tensor> y =
                gemm->run(in[0], in[1], in.size() > 2 ? &in[2] : nullptr)) {
          out.push_back(std::move(*y));
          stats_.kernelLaunches.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (out.empty() && p.catInPlace(s) && completeCat(s, in, values)) {
        // Note [Cats written in place]: the buffer is the cat's value already.
      } else if (out.empty()) {
        out = evalNode(*step.node, in, symbols, p.eager_, device);
      }
      for (size_t i = 0; i < out.size(); ++i)
        values[static_cast<size_t>(rt.outputIds[i])] = std::move(out[i]);
    }
    if (shapeOnly != nullptr && !soHit && so.step[s])
      for (int id : rt.outputIds)
        if (const int k = so.frontierOf[static_cast<size_t>(id)]; k >= 0)
          soValues[static_cast<size_t>(k)] = values[static_cast<size_t>(id)];
    for (int id : rt.release) values[static_cast<size_t>(id)].reset();
    // The last step's mark comes after the outputs' layout conversion below.
    if (afterStep != nullptr && s + 1 < p.partition_.steps.size()) (*afterStep)(s);
  }
  if (shapeOnly != nullptr && !soHit) shapeOnly->insert(std::move(soKey), std::move(soValues));
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
    const Program::StepRuntime& rt = program_->runtime_[s];
    if (step.kind == partition::StepKind::kFusion) {
      std::shared_ptr<const KernelSet> set = kernels_.load();
      const KernelStep& k = set->kernels[static_cast<size_t>(rt.kernel)];
      return k.kernel != nullptr ? "kernel " + k.name : "eager " + describeStep(step);
    }
    if (rt.quant != nullptr && rt.quant->report().quantized) return describeStep(step) + " (8-bit)";
    if (rt.gemm != nullptr && rt.gemm->hasKernel() && !kernels_.load()->libraryGemms)
      return "kernel " + rt.gemm->name();
    return describeStep(step);
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

// Note [Quantized linears]: a step whose linear runs its 8-bit GEMM now.
bool quantized(const QuantizedLinear* q) {
  return q != nullptr && q->report().quantized;
}

std::string quantLines(const Program& program) {
  const std::vector<QuantizedLinear::Report> reports = program.quantReports();
  const std::vector<std::string>& skipped = program.quantSkipped();
  if (reports.empty() && skipped.empty()) return "";
  const auto eight = std::count_if(reports.begin(), reports.end(),
                                   [](const QuantizedLinear::Report& r) { return r.quantized; });
  std::string out =
      fmt::format("quantised linears: {} of {} run 8-bit (Note [Quantized linears])\n", eight,
                  reports.size() + skipped.size());
  for (const QuantizedLinear::Report& r : reports)
    out += fmt::format("  {}: {}\n", r.label, r.state);
  for (const std::string& why : skipped) out += fmt::format("  {} (16-bit)\n", why);
  return out;
}

}  // namespace

std::string Plan::graphsLine() const {
  if (graphs_ == nullptr) return "CUDA graphs: off (KILN_CUDA_GRAPHS=off)";
  if (std::string why = graphs_->offReason(); !why.empty())
    return fmt::format("CUDA graphs: off: {} ({} replays before)", why, graphs_->replays());
  return fmt::format(
      "CUDA graphs: {} captured, {} alive, {} replays (Note [CUDA graph replay]; a size is "
      "captured at its second call)",
      graphs_->captures(), graphs_->graphsAlive(), graphs_->replays());
}

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
    if (const KilnGemm* gemm = program_->runtime_[s].gemm.get();
        gemm != nullptr && !quantized(program_->runtime_[s].quant.get()))
      out += !gemm->hasKernel()
                 ? fmt::format("step {}: linear + gelu through ATen: {}\n", s, gemm->reason())
             : set->libraryGemms
                 ? fmt::format(
                       "step {}: linear + gelu through ATen: the tuner timed the plan faster this "
                       "way than with kiln GEMM {} (Note [Library or kiln GEMM on the plan])\n",
                       s, gemm->name())
                 : fmt::format("step {}: kiln GEMM {} (bias + {} in its epilogue)\n", s,
                               gemm->name(), codegen::toString(gemm->spec().activation));
  {  // Note [Kiln GEMM while cuBLAS loads]: one line for the plain linears' stand-ins.
    size_t standIns = 0;
    const KilnGemm* any = nullptr;
    for (const Program::StepRuntime& rt : program_->runtime_)
      if (rt.loadingGemm != nullptr && rt.gemm == nullptr && !quantized(rt.quant.get())) {
        ++standIns;
        if (any == nullptr || rt.loadingGemm->hasKernel()) any = rt.loadingGemm.get();
      }
    if (any != nullptr)
      out += any->hasKernel()
                 ? fmt::format(
                       "while cuBLAS loads: {} linear(s) run on kiln GEMM {} (Note [Kiln GEMM "
                       "while cuBLAS loads]); {}\n",
                       standIns, any->name(),
                       program_->standInGemmsRunning(-1) ? "cuBLAS is loading now"
                                                         : "cuBLAS is loaded, so they run in ATen")
                 : fmt::format("while cuBLAS loads: no stand-in GEMM for {} linear(s): {}\n",
                               standIns, any->reason());
  }
  out += quantLines(*program_);
  if (!program_->convLayout().reason.empty())
    out += fmt::format("conv layout: {}\n", program_->convLayout().reason);
  if (program_->numCatSlots() > 0)
    out += fmt::format(
        "cats written in place: {} operands computed into their cat's buffer (Note [Cats written "
        "in place])\n",
        program_->numCatSlots());
  const passes::MergedLinears& merged = program_->mergedLinears();
  if (merged.groups > 0) {
    out += fmt::format(
        "merged linears: {} linears run as {} GEMMs, {:.1f} MiB of weights copied (Note [Merged "
        "linears])\n",
        merged.linears, merged.groups, static_cast<double>(merged.bytes) / (1 << 20));
    for (const std::string& line : merged.describe) out += "  " + line + "\n";
  }
  const Program::ShapeOnly& so = program_->shapeOnly();
  out += so.enabled ? fmt::format(
                          "shape-only steps: {} of {}, {} values kept per sizes, reused by "
                          "{} calls (Note [Shape-only steps])\n",
                          so.steps, partition().steps.size(), so.frontier.size(),
                          stats_.shapeOnlyHits.load())
                    : fmt::format("shape-only steps: none reused: {}\n", so.why);
  out += graphsLine() + "\n";
  const std::optional<ModuleComparison> cmp = comparison();
  out += fmt::format("against the module: {}\n",
                     cmp ? cmp->line()
                         : fmt::format("not compared yet (CUDA plans, after {} settled calls; Note "
                                       "[Plan against the module])",
                                       kCompareAfter));
  out += fmt::format("capture: {}\n", captured().report());
  out += firstCallLine() + "\n";
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
  {  // Note [First call breakdown]
    const FirstRun fr = firstRun();
    Json slowest = Json::array();
    for (const auto& [label, ms] : fr.slowest) slowest.push_back({{"step", label}, {"ms", ms}});
    out["firstCall"] = {{"captureMs", info_.captureSeconds * 1e3},
                        {"captureFromCache", info_.captureFromCache},
                        {"passesMs", info_.passesSeconds * 1e3},
                        {"kernelsMs", info_.kernelsSeconds * 1e3},
                        {"compileMs", info_.compileSeconds * 1e3},
                        {"firstRunMs", fr.done ? Json(fr.ms) : Json(nullptr)},
                        {"slowestSteps", std::move(slowest)}};
  }
  const Program::ShapeOnly& so = program_->shapeOnly();
  out["shapeOnly"] = {{"enabled", so.enabled},
                      {"steps", so.steps},
                      {"values", so.frontier.size()},
                      {"hits", stats_.shapeOnlyHits.load()},
                      {"why", so.why}};
  out["cudaGraphs"] = {
      {"enabled", graphs_ != nullptr && graphs_->offReason().empty()},
      {"captures", graphs_ != nullptr ? graphs_->captures() : 0},
      {"replays", graphs_ != nullptr ? graphs_->replays() : 0},
      {"alive", graphs_ != nullptr ? graphs_->graphsAlive() : 0},
      {"why", graphs_ == nullptr ? "off (KILN_CUDA_GRAPHS=off)" : graphs_->offReason()}};
  if (const std::optional<ModuleComparison> cmp = comparison())
    out["againstModule"] = {{"decided", cmp->decided}, {"moduleFaster", cmp->moduleFaster},
                            {"kilnMs", cmp->kilnMs},   {"moduleMs", cmp->moduleMs},
                            {"reps", cmp->reps},       {"reason", cmp->reason}};
  else
    out["againstModule"] = nullptr;
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
                       {"kernel", gemm->hasKernel() && !set->libraryGemms},
                       {"name", gemm->name()},
                       {"activation", codegen::toString(gemm->spec().activation)},
                       {"reason", gemm->hasKernel() && set->libraryGemms
                                      ? "the tuner timed the plan faster through ATen"
                                      : gemm->reason()}});
  out["gemms"] = std::move(gemms);
  Json quant = Json::array();  // Note [Quantized linears]
  for (const QuantizedLinear::Report& r : program_->quantReports())
    quant.push_back({{"linear", r.label},
                     {"quantized", r.quantized},
                     {"state", r.state},
                     {"relError", r.relError < 0 ? Json(nullptr) : Json(r.relError)},
                     {"inputScale", r.inputScale},
                     {"fromRecord", r.fromRecord}});
  for (const std::string& why : program_->quantSkipped())
    quant.push_back({{"linear", why.substr(0, why.find(": "))},
                     {"quantized", false},
                     {"state", "16-bit: " + why.substr(std::min(why.size(), why.find(": ") + 2))},
                     {"relError", nullptr},
                     {"inputScale", 0},
                     {"fromRecord", false}});
  out["quantizedLinears"] = std::move(quant);
  const passes::MergedLinears& merged = program_->mergedLinears();
  out["mergedLinears"] = {{"linears", merged.linears},
                          {"gemms", merged.groups},
                          {"bytesCopied", merged.bytes},
                          {"groups", merged.describe}};
  out["convLayout"] = {{"channelsLast", program_->convLayout().channelsLast},
                       {"reason", program_->convLayout().reason}};
  out["capture"] = captured().report();
  return out.dump(2, ' ', false, Json::error_handler_t::replace);
}

}  // namespace kiln::jit

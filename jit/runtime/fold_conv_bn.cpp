#include "jit/runtime/fold_conv_bn.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>

#include <ATen/cuda/CUDAContext.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>

#include "codegen/emit_cuda.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/derived_params.h"
#include "jit/runtime/kernel_build.h"
#include "jit/runtime/kernel_launcher.h"
#include "jit/runtime/session.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

using ir::Node;
using ir::OpKind;
using ir::Value;

namespace {

Node* producerOf(const Value* v, OpKind kind) {
  Node* n = v->producer();
  return n != nullptr && n->kind() == kind ? n : nullptr;
}

// The one node reading `v`, when `v` is read once and is not a graph output; else null.
Node* soleUser(const ir::Graph& g, const Value* v) {
  if (v->uses().size() != 1 || g.isGraphOutput(v)) return nullptr;
  return v->uses().front().user;
}

bool hasType(const Value* v, ir::DType dtype, const ir::Shape& shape) {
  return v->dtype() == dtype && v->shape() == shape;
}

// `v` = reshape(%p) from [C] to [C, 1, 1], both of `dtype`, %p a param: the param node, else null.
Node* perChannelParam(const Value* v, int64_t c, ir::DType dtype) {
  const Node* r = producerOf(v, OpKind::kReshape);
  if (r == nullptr || !hasType(v, dtype, {c, 1, 1})) return nullptr;
  Node* p = producerOf(r->input(0), OpKind::kParam);
  if (p == nullptr || !hasType(p->output(), dtype, {c})) return nullptr;
  return p;
}

// Note [Folding batchnorm into convolutions]: one conv and its decomposed batchnorm.
struct Match {
  Node* conv = nullptr;
  Node* last = nullptr;  // the chain's last op: its output becomes add(conv', shift')
  Node* convWeight = nullptr;
  Node* convBias = nullptr;  // params; convBias, bnWeight and bnBias may be null
  Node* mean = nullptr;
  Node* var = nullptr;
  Node* bnWeight = nullptr;
  Node* bnBias = nullptr;
  double eps = 0;
};

std::optional<Match> matchAt(const ir::Graph& g, Node* conv) {
  Match m;
  m.conv = conv;
  const Value* y = conv->output();
  const ir::DType dt = y->dtype();
  if (!ir::isFloating(dt) || y->rank() != 4 || !y->shape()[1].isConstant()) return std::nullopt;
  const int64_t c = y->shape()[1].constant();
  m.convWeight = producerOf(conv->input(1), OpKind::kParam);
  if (m.convWeight == nullptr || conv->input(1)->rank() != 4 ||
      conv->input(1)->shape()[0] != ir::SymDim(c))
    return std::nullopt;
  if (conv->inputs().size() == 3) {
    m.convBias = producerOf(conv->input(2), OpKind::kParam);
    if (m.convBias == nullptr || !hasType(conv->input(2), dt, {c})) return std::nullopt;
  }
  // sub(%y, mean) -> mul(_, rsqrt(add(var, eps)))
  const Node* sub = soleUser(g, y);
  if (sub == nullptr || sub->kind() != OpKind::kSub || sub->input(0) != y ||
      sub->output()->type() != y->type())
    return std::nullopt;
  m.mean = perChannelParam(sub->input(1), c, dt);
  Node* norm = soleUser(g, sub->output());
  if (m.mean == nullptr || norm == nullptr || norm->kind() != OpKind::kMul ||
      norm->input(0) != sub->output() || norm->output()->type() != y->type())
    return std::nullopt;
  const Node* rsqrt = producerOf(norm->input(1), OpKind::kRsqrt);
  if (rsqrt == nullptr || !hasType(rsqrt->output(), dt, {c, 1, 1})) return std::nullopt;
  const Node* addEps = producerOf(rsqrt->input(0), OpKind::kAdd);
  if (addEps == nullptr || !hasType(addEps->output(), dt, {c, 1, 1})) return std::nullopt;
  m.var = perChannelParam(addEps->input(0), c, dt);
  const Node* eps = producerOf(addEps->input(1), OpKind::kConstant);
  if (m.var == nullptr || eps == nullptr || eps->output()->rank() != 0 ||
      !ir::isFloating(eps->output()->dtype()))
    return std::nullopt;
  m.eps = eps->attrs().getDouble("value");
  m.last = norm;
  // Optional: mul(_, weight), then add(_, bias).
  auto next = [&](OpKind kind, Node*& param) {
    Node* n = soleUser(g, m.last->output());
    if (n == nullptr || n->kind() != kind || n->input(0) != m.last->output() ||
        n->output()->type() != y->type())
      return;
    if (Node* p = perChannelParam(n->input(1), c, dt)) {
      param = p;
      m.last = n;
    }
  };
  next(OpKind::kMul, m.bnWeight);
  next(OpKind::kAdd, m.bnBias);
  return m;
}

const std::string& paramName(const Node* param) {
  return param->attrs().getString("name");
}

// "bn1.running_var" -> "bn1"; a name without the suffix stays whole.
std::string stripSuffix(const std::string& name, std::string_view suffix) {
  if (name.size() > suffix.size() && name.ends_with(suffix))
    return name.substr(0, name.size() - suffix.size());
  return name;
}

// A source tensor the fold can read and watch: dense, floating, on `device`, of the IR param's
// shape. Inference tensors too (a module loaded under InferenceMode has them), though only a new
// data pointer of theirs is seen (Note [Folded params are snapshots]).
bool usableSource(const at::Tensor& t, const Value* param, const at::Device& device) {
  if (!t.defined() || t.layout() != at::kStrided || !at::isFloatingType(t.scalar_type()) ||
      t.device() != device || t.dim() != param->rank())
    return false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const ir::SymDim& s = param->shape()[static_cast<size_t>(d)];
    if (!s.isConstant() || s.constant() != t.size(d)) return false;
  }
  return true;
}

struct FoldValues {
  at::Tensor weight, shift;
};

// W' and shift' from the sources as they are now, in float32, cast to the fold's dtype.
FoldValues computeWithAten(const ConvBnFold& fold) {
  // Ordinary tensors even under the caller's InferenceMode: a later refresh writes into them.
  c10::InferenceMode notInference(/*enabled=*/false);
  c10::NoGradGuard noGrad;
  auto f32 = [](const at::Tensor& t) { return t.detach().to(at::kFloat); };
  const int64_t c = fold.convWeight.size(0);
  at::Tensor scale = at::rsqrt(f32(fold.var) + fold.eps);
  if (fold.bnWeight.defined()) scale = scale * f32(fold.bnWeight);
  at::Tensor shift =
      fold.convBias.defined() ? f32(fold.convBias) - f32(fold.mean) : -f32(fold.mean);
  shift = shift * scale;
  if (fold.bnBias.defined()) shift = shift + f32(fold.bnBias);
  // W * scale in float32, rounded once to the fold's dtype, written in its layout: one kernel and
  // no float32 copy of the weight (the first call makes every folded weight: Note [First call
  // breakdown]).
  at::Tensor weight =
      at::empty(fold.convWeight.sizes(),
                fold.convWeight.options().dtype(fold.dtype).memory_format(fold.weightFormat));
  at::mul_out(weight, fold.convWeight.detach(), scale.reshape({c, 1, 1, 1}));
  return {std::move(weight), shift.reshape({c, 1, 1}).to(fold.dtype).contiguous()};
}

// The IR dtype of an ATen dtype the fold kernel takes, or null.
std::optional<ir::DType> foldKernelType(at::ScalarType t) {
  if (t != at::kHalf && t != at::kBFloat16 && t != at::kFloat) return std::nullopt;
  return toIrDType(t);
}

// The fold kernel's text for `fold` (Note [Fold kernel]), or null when the kernel cannot serve it:
// not on CUDA (unless `anyDevice`), a dtype it lacks, per-channel params of mixed dtypes or not
// dense, no elements. `weightAs`/`paramsAs` replace the tensors' own dtypes (Note [Fold kernels
// compiled ahead]).
std::optional<codegen::KernelSource> foldKernelSource(
    const ConvBnFold& fold, bool anyDevice = false,
    std::optional<at::ScalarType> weightAs = std::nullopt,
    std::optional<at::ScalarType> paramsAs = std::nullopt) {
  const at::Tensor& w = fold.convWeight;
  if ((!anyDevice && !w.is_cuda()) || w.dim() != 4 || w.numel() == 0) return std::nullopt;
  const std::optional<ir::DType> weight = foldKernelType(weightAs.value_or(w.scalar_type()));
  const std::optional<ir::DType> out = foldKernelType(fold.dtype);
  const std::optional<ir::DType> params = foldKernelType(paramsAs.value_or(fold.var.scalar_type()));
  if (!weight || !out || !params) return std::nullopt;
  for (const at::Tensor* t : {&fold.convBias, &fold.mean, &fold.var, &fold.bnWeight, &fold.bnBias})
    if (t->defined() && (t->scalar_type() != fold.var.scalar_type() || !t->is_contiguous() ||
                         t->dim() != 1 || t->size(0) != w.size(0) || t->device() != w.device()))
      return std::nullopt;
  try {
    return codegen::emitConvBnFold(*weight, *params, *out, static_cast<float>(fold.eps));
  } catch (const Unsupported&) {
    return std::nullopt;
  }
}

// Note [Fold kernels compiled ahead]
// A session without a driver but with a target arch (kiln-warmup --arch on a machine without a
// GPU, for a container image) runs no fold kernel, but it puts the fold kernels a GPU process of
// this model will look up into the kernel cache, so that process's first call neither folds
// through ATen nor compiles (Note [Fold kernel]). The texts depend on the dtypes of the conv
// weight and the batchnorm params as that process will see them, which a CPU session cannot always
// know: a float16 model warmed up on the CPU has its weights in float32 here (Note [Tracing in
// float32] in jit/capture/capture.h), while a float32 model under precision fp16 has float32
// weights there too. So when the tensors here are float32 and the fold's output 16-bit, both
// variants are compiled: tiny kernels, at most a few per model (one per dtype mix and eps).
// Only in a session without background compiles (kiln-warmup's), and so at once: in any other
// process without a driver nothing would run them, and a background compile could be the
// process's first NVRTC compile, which exit does not wait for (Note [Background jobs at exit] in
// session.cpp: NVRTC registers its teardown during that compile). With KILN_FOLD_KERNEL on by
// default, CPU test processes crashed at exit so ("LLVM ERROR: out of memory").
std::vector<codegen::KernelSource> foldKernelsAhead(const ConvBnFold& fold) {
  std::vector<codegen::KernelSource> out;
  if (std::optional<codegen::KernelSource> own = foldKernelSource(fold, /*anyDevice=*/true))
    out.push_back(std::move(*own));
  const bool narrowed = fold.dtype == at::kHalf || fold.dtype == at::kBFloat16;
  if (narrowed &&
      (fold.convWeight.scalar_type() == at::kFloat || fold.var.scalar_type() == at::kFloat))
    if (std::optional<codegen::KernelSource> as16 =
            foldKernelSource(fold, /*anyDevice=*/true, fold.dtype, fold.dtype))
      out.push_back(std::move(*as16));
  return out;
}

// W' and shift' by kiln's fold kernel: one launch on the current stream.
FoldValues computeWithKernel(const ConvBnFold& fold, LoadedKernel& kernel) {
  c10::InferenceMode notInference(/*enabled=*/false);  // as computeWithAten
  const at::Tensor& w = fold.convWeight;
  const int64_t c = w.size(0);
  at::Tensor weight =
      at::empty(w.sizes(), w.options().dtype(fold.dtype).memory_format(fold.weightFormat));
  at::Tensor shift = at::empty({c, 1, 1}, w.options().dtype(fold.dtype));
  auto ptr = [](const at::Tensor& t) {
    return t.defined() ? const_cast<void*>(t.const_data_ptr()) : nullptr;
  };
  codegen::KilnArgs args{};
  args.ptr[0] = ptr(w);
  args.ptr[1] = ptr(fold.convBias);
  args.ptr[2] = ptr(fold.mean);
  args.ptr[3] = ptr(fold.var);
  args.ptr[4] = ptr(fold.bnWeight);
  args.ptr[5] = ptr(fold.bnBias);
  args.ptr[6] = weight.data_ptr();
  args.ptr[7] = shift.data_ptr();
  for (int d = 0; d < 4; ++d) {
    args.sizes[d] = w.size(d);
    args.strides[0][d] = w.stride(d);
    args.strides[6][d] = weight.stride(d);
  }
  args.numel = w.numel();
  const c10::cuda::CUDAGuard guard(w.device());
  const int device = w.device().index();
  codegen::LaunchDims dims;
  dims.blockX = codegen::kFoldBlock;
  dims.gridX = std::min<int64_t>((args.numel + dims.blockX - 1) / dims.blockX,
                                 int64_t{8} * std::max(1, kernel.multiprocessors(device)));
  kernel.launch(device, dims, args, at::cuda::getCurrentCUDAStream(device).stream());
  return {std::move(weight), std::move(shift)};
}

std::string uniqueName(std::string name, std::set<std::string>& taken) {
  std::string out = name;
  for (int k = 2; taken.count(out); ++k) out = fmt::format("{}#{}", name, k);
  taken.insert(out);
  return out;
}

// The cubin of fold kernel `src` from the session's kernel cache; when it is not there, compiled
// now in a session without background compiles (then returned), else on the background arena
// (null now).
std::optional<std::string> foldCubin(const Session& session, const std::string& arch,
                                     const codegen::KernelSource& src) {
  const cache::CacheKey key = kernelKey(src.source, arch);
  auto compile = [&session, key, src, arch](bool background) -> std::optional<std::string> {
    try {
      return cubinThroughCache(session, key, src.source, src.name, arch, "fold", background);
    } catch (const CompileError& e) {
      logOnce(LogLevel::kWarn, "compile." + src.name,
              fmt::format("kiln: fold kernel {} failed to compile; folding through ATen: {}\n{}",
                          src.name, e.what(), e.log()));
      return std::nullopt;
    }
  };
  std::optional<std::string> binary = session.kernelCache().get(key);
  if (binary) return binary;
  if (!session.options().backgroundCompile) return compile(/*background=*/false);
  session.runInBackground([&session, compile] {
    if (!session.backgroundStopping()) compile(/*background=*/true);
  });
  return std::nullopt;
}

// The fold kernel of `src` when its cubin is in the session's kernel cache, else null: this build
// folds through ATen, and the kernel is compiled on the background arena for later builds and
// processes, so a first call never waits for NVRTC (a session without background compiles, such
// as kiln-warmup's, compiles it now). Note [Fold kernel].
std::shared_ptr<LoadedKernel> foldKernel(const Session& session, const cuda::DriverApi& api,
                                         const std::string& arch,
                                         const codegen::KernelSource& src) {
  std::optional<std::string> binary = foldCubin(session, arch, src);
  if (binary) return std::make_shared<LoadedKernel>(api, src.name, std::move(*binary));
  return nullptr;
}

// W' and shift' of `fold`: by `kernel` when given (it must be the fold's own: Note [Fold kernel]),
// else by ATen.
FoldValues computeFold(const ConvBnFold& fold, LoadedKernel* kernel) {
  return kernel != nullptr ? computeWithKernel(fold, *kernel) : computeWithAten(fold);
}

}  // namespace

void overwriteSnapshot(const at::Tensor& dst, const at::Tensor& src) {
  c10::InferenceMode notInference(/*enabled=*/false);
  c10::NoGradGuard noGrad;
  if (dst.device() == src.device() && dst.sizes() == src.sizes())
    dst.copy_(src);
  else
    dst.set_data(src);
}

// ---------------------------------------------------------------------------------------------
// FoldedParams

FoldedParams::FoldedParams(std::vector<ConvBnFold> folds, const Session* session)
    : folds_(std::move(folds)), kernels_(folds_.size()) {
  // Note [Fold kernel]: one kernel per distinct text (dtypes and eps), from the kernel cache.
  const std::optional<std::string> arch = session != nullptr && session->options().foldKernel
                                              ? session->targetArch()
                                              : std::optional<std::string>();
  const cuda::DriverApi* api = session != nullptr ? session->driver() : nullptr;
  std::map<std::string, std::shared_ptr<LoadedKernel>> byName;
  for (size_t f = 0; f < folds_.size() && arch && api != nullptr; ++f) {
    std::optional<codegen::KernelSource> src = foldKernelSource(folds_[f]);
    if (!src) continue;
    auto [it, fresh] = byName.try_emplace(src->name);
    if (fresh) it->second = foldKernel(*session, *api, *arch, *src);
    kernels_[f] = it->second;
  }
  // Note [Fold kernels compiled ahead]: no driver, so nothing runs here, but a GPU process will.
  std::set<std::string> compiledAhead;
  const bool ahead = arch && api == nullptr && !session->options().backgroundCompile;
  for (size_t f = 0; f < folds_.size() && ahead; ++f)
    for (const codegen::KernelSource& src : foldKernelsAhead(folds_[f]))
      if (compiledAhead.insert(src.name).second) foldCubin(*session, *arch, src);
  for (const ConvBnFold& f : folds_) {
    firstSource_.push_back(sources_.size());
    for (const at::Tensor* t :
         {&f.convWeight, &f.convBias, &f.mean, &f.var, &f.bnWeight, &f.bnBias})
      if (t->defined()) sources_.push_back(t);
  }
  firstSource_.push_back(sources_.size());
  stamps_ = std::vector<Stamp>(sources_.size());
  for (size_t f = 0; f < folds_.size(); ++f) {
    std::vector<Reading> now = read(f);
    FoldValues v;
    if (kernels_[f] != nullptr) {
      try {
        v = computeWithKernel(folds_[f], *kernels_[f]);
      } catch (const std::exception& e) {  // a launch failure: ATen folds this one
        logOnce(LogLevel::kWarn, "fold-kernel." + kernels_[f]->name(),
                fmt::format("kiln: fold kernel {} failed; folding through ATen: {}",
                            kernels_[f]->name(), e.what()));
        kernels_[f] = nullptr;
      }
    }
    if (!v.weight.defined()) v = computeWithAten(folds_[f]);
    folds_[f].weight = std::move(v.weight);
    folds_[f].shift = std::move(v.shift);
    publish(f, now);
  }
}

std::vector<FoldedParams::Reading> FoldedParams::read(size_t f) const {
  std::vector<Reading> out;
  for (size_t i = firstSource_[f]; i < firstSource_[f + 1]; ++i)
    out.push_back({tensorVersion(*sources_[i]), sources_[i]->const_data_ptr()});
  return out;
}

void FoldedParams::publish(size_t f, const std::vector<Reading>& readings) const {
  for (size_t i = firstSource_[f]; i < firstSource_[f + 1]; ++i) {
    const Reading& r = readings[i - firstSource_[f]];
    stamps_[i].version.store(r.version, std::memory_order_release);
    stamps_[i].data.store(r.data, std::memory_order_release);
  }
}

bool FoldedParams::foldStale(size_t f) const {
  for (size_t i = firstSource_[f]; i < firstSource_[f + 1]; ++i) {
    const at::Tensor& t = *sources_[i];
    if (tensorVersion(t) != stamps_[i].version.load(std::memory_order_acquire) ||
        t.const_data_ptr() != stamps_[i].data.load(std::memory_order_acquire))
      return true;
  }
  return false;
}

bool FoldedParams::stale() const {
  for (size_t f = 0; f < folds_.size(); ++f)
    if (foldStale(f)) return true;
  return false;
}

int FoldedParams::refresh() const {
  if (!stale()) return 0;
  std::lock_guard<std::mutex> lock(refreshMutex_);
  int refreshed = 0;
  for (size_t f = 0; f < folds_.size(); ++f) {
    if (!foldStale(f)) continue;  // or another thread refreshed it meanwhile
    const ConvBnFold& fold = folds_[f];
    const bool cuda = fold.weight.is_cuda() || fold.convWeight.is_cuda();
    try {
      // Kernels already queued may read W' (and the sources may have been written on another
      // stream): let them finish, and publish the new stamps only once the new values landed.
      if (cuda) c10::cuda::device_synchronize();
      std::vector<Reading> now = read(f);
      // The sources may have moved or changed dtype since: the kernel only if it still fits.
      LoadedKernel* kernel = kernelFor(f);
      if (kernel != nullptr) {
        const std::optional<codegen::KernelSource> src = foldKernelSource(fold);
        if (!src || src->name != kernel->name()) kernel = nullptr;
      }
      FoldValues v = computeFold(fold, kernel);
      overwriteSnapshot(fold.weight, v.weight);
      overwriteSnapshot(fold.shift, v.shift);
      if (cuda) c10::cuda::device_synchronize();
      publish(f, now);
    } catch (const c10::Error& e) {
      throw UserError(fmt::format(
          "the batchnorm folded into param '{}' could not be recomputed after its tensors "
          "changed: {}",
          fold.weightName, e.what_without_backtrace()));
    }
    KILN_LOG_INFO("kiln: params changed in place; recomputed {} and {}", fold.weightName,
                  fold.shiftName);
    ++refreshed;
  }
  return refreshed;
}

size_t FoldedParams::kernelFolds() const {
  return static_cast<size_t>(
      std::count_if(kernels_.begin(), kernels_.end(), [](const auto& k) { return k != nullptr; }));
}

std::string FoldedParams::toString() const {
  std::string out;
  for (const ConvBnFold& f : folds_) {
    if (!out.empty()) out += ", ";
    out += fmt::format("{} + {}", f.weightName, f.shiftName);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The rewrite

std::shared_ptr<const FoldedParams> foldConvBatchNorm(CapturedGraph& captured,
                                                      at::MemoryFormat weightFormat,
                                                      const Session* session, DerivedPool* pool) {
  KILN_CHECK(captured.graph != nullptr, "foldConvBatchNorm: no graph");
  ir::Graph& g = *captured.graph;
  std::map<std::string, size_t> byName;
  for (size_t i = 0; i < captured.params.size() && i < captured.paramNames.size(); ++i)
    byName.emplace(captured.paramNames[i], i);
  auto tensorOf = [&](const Node* param) -> at::Tensor {
    if (param == nullptr) return {};
    auto it = byName.find(paramName(param));
    return it == byName.end() ? at::Tensor() : captured.params[it->second];
  };
  std::set<std::string> taken;
  for (const ir::Value* p : g.params()) taken.insert(p->producer()->attrs().getString("name"));
  for (const std::string& n : captured.paramNames) taken.insert(n);

  std::vector<Match> matches;
  std::vector<ConvBnFold> folds;
  for (const auto& n : g.nodes()) {
    if (n->kind() != OpKind::kConv2d) continue;
    std::optional<Match> m = matchAt(g, n.get());
    if (!m) continue;
    ConvBnFold f;
    f.convWeight = tensorOf(m->convWeight);
    f.convBias = tensorOf(m->convBias);
    f.mean = tensorOf(m->mean);
    f.var = tensorOf(m->var);
    f.bnWeight = tensorOf(m->bnWeight);
    f.bnBias = tensorOf(m->bnBias);
    f.eps = m->eps;
    f.weightFormat = weightFormat;
    f.dtype = toAtenDType(m->conv->output()->dtype());
    const at::Device device = f.convWeight.defined() ? f.convWeight.device() : at::Device(at::kCPU);
    bool usable = true;
    for (auto [param, t] : {std::pair{m->convWeight, &f.convWeight},
                            {m->convBias, &f.convBias},
                            {m->mean, &f.mean},
                            {m->var, &f.var},
                            {m->bnWeight, &f.bnWeight},
                            {m->bnBias, &f.bnBias}})
      if (param != nullptr && !usableSource(*t, param->output(), device)) usable = false;
    const std::string convName = stripSuffix(paramName(m->convWeight), ".weight");
    const std::string bnName = stripSuffix(paramName(m->var), ".running_var");
    if (!usable) {
      KILN_LOG_DEBUG(
          "kiln: not folding {} into {}: a tensor is not a dense floating tensor with a "
          "version counter on one device",
          bnName, convName);
      continue;
    }
    const std::string biasName = m->convBias ? paramName(m->convBias) : convName + ".bias";
    f.weightName = uniqueName(fmt::format("{}@{}.folded", paramName(m->convWeight), bnName), taken);
    f.shiftName = uniqueName(fmt::format("{}@{}.folded", biasName, bnName), taken);
    matches.push_back(*m);
    folds.push_back(std::move(f));
  }
  if (folds.empty()) return nullptr;

  // Note [Derived params shared by families]: what identifies these folds' values.
  std::string key;
  for (const ConvBnFold& f : folds) {
    key += fmt::format("{}:{}:{}|", f.eps, static_cast<int>(f.dtype),
                       static_cast<int>(f.weightFormat));
    for (const at::Tensor* t :
         {&f.convWeight, &f.convBias, &f.mean, &f.var, &f.bnWeight, &f.bnBias})
      key += fmt::format("{},", fmt::ptr(t->defined() ? t->unsafeGetTensorImpl() : nullptr));
    key += fmt::format("{}|{};", f.weightName, f.shiftName);
  }
  auto make = [&]() -> std::shared_ptr<const FoldedParams> {
    try {
      return std::make_shared<const FoldedParams>(std::move(folds), session);
    } catch (const c10::Error& e) {
      KILN_LOG_WARN("kiln: batchnorm not folded into convolutions: {}", e.what_without_backtrace());
      return nullptr;
    }
  };
  std::shared_ptr<const FoldedParams> result = pool != nullptr ? pool->folds(key, make) : make();
  if (result == nullptr) return nullptr;
  for (size_t i = 0; i < matches.size(); ++i) {
    const Match& m = matches[i];
    const ConvBnFold& f = result->folds()[i];
    const Value* y = m.conv->output();
    const int64_t c = y->shape()[1].constant();
    Value* w = g.addParam(f.weightName, m.conv->input(1)->type());
    Value* shift = g.addParam(f.shiftName, ir::TensorType{y->dtype(), {c, 1, 1}});
    captured.params.push_back(f.weight);
    captured.paramNames.push_back(f.weightName);
    captured.params.push_back(f.shift);
    captured.paramNames.push_back(f.shiftName);
    Node* conv = g.insertBefore(m.conv, OpKind::kConv2d, {m.conv->input(0), w}, m.conv->attrs());
    Node* add = g.insertBefore(m.last, OpKind::kAdd, {conv->output(), shift});
    KILN_CHECK(
        conv->output()->type() == y->type() && add->output()->type() == m.last->output()->type(),
        "folding {}: the rewrite changed the type {} to {}", f.weightName,
        m.last->output()->type().toString(), add->output()->type().toString());
    g.replaceAllUsesWith(m.last->output(), add->output());
    KILN_LOG_DEBUG("kiln: folded batchnorm into {} ({})", paramName(m.convWeight), f.weightName);
  }
  passes::eliminateDeadCode(g);  // the old convs and batchnorm chains
  return result;
}

}  // namespace kiln::jit

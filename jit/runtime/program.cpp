#include "jit/runtime/program.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <string_view>

#include <fmt/format.h>

#include "codegen/kernel_abi.h"
#include "jit/runtime/derived_params.h"
#include "jit/runtime/fold_conv_bn.h"
#include "jit/runtime/library_prewarm.h"
#include "jit/runtime/session.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/channels_last_pointwise.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/passes/pipeline.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

std::string describeStep(const partition::Step& step) {
  switch (step.kind) {
    case partition::StepKind::kFusion:
      return fmt::format("group #{}", step.group.id);
    case partition::StepKind::kLibrary:
      return fmt::format("library {}", ir::toString(step.node->kind()));
    case partition::StepKind::kView:
      return fmt::format("view {}", ir::toString(step.node->kind()));
    case partition::StepKind::kEager:
      // The ATen op it runs (the first call's breakdown names the op, not "eager eager").
      if (step.node->kind() == ir::OpKind::kEager && step.node->attrs().has("schema"))
        return fmt::format("eager {}", step.node->attrs().getString("schema"));
      return fmt::format("eager {}", ir::toString(step.node->kind()));
  }
  return "?";
}

namespace {

// The captured params by name.
std::map<std::string, at::Tensor> tensorsByName(const CapturedGraph& captured) {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < captured.params.size() && i < captured.paramNames.size(); ++i)
    out[captured.paramNames[i]] = captured.params[i];
  return out;
}

}  // namespace

std::shared_ptr<const Program> Program::build(CapturedGraph captured, const Session& session,
                                              const QuantSettings* quant,
                                              std::shared_ptr<DerivedPool> derived) {
  std::shared_ptr<Program> program(new Program());
  Program& p = *program;
  // Note [First call breakdown]: the parts of the passes, at debug level.
  using Clock = std::chrono::steady_clock;
  Clock::time_point mark = Clock::now();
  std::string parts;
  auto lap = [&](std::string_view what) {
    const Clock::time_point now = Clock::now();
    parts += fmt::format("{}{} {:.1f} ms", parts.empty() ? "" : ", ", what,
                         std::chrono::duration<double, std::milli>(now - mark).count());
    mark = now;
  };
  p.captured_ = std::move(captured);
  p.convLayout_ = chooseConvLayout(p.captured_, session.options().convLayout);
  lap("conv layout");
  // Needs the param tensors, so here rather than among the passes; adds params.
  p.folds_ = foldConvBatchNorm(
      p.captured_,
      p.convLayout_.channelsLast ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous,
      &session, derived.get());
  lap("conv-bn folding");
  ir::Graph& graph = *p.captured_.graph;
  passes::PassOptions passOptions;
  passOptions.geluGemmEpilogue = kilnGemmTarget(session);
  passes::runDefaultPasses(graph, passOptions);
  // Note [Pointwise ops in channels-last programs]: after the epilogues took what cuDNN applies.
  if (p.convLayout_.channelsLast && passes::channelsLastPointwise(graph)) {
    passes::eliminateDeadCode(graph);
    ir::verify(graph);
  }
  lap("graph passes");
  // Note [Merged linears]: after the passes (epilogues are in place, which keep a linear apart),
  // not with quantisation, which calibrates and stores each linear by its own weight.
  if (session.options().mergeLinears && quant == nullptr) p.mergeLinears(derived);
  lap("merged linears");
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
  lap("partition");

  // Value table layout and constants/params bound once.
  int maxId = -1;
  for (const auto& n : graph.nodes())
    for (const ir::Value* v : n->outputs()) maxId = std::max(maxId, v->id());
  p.numValues_ = maxId + 1;
  p.constantValues_.resize(static_cast<size_t>(p.numValues_));
  const std::map<std::string, at::Tensor> paramsByName = tensorsByName(p.captured_);
  for (const auto& n : graph.nodes()) {
    if (n->kind() == ir::OpKind::kConstant) {
      p.constantValues_[static_cast<size_t>(n->output()->id())] =
          makeScalarOperand(n->attrs().getDouble("value"), n->output()->dtype());
    } else if (n->kind() == ir::OpKind::kParam) {
      // A param nothing reads (a merged linear's own weight) is not bound: a float32 one would
      // otherwise be converted for nothing.
      if (n->output()->uses().empty() && !graph.isGraphOutput(n->output())) continue;
      const std::string& name = n->attrs().getString("name");
      auto it = paramsByName.find(name);
      KILN_CHECK(it != paramsByName.end(), "param '{}' has no captured tensor", name);
      at::Tensor t = it->second;
      const at::ScalarType want = toAtenDType(n->output()->dtype());
      if (t.scalar_type() != want) {
        // Note [Derived params are snapshots]: a float32 module tensor read in float16/bfloat16.
        KILN_CHECK(t.scalar_type() == at::kFloat && (want == at::kHalf || want == at::kBFloat16),
                   "param '{}' is {} in the module but {} in the graph", name,
                   c10::toString(t.scalar_type()), c10::toString(want));
        if (p.retyped_ == nullptr) p.retyped_ = std::make_shared<DerivedParams>(derived);
        t = p.retyped_->add(name, {t}, want);
      }
      p.constantValues_[static_cast<size_t>(n->output()->id())] = t;
    }
  }
  // Note [Buffers with known contents]: read once more what the graph assumes, and stamp it.
  for (const ContentAssumption& a : p.captured_.contents) {
    auto it = paramsByName.find(a.param);
    KILN_CHECK(it != paramsByName.end(), "content assumption on '{}', which is no captured param",
               a.param);
    if (!holdsContent(it->second, a))
      throw Unsupported(fmt::format("the graph assumes {}, which no longer holds", describe(a)));
    auto stamp = std::make_unique<ContentStamp>();
    stamp->tensor = it->second;
    stamp->what = a;
    stamp->version.store(tensorVersion(it->second));
    stamp->data.store(it->second.const_data_ptr());
    p.contentStamps_.push_back(std::move(stamp));
  }
  for (const ir::Value* v : graph.outputs()) p.outputIds_.push_back(v->id());
  p.graphInputs_ = graph.inputs();

  // Step bookkeeping: which values each step reads and writes, and where each value dies.
  p.runtime_.resize(p.partition_.steps.size());
  std::vector<int> lastUse(static_cast<size_t>(p.numValues_), -1);
  for (size_t s = 0; s < p.partition_.steps.size(); ++s) {
    const partition::Step& step = p.partition_.steps[s];
    StepRuntime& rt = p.runtime_[s];
    rt.rangeName = "kiln::" + describeStep(step);  // Note [Profiler ranges]
    if (step.kind == partition::StepKind::kFusion) {
      rt.kernel = static_cast<int>(p.groups_.size());
      p.groups_.push_back(&step.group);
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
      const std::string activation =
          node.attrs().has("activation") ? node.attrs().getString("activation") : "";
      const ir::DType dtype = node.outputs().empty() ? ir::DType::kFloat32 : node.output()->dtype();
      if (node.kind() == ir::OpKind::kLinear && activation == "gelu") {
        rt.gemm = p.kilnGemmOf(session, dtype, codegen::GemmActivation::kGeluErf,
                               node.inputs().size() == 3);
        rt.loadingGemm = rt.gemm;
      } else if (node.kind() == ir::OpKind::kLinear && activation.empty() &&
                 (dtype == ir::DType::kFloat16 || dtype == ir::DType::kBFloat16) &&
                 session.options().firstCallGemm && kilnGemmTarget(session)) {
        // Note [Kiln GEMM while cuBLAS loads].
        rt.loadingGemm =
            p.kilnGemmOf(session, dtype, codegen::GemmActivation::kNone, node.inputs().size() == 3);
      }
      if (!session.options().firstCallGemm) rt.loadingGemm = nullptr;
    }
    for (int id : rt.inputIds) lastUse[static_cast<size_t>(id)] = static_cast<int>(s);
  }
  for (int id : p.outputIds_) lastUse[static_cast<size_t>(id)] = -2;  // never released
  for (int id = 0; id < p.numValues_; ++id) {
    int s = lastUse[static_cast<size_t>(id)];
    if (s >= 0 && !p.constantValues_[static_cast<size_t>(id)].defined())
      p.runtime_[static_cast<size_t>(s)].release.push_back(id);
  }

  lap("bookkeeping");
  p.markShapeOnlySteps(session.options().shapeOnlyCache);
  p.placeCatOperands();
  if (quant != nullptr) p.quantizeLinears(*quant, session);
  lap("shape-only steps and quantisation");
  KILN_LOG_DEBUG("kiln: program built: {}", parts);

  const CapturedGraph* cap = &p.captured_;
  p.eager_ = [cap](const ir::Node& node, const std::vector<at::Tensor>& in,
                   const std::vector<int64_t>& symbols) {
    return runEagerNode(*cap, node, in, symbols);
  };
  return program;
}

// Note [Shape-only steps].
void Program::markShapeOnlySteps(bool allowed) {
  ShapeOnly& so = shapeOnly_;
  const size_t numSteps = partition_.steps.size();
  so.step.assign(numSteps, false);
  so.frontierOf.assign(static_cast<size_t>(numValues_), -1);
  if (!allowed) {
    so.why = "off (KILN_SHAPE_CACHE=0)";
    return;
  }
  const ir::Graph& g = graph();
  std::vector<bool> fromSizes(static_cast<size_t>(numValues_), false);
  std::vector<bool> isParam(static_cast<size_t>(numValues_), false);
  for (const auto& n : g.nodes()) {
    if (n->kind() == ir::OpKind::kConstant || n->kind() == ir::OpKind::kParam)
      fromSizes[static_cast<size_t>(n->output()->id())] = true;
    if (n->kind() == ir::OpKind::kParam) isParam[static_cast<size_t>(n->output()->id())] = true;
    if (n->kind() != ir::OpKind::kEager) continue;
    if (eagerCallMutates(captured_, n->attrs().getInt("eager_id"))) {
      so.why = fmt::format("{} writes into its arguments", n->attrs().getString("schema"));
      return;
    }
  }
  auto random = [](const partition::Step& step) {
    if (step.node == nullptr || step.node->kind() != ir::OpKind::kEager) return false;
    const std::string& name = step.node->attrs().getString("schema");
    for (std::string_view word : {"rand", "normal", "bernoulli", "dropout", "multinomial",
                                  "uniform", "exponential", "poisson", "cauchy", "geometric"})
      if (name.find(word) != std::string::npos) return true;
    return false;
  };
  std::vector<bool> paramRead(static_cast<size_t>(numValues_), false);
  for (size_t s = 0; s < numSteps; ++s) {
    const StepRuntime& rt = runtime_[s];
    bool only = !random(partition_.steps[s]);
    for (int id : rt.inputIds) only = only && fromSizes[static_cast<size_t>(id)];
    so.step[s] = only;
    if (!only) continue;
    ++so.steps;
    for (int id : rt.outputIds) fromSizes[static_cast<size_t>(id)] = true;
    for (int id : rt.inputIds)
      if (isParam[static_cast<size_t>(id)]) paramRead[static_cast<size_t>(id)] = true;
  }
  if (so.steps == 0) {
    so.why = "no step computes from sizes alone";
    return;
  }
  for (int id : outputIds_)
    if (fromSizes[static_cast<size_t>(id)] && !constantValues_[static_cast<size_t>(id)].defined()) {
      so.why = "a graph output is computed from sizes alone";
      so.step.assign(numSteps, false);
      so.steps = 0;
      return;
    }
  for (size_t s = 0; s < numSteps; ++s) {
    if (so.step[s]) continue;
    for (int id : runtime_[s].inputIds) {
      const size_t v = static_cast<size_t>(id);
      if (!fromSizes[v] || constantValues_[v].defined() || so.frontierOf[v] >= 0) continue;
      so.frontierOf[v] = static_cast<int>(so.frontier.size());
      so.frontier.push_back(id);
    }
  }
  for (int id = 0; id < numValues_; ++id)
    if (paramRead[static_cast<size_t>(id)]) so.params.push_back(id);
  so.enabled = true;
}

namespace {

// Note [Quantized linears]: what names the params' values in a calibration record's key: the
// float32 norm of every floating param, one fused reduction per device, read back once.
std::string paramFingerprint(const std::vector<at::Tensor>& params) {
  std::map<std::string, std::vector<at::Tensor>> byDevice;
  for (const at::Tensor& t : params)
    if (t.defined() && at::isFloatingType(t.scalar_type()) && t.numel() > 0)
      byDevice[t.device().str()].push_back(t.detach());
  std::string out;
  for (auto& [device, tensors] : byDevice) {
    std::vector<at::Tensor> norms = at::_foreach_norm(tensors, 2, at::kFloat);
    const at::Tensor host = at::stack(norms).cpu();
    const float* v = host.const_data_ptr<float>();
    out += device;
    for (int64_t i = 0; i < host.numel(); ++i) out += fmt::format(" {:a}", v[i]);
    out += '\n';
  }
  return out;
}

}  // namespace

void Program::quantizeLinears(const QuantSettings& settings, const Session& session) {
  const ir::Graph& g = graph();
  std::vector<at::Tensor> params;
  for (const auto& n : g.nodes())
    if (n->kind() == ir::OpKind::kParam)
      params.push_back(constantValues_[static_cast<size_t>(n->output()->id())]);
  cache::KernelCache* cache = nullptr;
  std::string signature;
  try {
    cache = &session.kernelCache();
    signature = fmt::format("quantised linears {}\n{}\n{}", toString(settings.format),
                            paramFingerprint(params), ir::print(g));
  } catch (const std::exception& e) {
    KILN_LOG_WARN("kiln: calibration records are off for this program: {}", e.what());
    cache = nullptr;
  }
  int index = 0;
  for (size_t s = 0; s < partition_.steps.size(); ++s) {
    const partition::Step& step = partition_.steps[s];
    if (step.node == nullptr) continue;
    const ir::Node& node = *step.node;
    // linear(x, w [N, K], b) and addmm(b, x, w [K, N]): GPT-2's Conv1D (Note [Linear from addmm]).
    const bool addmm = node.kind() == ir::OpKind::kAddmm;
    if (node.kind() != ir::OpKind::kLinear && !addmm) continue;
    const ir::Value* wValue = node.input(addmm ? 2 : 1);
    const ir::Node* wNode = wValue->producer();
    std::string label = fmt::format("{} {} (step {})", addmm ? "addmm" : "linear", index, s);
    if (wNode->kind() != ir::OpKind::kParam) {
      quantSkipped_.push_back(label + ": its weight is computed, not a param");
      continue;
    }
    label = fmt::format("{} (step {})", wNode->attrs().getString("name"), s);
    at::Tensor w = constantValues_[static_cast<size_t>(wValue->id())];
    if (addmm) {
      const ir::Attrs& a = node.attrs();
      const bool unit = (!a.has("alpha") || a.getDouble("alpha") == 1.0) &&
                        (!a.has("beta") || a.getDouble("beta") == 1.0);
      const at::Tensor& b = constantValues_[static_cast<size_t>(node.input(0)->id())];
      if (!unit || !b.defined() || b.dim() != 1) {
        quantSkipped_.push_back(label + ": an addmm other than x w + bias (vector)");
        continue;
      }
      if (w.dim() == 2) w = w.t();
    }
    if (std::optional<std::string> why = quantizeBlocker(settings.format, w)) {
      quantSkipped_.push_back(label + ": " + *why);
      continue;
    }
    const std::string key = fmt::format("{}\nlinear {}", signature, index++);
    std::function<void(const std::string&)> store;
    if (cache != nullptr)
      store = [cache, key](const std::string& record) {
        try {
          cache->putTuningRecord(key, "", "any", codegen::kCodegenVersion, record);
        } catch (const std::exception& e) {
          KILN_LOG_WARN("kiln: storing a calibration record failed: {}", e.what());
        }
      };
    auto q = std::make_shared<QuantizedLinear>(settings, label, std::move(store));
    if (cache != nullptr) {
      try {
        if (std::optional<std::string> rec =
                cache->getTuningRecord(key, "", "any", codegen::kCodegenVersion);
            rec && !q->restore(*rec))
          KILN_LOG_WARN("kiln: {}: ignoring a calibration record this build did not write", label);
      } catch (const std::exception& e) {
        KILN_LOG_WARN("kiln: reading a calibration record failed: {}", e.what());
      }
    }
    runtime_[s].quant = std::move(q);
  }
}

std::vector<QuantizedLinear::Report> Program::quantReports() const {
  std::vector<QuantizedLinear::Report> out;
  for (const StepRuntime& rt : runtime_)
    if (rt.quant != nullptr) out.push_back(rt.quant->report());
  return out;
}

bool Program::calibrating() const {
  for (const StepRuntime& rt : runtime_)
    if (rt.quant != nullptr && rt.quant->calibrating()) return true;
  return false;
}

std::shared_ptr<const KilnGemm> Program::kilnGemmOf(const Session& session, ir::DType dtype,
                                                    codegen::GemmActivation activation,
                                                    bool hasBias) {
  for (const StepRuntime& rt : runtime_)  // one kernel per spec
    for (const std::shared_ptr<const KilnGemm>& g : {rt.gemm, rt.loadingGemm})
      if (g != nullptr && g->spec().dtype == dtype && g->spec().activation == activation &&
          g->spec().hasBias == hasBias)
        return g;
  codegen::GemmSpec spec;
  spec.dtype = dtype;
  spec.activation = activation;
  spec.hasBias = hasBias;
  // A plain linear's kernel is only a stand-in (Note [Kiln GEMM while cuBLAS loads]).
  return std::make_shared<const KilnGemm>(session, spec,
                                          /*standIn=*/activation == codegen::GemmActivation::kNone);
}

const KilnGemm* Program::gemmFor(size_t s, int device, bool kilnGemms) const {
  const StepRuntime& rt = runtime_[s];
  if (rt.gemm != nullptr && kilnGemms) return rt.gemm.get();
  if (rt.loadingGemm != nullptr && rt.loadingGemm->hasKernel() && gemmLibraryLoading(device))
    return rt.loadingGemm.get();
  return nullptr;
}

bool Program::standInGemmsRunning(int device) const {
  if (!gemmLibraryLoading(device)) return false;
  for (const StepRuntime& rt : runtime_)
    if (rt.loadingGemm != nullptr && rt.loadingGemm->hasKernel()) return true;
  return false;
}

size_t Program::kilnGemmSteps() const {
  size_t n = 0;
  for (const StepRuntime& rt : runtime_) n += rt.gemm != nullptr && rt.gemm->hasKernel();
  return n;
}

void Program::mergeLinears(const std::shared_ptr<DerivedPool>& derived) {
  const std::map<std::string, at::Tensor> byName = tensorsByName(captured_);
  // Tensors at::cat can join: present, floating, dense, on one device, of one rank.
  auto accept = [&](const std::vector<std::string>& names) {
    const at::Tensor* first = nullptr;
    for (const std::string& name : names) {
      auto it = byName.find(name);
      if (it == byName.end()) return false;
      const at::Tensor& t = it->second;
      if (!t.defined() || !t.is_floating_point() || t.layout() != at::kStrided) return false;
      if (first != nullptr && (t.device() != first->device() || t.dim() != first->dim()))
        return false;
      if (first == nullptr) first = &t;
    }
    return true;
  };
  ir::Graph& graph = *captured_.graph;
  mergedLinears_ = passes::mergeSiblingLinears(graph, captured_.paramNames, accept);
  if (mergedLinears_.groups == 0) return;
  merged_ = std::make_shared<DerivedParams>(derived);
  for (const passes::MergedParam& m : mergedLinears_.params) {
    std::vector<at::Tensor> sources;
    for (const std::string& name : m.sources) sources.push_back(byName.at(name));
    captured_.params.push_back(merged_->add(m.name, std::move(sources), toAtenDType(m.dtype)));
    captured_.paramNames.push_back(m.name);
  }
  KILN_LOG_DEBUG("kiln: merged {} linears into {} ({:.1f} MiB of weights copied)",
                 mergedLinears_.linears, mergedLinears_.groups,
                 static_cast<double>(mergedLinears_.bytes) / (1 << 20));
}

// Note [Cats written in place].
void Program::placeCatOperands() {
  const ir::Graph& graph = *captured_.graph;
  const std::vector<partition::Step>& steps = partition_.steps;
  auto shapeOnlyStep = [&](size_t s) { return s < shapeOnly_.step.size() && shapeOnly_.step[s]; };
  std::vector<int> fusionStepOf(static_cast<size_t>(numValues_), -1);
  for (size_t s = 0; s < steps.size(); ++s)
    if (steps[s].kind == partition::StepKind::kFusion)
      for (const ir::Value* v : steps[s].group.outputs)
        fusionStepOf[static_cast<size_t>(v->id())] = static_cast<int>(s);
  for (size_t s = 0; s < steps.size(); ++s) {
    const partition::Step& step = steps[s];
    if (step.kind != partition::StepKind::kView || step.node->kind() != ir::OpKind::kCat ||
        shapeOnlyStep(s))
      continue;
    const ir::Node& cat = *step.node;
    const ir::Value* out = cat.output();
    int64_t dim = cat.attrs().getInt("dim");
    if (dim < 0) dim += out->rank();
    ir::Shape before;
    for (const ir::Value* v : cat.inputs()) {
      const int producer = fusionStepOf[static_cast<size_t>(v->id())];
      if (producer >= 0 && !shapeOnlyStep(static_cast<size_t>(producer)) && v->uses().size() == 1 &&
          !graph.isGraphOutput(v) && v->dtype() == out->dtype()) {
        if (catSlotOf_.empty()) {
          catSlotOf_.assign(static_cast<size_t>(numValues_), -1);
          catInPlace_.assign(steps.size(), false);
        }
        catSlotOf_[static_cast<size_t>(v->id())] = static_cast<int>(catSlots_.size());
        ir::Shape dims = out->shape();
        dims.insert(dims.end(), before.begin(), before.end());
        dims.push_back(v->shape()[static_cast<size_t>(dim)]);
        catSlots_.push_back({out->id(), dim, out->dtype(), std::move(dims), out->shape().size()});
        catInPlace_[s] = true;
      }
      before.push_back(v->shape()[static_cast<size_t>(dim)]);
    }
  }
}

std::vector<at::Tensor> Program::derivedTensors() const {
  std::vector<at::Tensor> out;
  for (const DerivedParams* d : {retyped_.get(), merged_.get()})
    if (d != nullptr)
      for (at::Tensor& t : d->values()) out.push_back(std::move(t));
  if (folds_ != nullptr)
    for (const ConvBnFold& f : folds_->folds()) {
      out.push_back(f.weight);
      out.push_back(f.shift);
    }
  return out;
}

std::optional<std::string> Program::brokenContent() const {
  auto current = [](const ContentStamp& c) {
    return c.version.load(std::memory_order_acquire) == tensorVersion(c.tensor) &&
           c.data.load(std::memory_order_acquire) == c.tensor.const_data_ptr();
  };
  bool allCurrent = true;
  for (const auto& c : contentStamps_) allCurrent = allCurrent && current(*c);
  if (!allCurrent) {
    // Written in place or moved since the last reading: read it again (a copy to the host).
    const std::lock_guard<std::mutex> lock(contentMutex_);
    for (const auto& c : contentStamps_) {
      if (current(*c)) continue;
      const int64_t version = tensorVersion(c->tensor);
      const void* data = c->tensor.const_data_ptr();
      c->holds.store(holdsContent(c->tensor, c->what), std::memory_order_release);
      c->version.store(version, std::memory_order_release);
      c->data.store(data, std::memory_order_release);
    }
  }
  for (const auto& c : contentStamps_)
    if (!c->holds.load(std::memory_order_acquire))
      return fmt::format("the graph assumes {}, which no longer holds", describe(c->what));
  return std::nullopt;
}

void Program::refreshSnapshots() const {
  if (folds_ != nullptr) folds_->refresh();  // Note [Folded params are snapshots]
  if (retyped_ != nullptr) retyped_->refresh();
  if (merged_ != nullptr) merged_->refresh();
}

bool Program::foldedParamsStale() const {
  return folds_ != nullptr && folds_->stale();
}

}  // namespace kiln::jit

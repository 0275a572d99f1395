#include "jit/runtime/program.h"

#include <algorithm>
#include <map>
#include <string_view>

#include <fmt/format.h>

#include "jit/runtime/fold_conv_bn.h"
#include "jit/runtime/retyped_params.h"
#include "jit/runtime/session.h"
#include "src/passes/pipeline.h"
#include "src/support/error.h"

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
      return fmt::format("eager {}", ir::toString(step.node->kind()));
  }
  return "?";
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
      at::Tensor t = it->second;
      const at::ScalarType want = toAtenDType(n->output()->dtype());
      if (t.scalar_type() != want) {
        // Note [Retyped params are snapshots]: a float32 module tensor read in float16/bfloat16.
        KILN_CHECK(t.scalar_type() == at::kFloat && (want == at::kHalf || want == at::kBFloat16),
                   "param '{}' is {} in the module but {} in the graph", name,
                   c10::toString(t.scalar_type()), c10::toString(want));
        if (p.retyped_ == nullptr) p.retyped_ = std::make_shared<RetypedParams>();
        t = p.retyped_->add(name, t, want);
      }
      p.constantValues_[static_cast<size_t>(n->output()->id())] = t;
    }
  }
  for (const ir::Value* v : graph.outputs()) p.outputIds_.push_back(v->id());

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

  p.markShapeOnlySteps(session.options().shapeOnlyCache);

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

size_t Program::kilnGemmSteps() const {
  size_t n = 0;
  for (const StepRuntime& rt : runtime_) n += rt.gemm != nullptr && rt.gemm->hasKernel();
  return n;
}

bool Program::foldedParamsStale() const {
  return folds_ != nullptr && folds_->stale();
}

}  // namespace kiln::jit

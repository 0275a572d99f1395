// Tracing entry points, eager node execution and the capture report.
#include "jit/capture/capture.h"

#include <cmath>
#include <limits>
#include <unordered_set>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/nn/module.h>

#include "jit/capture/lower.h"
#include "jit/capture/script_graph.h"
#include "jit/eval/aten_eval.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

CapturedGraph::CapturedGraph() = default;
CapturedGraph::CapturedGraph(CapturedGraph&&) noexcept = default;
CapturedGraph& CapturedGraph::operator=(CapturedGraph&&) noexcept = default;
CapturedGraph::~CapturedGraph() = default;

// Note [Buffers with known contents].
std::optional<ContentAssumption> knownContent(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0 || t.numel() > kMaxKnownContentNumel ||
      !at::isIntegralType(t.scalar_type(), /*includeBool=*/false))
    return std::nullopt;
  const at::Tensor flat = t.detach().reshape({-1}).to(at::kCPU, at::kLong).contiguous();
  const int64_t* v = flat.const_data_ptr<int64_t>();
  const int64_t n = flat.numel();
  ContentAssumption a;
  a.first = v[0];
  a.numel = n;
  bool fill = true, arange = true;
  for (int64_t i = 1; i < n && (fill || arange); ++i) {
    fill = fill && v[i] == v[0];
    arange = arange && v[i] == v[i - 1] + 1;
  }
  if (fill) {
    a.kind = ContentAssumption::Kind::kFill;  // one element: a fill (and an arange)
    return a;
  }
  if (!arange) return std::nullopt;
  a.kind = ContentAssumption::Kind::kArange;
  return a;
}

bool holdsContent(const at::Tensor& t, const ContentAssumption& a) {
  if (!t.defined() || t.numel() != a.numel) return false;
  std::optional<ContentAssumption> now = knownContent(t);
  if (!now || now->first != a.first) return false;
  // A single element is both; the assumption's kind is what counts.
  return now->kind == a.kind || a.numel == 1;
}

std::string describe(const ContentAssumption& a) {
  return a.kind == ContentAssumption::Kind::kFill
             ? fmt::format("{} holds {} {} times", a.param, a.first, a.numel)
             : fmt::format("{} holds arange({}, {})", a.param, a.first, a.first + a.numel);
}

std::string CapturedGraph::report() const {
  std::string out;
  size_t nodes = 0;
  if (graph) {
    for (const auto& n : graph->nodes()) {
      auto c = n->category();
      if (c != ir::OpCategory::kBoundary) ++nodes;
    }
  }
  out += fmt::format("captured {} ops ({} eager), {} inputs, {} params, {} outputs\n", nodes,
                     eagerNodes.size(), inputNames.size(), params.size(), outputs.count);
  if (graph && graph->numSymbols() > 0) {
    std::vector<std::string> syms;
    for (int s = 0; s < graph->numSymbols(); ++s) {
      syms.push_back(fmt::format("{}={}", graph->symbolName(s),
                                 s < static_cast<int>(exampleSymbolValues.size())
                                     ? exampleSymbolValues[static_cast<size_t>(s)]
                                     : -1));
    }
    out += fmt::format("symbols (example values): {}\n", fmt::join(syms, ", "));
  }
  if (unsupportedOps.empty()) {
    out += "unsupported ops: none\n";
  } else {
    out += "unsupported ops (run eagerly):\n";
    for (size_t i = 0; i < unsupportedOps.size(); ++i) {
      const std::string& op = unsupportedOps[i];
      size_t count = 0;
      for (const auto& call : eagerCalls) count += call->name == op ? 1 : 0;
      out += fmt::format("  {} x{}: {}\n", op, count,
                         i < unsupportedReasons.size() ? unsupportedReasons[i] : "");
    }
  }
  for (const SizeAssumption& a : assumptions) out += fmt::format("assumes {}\n", a.what);
  for (const ContentAssumption& a : contents) out += fmt::format("assumes {}\n", describe(a));
  return out;
}

namespace {

// The request's common part: options checked, inputs unpacked, names given.
LowerRequest requestFor(ModuleTensors params, const std::vector<c10::IValue>& exampleInputs,
                        const CaptureOptions& options, CapturedGraph& result) {
  KILN_USER_CHECK(!options.retypeTo || *options.retypeTo == ir::DType::kFloat16 ||
                      *options.retypeTo == ir::DType::kBFloat16,
                  "capture: retypeTo must be float16 or bfloat16, got {}",
                  ir::toString(*options.retypeTo));
  KILN_USER_CHECK(!options.castAtBoundary || options.retypeTo,
                  "capture: castAtBoundary needs retypeTo");
  result.retypedTo = options.retypeTo;
  LowerRequest req;
  req.options = options;
  for (size_t k = 0; k < exampleInputs.size(); ++k) {
    KILN_USER_CHECK(exampleInputs[k].isTensor(), "capture: input {}: expected a tensor, got {}", k,
                    exampleInputs[k].tagKind());
    req.inputs.push_back(exampleInputs[k].toTensor());
  }
  for (size_t k = 0; k < req.inputs.size(); ++k) {
    result.inputNames.push_back(k < options.inputNames.size() ? options.inputNames[k]
                                                              : fmt::format("input{}", k));
  }
  req.params = std::move(params.tensors);
  req.paramNames = std::move(params.names);
  return req;
}

CapturedGraph captureWith(ModuleTensors params, const ForwardFn& forward,
                          const std::vector<c10::IValue>& exampleInputs,
                          const CaptureOptions& options) {
  CapturedGraph result;
  LowerRequest req = requestFor(std::move(params), exampleInputs, options, result);
  // Params go in as leading trace inputs, so the module's own tensors map to graph inputs
  // (Note [Params by reference]) instead of being baked in as constants.
  torch::jit::Stack stack;
  for (const at::Tensor& p : req.params) stack.emplace_back(p);
  for (const at::Tensor& x : req.inputs) stack.emplace_back(x);
  const size_t numParams = req.params.size();
  // Note [Modules that write their inputs]: versions before the trace.
  // (Inference tensors have no version counter; in-place writes into them go unseen.)
  std::vector<int64_t> versions;
  for (const at::Tensor& t : req.params) versions.push_back(tensorVersion(t));
  for (const at::Tensor& t : req.inputs) versions.push_back(tensorVersion(t));
  // Copies of the module's small tensors (buffers such as batchnorm statistics and counters), to
  // undo a write the trace made: the module then runs as itself, and writes them once a call.
  constexpr size_t kSnapshotBytes = size_t{1} << 20;
  std::vector<at::Tensor> snapshots(req.params.size());
  for (size_t k = 0; k < req.params.size(); ++k) {
    const at::Tensor& t = req.params[k];
    if (!t.is_inference() && t.defined() && t.nbytes() <= kSnapshotBytes)
      snapshots[k] = t.detach().clone();
  }
  std::shared_ptr<torch::jit::tracer::TracingState> state;
  try {
    at::NoGradGuard noGrad;
    // The TorchScript executor's optimizations (decompositions, fusion groups) would change
    // which ATen ops the tracer sees; run TorchScript modules as written.
    torch::jit::GraphOptimizerEnabledGuard noOptimize(false);
    state =
        torch::jit::tracer::trace(
            stack,
            [&](torch::jit::Stack in) -> torch::jit::Stack {
              std::vector<c10::IValue> args(in.begin() + static_cast<long>(numParams), in.end());
              return {forward(args)};
            },
            [](const at::Tensor&) { return std::string(); }, /*strict=*/false,
            /*force_outplace=*/true)
            .first;
  } catch (const c10::Error& e) {
    // The module itself may have failed on these inputs; optimize() then runs it eagerly, which
    // reports the module's own error (Note [Never worse than eager] in optimize.h).
    throw Unsupported(
        fmt::format("capture: tracing the module failed: {}", e.what_without_backtrace()));
  }
  // Note [Modules that write their inputs]
  // A plan is a function of its inputs: it writes neither them nor the module's tensors. A module
  // that writes into either in place (x.add_(1) on an input, a buffer updated by forward) has an
  // effect the plan would drop, and the tracer's out-of-place rewrite hides it; such a module runs
  // as itself. optimize() traces a copy of the call's inputs, and the module's tensors up to 1 MiB
  // that the trace wrote are restored from copies taken before it (a larger one stays written,
  // and the reason says so), so each call sees each write once, from the module.
  std::string written;
  for (size_t k = 0; k < versions.size(); ++k) {
    const at::Tensor& t = k < numParams ? req.params[k] : req.inputs[k - numParams];
    if (tensorVersion(t) == versions[k]) continue;
    if (k >= numParams) {
      written = fmt::format("the module writes into its input {} in place", k - numParams);
      continue;
    }
    bool restored = false;
    if (snapshots[k].defined()) {
      at::NoGradGuard noGrad;
      t.detach().copy_(snapshots[k]);
      restored = true;
    }
    if (written.empty())
      written = fmt::format("the module writes into its tensor '{}' in place when it runs{}",
                            req.paramNames[k],
                            restored ? "" : " (the capture's write was not undone: over 1 MiB)");
  }
  if (!written.empty()) throw Unsupported(written);
  std::shared_ptr<torch::jit::Graph> traced = state->graph;
  try {
    torch::jit::Inline(*traced);
    torch::jit::EliminateDeadCode(traced);  // runs TorchScript's alias analysis, which can throw
  } catch (const c10::Error& e) {
    throw Unsupported(fmt::format("capture: TorchScript's passes rejected the trace: {}",
                                  e.what_without_backtrace()));
  }
  req.traced = traced;
  result.traced = traced;
  lowerTrace(req, result);
  return result;
}

}  // namespace

CapturedGraph capture(torch::jit::Module& module, const std::vector<c10::IValue>& exampleInputs,
                      const CaptureOptions& options) {
  ModuleTensors params;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) params.add(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) params.add(b.name, b.value);
  // Note [Capturing TorchScript from its graph]: the module's own graph keeps the sizes it reads
  // symbolic; tracing it is the fallback.
  std::vector<at::Tensor> inputs;
  for (const c10::IValue& v : exampleInputs)
    if (v.isTensor()) inputs.push_back(v.toTensor());
  if (inputs.size() == exampleInputs.size()) {
    ModuleTensors withAttrs = params;
    std::string why;
    std::shared_ptr<torch::jit::Graph> graph;
    try {
      graph = scriptGraphFor(module, withAttrs, inputs, &why);
    } catch (const c10::Error& e) {
      why = e.what_without_backtrace();
    } catch (const Unsupported& e) {  // e.g. an op the graph runner cannot run: try the tracer
      why = e.what();
    }
    if (graph != nullptr) {
      CapturedGraph result;
      LowerRequest req = requestFor(std::move(withAttrs), exampleInputs, options, result);
      req.traced = graph;
      req.literalsAreConstants = true;
      result.traced = graph;
      lowerTrace(req, result);
      return result;
    }
    KILN_LOG_DEBUG("capture: tracing the module instead of lowering its graph: {}", why);
  }
  // Note [Tracing TorchScript modules]
  // A module that has run before holds its executors' optimized plans, and those are used even
  // with the optimizer off; on a GPU they contain NNC fusion groups, which run as one opaque op:
  // the tracer records only the group's output allocation, or bakes its result in as a
  // constant, and the captured graph would compute with stale data. A clone that shares the
  // module's tensors (inplace) has fresh executors, which with the optimizer off run the graph
  // op by op, as written.
  torch::jit::Module fresh = module.clone(/*inplace=*/true);
  ForwardFn forward = [&fresh](const std::vector<c10::IValue>& in) { return fresh.forward(in); };
  return captureWith(std::move(params), forward, exampleInputs, options);
}

CapturedGraph capture(const std::shared_ptr<torch::nn::Module>& module, const ForwardFn& forward,
                      const std::vector<c10::IValue>& exampleInputs,
                      const CaptureOptions& options) {
  ModuleTensors params;
  if (module) {
    for (const auto& p : module->named_parameters(/*recurse=*/true)) params.add(p.key(), p.value());
    for (const auto& b : module->named_buffers(/*recurse=*/true)) params.add(b.key(), b.value());
  }
  return captureWith(std::move(params), forward, exampleInputs, options);
}

namespace {

c10::IValue scalarValue(const EagerCall& call, const EagerCall::Scalar& sc,
                        const std::vector<at::Tensor>& inputs,
                        const std::vector<int64_t>& symbols) {
  using Type = EagerCall::Scalar::Type;
  if (sc.operand < 0) return c10::IValue(sc.sym.evaluate(symbols));
  KILN_CHECK(sc.operand < static_cast<int>(inputs.size()), "{}: operand {} of {} missing",
             call.name, sc.operand, inputs.size());
  const at::Tensor& t = inputs[static_cast<size_t>(sc.operand)];
  KILN_CHECK(t.numel() == 1, "{}: a scalar argument read from a tensor of {} elements", call.name,
             t.numel());
  switch (sc.type) {
    case Type::kInt:
      return c10::IValue(t.item<int64_t>());
    case Type::kDouble:
      return c10::IValue(t.item<double>());
    case Type::kBool:
      return c10::IValue(t.item<bool>());
  }
  KILN_CHECK(false, "unknown scalar type");
}

}  // namespace

std::vector<at::Tensor> runEagerNode(const CapturedGraph& captured, int64_t eagerId,
                                     const std::vector<at::Tensor>& inputs,
                                     const std::vector<int64_t>& symbols) {
  KILN_CHECK(eagerId >= 0 && eagerId < static_cast<int64_t>(captured.eagerCalls.size()),
             "eager_id {} out of range ({} eager nodes)", eagerId, captured.eagerCalls.size());
  const EagerCall& call = *captured.eagerCalls[static_cast<size_t>(eagerId)];
  torch::jit::Stack stack = call.stackTemplate;
  auto operand = [&](int i) -> const at::Tensor& {
    KILN_CHECK(i >= 0 && i < static_cast<int>(inputs.size()), "{}: operand {} of {} missing",
               call.name, i, inputs.size());
    return inputs[static_cast<size_t>(i)];
  };
  using Kind = EagerCall::Slot::Kind;
  for (const EagerCall::Slot& slot : call.slots) {
    c10::IValue& arg = stack.at(slot.stackIndex);
    switch (slot.kind) {
      case Kind::kTensor:
        arg = operand(slot.operands.at(0));
        break;
      case Kind::kOptionalList: {
        c10::List<std::optional<at::Tensor>> list;
        for (int i : slot.operands)
          list.push_back(i < 0 ? std::optional<at::Tensor>()
                               : std::optional<at::Tensor>(operand(i)));
        arg = list;
        break;
      }
      case Kind::kTensorList: {
        c10::List<at::Tensor> list;
        for (int i : slot.operands) list.push_back(operand(i));
        arg = list;
        break;
      }
      case Kind::kScalar:
        arg = scalarValue(call, slot.scalars.at(0), inputs, symbols);
        break;
      case Kind::kIntList: {
        std::vector<int64_t> list;
        for (const EagerCall::Scalar& sc : slot.scalars)
          list.push_back(scalarValue(call, sc, inputs, symbols).toInt());
        arg = list;
        break;
      }
    }
  }
  if (!call.op) {  // kiln::sym_scalar (Note [Eager calls])
    return {at::scalar_tensor(stack.at(0).toInt(), at::kLong)};
  }
  {
    at::NoGradGuard noGrad;
    call.op(stack);
  }
  std::vector<at::Tensor> outs;
  for (size_t r : call.results) {
    KILN_CHECK(r < stack.size(), "{}: result {} of {}", call.name, r, stack.size());
    const c10::IValue& v = stack[r];
    if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) outs.push_back(t);
    } else {
      outs.push_back(v.toTensor());
    }
  }
  return outs;
}

at::ScalarType retypedScalarType(ir::DType to) {
  KILN_CHECK(to == ir::DType::kFloat16 || to == ir::DType::kBFloat16, "retype to {}",
             ir::toString(to));
  return to == ir::DType::kFloat16 ? at::kHalf : at::kBFloat16;
}

double retypedFloat(double v, at::ScalarType to) {
  KILN_CHECK(to == at::kHalf || to == at::kBFloat16, "retype to {}", c10::toString(to));
  if (std::abs(v) != static_cast<double>(std::numeric_limits<float>::max())) return v;
  const double max = to == at::kHalf
                         ? static_cast<double>(std::numeric_limits<c10::Half>::max())
                         : static_cast<double>(std::numeric_limits<c10::BFloat16>::max());
  return v > 0 ? max : -max;
}

std::vector<at::Tensor> runEagerNode(const CapturedGraph& captured, const ir::Node& node,
                                     const std::vector<at::Tensor>& inputs,
                                     const std::vector<int64_t>& symbols) {
  KILN_CHECK(node.kind() == ir::OpKind::kEager, "runEagerNode on a {} node",
             ir::toString(node.kind()));
  std::vector<at::Tensor> outs =
      runEagerNode(captured, node.attrs().getInt("eager_id"), inputs, symbols);
  KILN_CHECK(outs.size() == node.outputs().size(), "{}: eager op gave {} tensors, node has {}",
             node.attrs().getString("schema"), outs.size(), node.outputs().size());
  if (captured.retypedTo) {
    // Note [Tracing in float32]: the graph says the retyped dtype where the trace said float32.
    const at::ScalarType to = retypedScalarType(*captured.retypedTo);
    for (size_t o = 0; o < outs.size(); ++o)
      if (outs[o].defined() && outs[o].scalar_type() == at::kFloat &&
          node.output(static_cast<int>(o))->dtype() == *captured.retypedTo)
        outs[o] = outs[o].to(to);
  }
  return outs;
}

}  // namespace kiln::jit

// Symbol binding, constants and whole-graph evaluation. Per-op ATen calls are in aten_eval_ops.cpp.
#include "jit/eval/aten_eval.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "src/support/error.h"

namespace kiln::jit {
namespace {

std::string sizesToString(at::IntArrayRef sizes) {
  return fmt::format("[{}]", fmt::join(sizes, ", "));
}

// "input 1 (\"mask\")" for error messages.
std::string describeBoundary(const char* what, size_t index, const ir::Value* v) {
  const std::string& name = v->name();
  if (name.empty()) return fmt::format("{} {}", what, index);
  return fmt::format("{} {} (\"{}\")", what, index, name);
}

bool allBound(const ir::SymDim& dim, const std::vector<int64_t>& symbols) {
  for (int id : dim.symbols()) {
    if (static_cast<size_t>(id) >= symbols.size() ||
        symbols[static_cast<size_t>(id)] == kUnboundSymbol)
      return false;
  }
  return true;
}

// Binding runs on every call, so its error texts are made only when a check fails: an input is
// named by its index (who()), and where a symbol got its value by (input, dim) (origin()).
struct Binder {
  const ir::Graph& graph;
  std::span<ir::Value* const> declared;
  std::vector<int64_t> values;
  // Where each symbol got its value: (input, dim), for conflict messages.
  std::vector<std::pair<size_t, size_t>> origins;

  std::string symbolName(int id) const { return graph.symbolName(id); }
  std::string who(size_t input) const { return describeBoundary("input", input, declared[input]); }
  std::string origin(size_t slot) const {
    return fmt::format("{} dim {}", who(origins[slot].first), origins[slot].second);
  }

  void bindDirect(size_t input, at::IntArrayRef sizes) {
    const ir::TensorType& type = declared[input]->type();
    for (size_t d = 0; d < sizes.size(); ++d) {
      const ir::SymDim& dim = type.shape[d];
      if (dim.isConstant()) {
        KILN_USER_CHECK(dim.constant() == sizes[d],
                        "{}: dim {}: expected {}, got {} (expected {}, got {})", who(input), d,
                        dim.constant(), sizes[d], type.toString(), sizesToString(sizes));
        continue;
      }
      std::optional<int> id = dim.asSymbol();
      if (!id) continue;
      auto slot = static_cast<size_t>(*id);
      if (values[slot] == kUnboundSymbol) {
        values[slot] = sizes[d];
        origins[slot] = {input, d};
      } else {
        KILN_USER_CHECK(values[slot] == sizes[d],
                        "{}: dim {}: expected {} = {} (bound by {}), got {} (expected {}, got {})",
                        who(input), d, symbolName(*id), values[slot], origin(slot), sizes[d],
                        type.toString(), sizesToString(sizes));
      }
    }
  }

  // A dim that is a polynomial with exactly one unbound symbol, linear in it (a*s + b, a != 0),
  // determines that symbol. Coefficients are found by evaluating at s = 0, 1, 2.
  bool solveLinear(size_t input, at::IntArrayRef sizes) {
    const ir::TensorType& type = declared[input]->type();
    bool progress = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      const ir::SymDim& dim = type.shape[d];
      if (dim.isConstant() || dim.asSymbol()) continue;  // bound directly, or nothing to solve
      std::optional<int> unbound;
      int count = 0;
      for (int id : dim.symbols()) {
        if (values[static_cast<size_t>(id)] == kUnboundSymbol) {
          unbound = id;
          ++count;
        }
      }
      if (count != 1) continue;
      auto slot = static_cast<size_t>(*unbound);
      auto at = [&](int64_t s) {
        values[slot] = s;
        int64_t r = dim.evaluate(values);
        values[slot] = kUnboundSymbol;
        return r;
      };
      int64_t b = at(0);
      int64_t a = at(1) - b;
      if (a == 0 || at(2) != b + 2 * a) continue;  // not linear in the symbol
      int64_t rest = sizes[d] - b;
      KILN_USER_CHECK(
          rest % a == 0 && rest / a >= 0,
          "{}: dim {}: expected {}, got {}, which no value of {} gives (expected {}, got {})",
          who(input), d, dim.toString(), sizes[d], symbolName(*unbound), type.toString(),
          sizesToString(sizes));
      values[slot] = rest / a;
      origins[slot] = {input, d};
      progress = true;
    }
    return progress;
  }

  void verify(size_t input, at::IntArrayRef sizes) const {
    const ir::TensorType& type = declared[input]->type();
    for (size_t d = 0; d < sizes.size(); ++d) {
      const ir::SymDim& dim = type.shape[d];
      if (dim.isConstant() || dim.asSymbol() || !allBound(dim, values)) continue;
      int64_t expected = dim.evaluate(values);
      KILN_USER_CHECK(expected == sizes[d],
                      "{}: dim {}: expected {} = {}, got {} (expected {}, got {})", who(input), d,
                      dim.toString(), expected, sizes[d], type.toString(), sizesToString(sizes));
    }
  }
};

void checkRank(const std::string& who, const ir::TensorType& type, const at::Tensor& t) {
  KILN_USER_CHECK(t.defined(), "{}: expected a tensor {}, got an undefined tensor", who,
                  type.toString());
  KILN_USER_CHECK(t.dim() == type.rank(), "{}: expected rank {} ({}), got rank {} ({})", who,
                  type.rank(), type.toString(), t.dim(), sizesToString(t.sizes()));
}

void checkDType(const std::string& who, const ir::TensorType& type, const at::Tensor& t) {
  KILN_USER_CHECK(t.scalar_type() == toAtenDType(type.dtype), "{}: expected dtype {} ({}), got {}",
                  who, ir::toString(type.dtype), type.toString(), c10::toString(t.scalar_type()));
}

}  // namespace

at::ScalarType toAtenDType(ir::DType dtype) {
  switch (dtype) {
    case ir::DType::kBool:
      return at::kBool;
    case ir::DType::kInt32:
      return at::kInt;
    case ir::DType::kInt64:
      return at::kLong;
    case ir::DType::kFloat16:
      return at::kHalf;
    case ir::DType::kBFloat16:
      return at::kBFloat16;
    case ir::DType::kFloat32:
      return at::kFloat;
  }
  KILN_CHECK(false, "bad ir::DType {}", static_cast<int>(dtype));
  return at::kFloat;
}

ir::DType toIrDType(at::ScalarType type) {
  switch (type) {
    case at::kBool:
      return ir::DType::kBool;
    case at::kInt:
      return ir::DType::kInt32;
    case at::kLong:
      return ir::DType::kInt64;
    case at::kHalf:
      return ir::DType::kFloat16;
    case at::kBFloat16:
      return ir::DType::kBFloat16;
    case at::kFloat:
      return ir::DType::kFloat32;
    default:
      break;
  }
  KILN_CHECK(false, "ATen dtype {} has no kiln IR dtype", c10::toString(type));
  return ir::DType::kFloat32;
}

// Note [Constants are Python scalars] (aten_eval.h).
at::Tensor makeScalarOperand(double value, ir::DType dtype) {
  at::Tensor t;
  if (dtype == ir::DType::kBool) {
    t = at::scalar_tensor(value != 0.0, at::TensorOptions().dtype(at::kBool));
  } else if (ir::isFloating(dtype)) {
    t = at::scalar_tensor(value, at::TensorOptions().dtype(at::kDouble));
  } else {
    t = at::scalar_tensor(static_cast<int64_t>(value), at::TensorOptions().dtype(at::kLong));
  }
  t.unsafeGetTensorImpl()->set_wrapped_number(true);
  return t;
}

bool isScalarOperand(const at::Tensor& t) {
  return t.defined() && t.unsafeGetTensorImpl()->is_wrapped_number();
}

std::vector<int64_t> bindSymbols(const ir::Graph& graph, const std::vector<at::Tensor>& inputs) {
  const std::vector<ir::Value*> declared = graph.inputs();
  return bindSymbols(graph, declared, inputs);
}

std::vector<int64_t> bindSymbols(const ir::Graph& graph, std::span<ir::Value* const> declared,
                                 const std::vector<at::Tensor>& inputs) {
  KILN_USER_CHECK(declared.size() == inputs.size(), "expected {} inputs, got {}", declared.size(),
                  inputs.size());
  const auto numSymbols = static_cast<size_t>(graph.numSymbols());
  Binder binder{graph, declared, std::vector<int64_t>(numSymbols, kUnboundSymbol),
                std::vector<std::pair<size_t, size_t>>(numSymbols)};
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ir::TensorType& type = declared[i]->type();
    const at::Tensor& t = inputs[i];
    if (!t.defined() || t.dim() != type.rank()) checkRank(binder.who(i), type, t);
    binder.bindDirect(i, t.sizes());
  }
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t i = 0; i < inputs.size(); ++i) progress |= binder.solveLinear(i, inputs[i].sizes());
  }
  for (size_t i = 0; i < inputs.size(); ++i) binder.verify(i, inputs[i].sizes());
  return std::move(binder.values);
}

std::vector<int64_t> concreteShape(const ir::Shape& shape, const std::vector<int64_t>& symbols) {
  std::vector<int64_t> out;
  out.reserve(shape.size());
  for (const ir::SymDim& dim : shape) {
    if (dim.isConstant()) {
      out.push_back(dim.constant());
      continue;
    }
    KILN_CHECK(allBound(dim, symbols), "dim {} of {} uses a symbol that no input binds",
               dim.toString(), ir::toString(shape));
    out.push_back(dim.evaluate(symbols));
  }
  return out;
}

std::vector<at::Tensor> evalGraph(const ir::Graph& graph, const std::vector<at::Tensor>& inputs,
                                  const std::vector<at::Tensor>& params,
                                  const EagerRunner& runEager) {
  std::vector<int64_t> symbols = bindSymbols(graph, inputs);
  std::vector<ir::Value*> declaredInputs = graph.inputs();
  for (size_t i = 0; i < inputs.size(); ++i)
    checkDType(describeBoundary("input", i, declaredInputs[i]), declaredInputs[i]->type(),
               inputs[i]);
  std::vector<ir::Value*> declaredParams = graph.params();
  KILN_USER_CHECK(declaredParams.size() == params.size(), "expected {} params, got {}",
                  declaredParams.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    std::string who = describeBoundary("param", i, declaredParams[i]);
    const ir::TensorType& type = declaredParams[i]->type();
    checkRank(who, type, params[i]);
    checkDType(who, type, params[i]);
    std::vector<int64_t> expected = concreteShape(type.shape, symbols);
    KILN_USER_CHECK(params[i].sizes() == at::IntArrayRef(expected), "{}: expected shape {}, got {}",
                    who, type.toString(), sizesToString(params[i].sizes()));
  }

  // Device of the computation, for results of constant-only subgraphs (Note [Constants are Python
  // scalars]); CPU when the graph has no tensor operands at all.
  at::Device device(at::kCPU);
  if (!inputs.empty()) {
    device = inputs.front().device();
  } else if (!params.empty()) {
    device = params.front().device();
  }

  const auto& nodes = graph.nodes();
  // Values are addressed by id; ids are dense enough that a vector beats a hash map.
  int maxId = -1;
  for (const auto& node : nodes)
    for (const ir::Value* v : node->outputs()) maxId = std::max(maxId, v->id());
  auto slots = static_cast<size_t>(maxId + 1);
  std::vector<at::Tensor> env(slots);
  // Position of the last node reading each value; values that are graph outputs are never freed.
  constexpr int kNever = -1;
  constexpr int kKeep = std::numeric_limits<int>::max();
  std::vector<int> lastUse(slots, kNever);
  for (size_t p = 0; p < nodes.size(); ++p)
    for (const ir::Value* v : nodes[p]->inputs())
      lastUse[static_cast<size_t>(v->id())] = static_cast<int>(p);
  for (const ir::Value* v : graph.outputs()) lastUse[static_cast<size_t>(v->id())] = kKeep;

  std::unordered_map<const ir::Value*, size_t> inputIndex, paramIndex;
  for (size_t i = 0; i < declaredInputs.size(); ++i) inputIndex[declaredInputs[i]] = i;
  for (size_t i = 0; i < declaredParams.size(); ++i) paramIndex[declaredParams[i]] = i;

  std::vector<at::Tensor> operands;
  for (size_t p = 0; p < nodes.size(); ++p) {
    const ir::Node& node = *nodes[p];
    switch (node.kind()) {
      case ir::OpKind::kInput:
        env[static_cast<size_t>(node.output()->id())] = inputs.at(inputIndex.at(node.output()));
        break;
      case ir::OpKind::kParam:
        env[static_cast<size_t>(node.output()->id())] = params.at(paramIndex.at(node.output()));
        break;
      default: {
        operands.clear();
        for (const ir::Value* v : node.inputs()) {
          const at::Tensor& t = env[static_cast<size_t>(v->id())];
          KILN_CHECK(t.defined(), "operand %{} of node {} ({}) has no value", v->id(), node.index(),
                     ir::toString(node.kind()));
          operands.push_back(t);
        }
        std::vector<at::Tensor> results = evalNode(node, operands, symbols, runEager, device);
        operands.clear();
        for (size_t o = 0; o < results.size(); ++o) {
          at::Tensor& r = results[o];
          // Constant-only subgraphs (rare: capture folds most) compute on CPU; move their
          // materialized results next to the rest. Python-scalar results stay on CPU, like eager.
          if (!isScalarOperand(r) && r.device() != device) r = r.to(device);
          env[static_cast<size_t>(node.output(static_cast<int>(o))->id())] = std::move(r);
        }
        // Release operands read for the last time.
        for (const ir::Value* v : node.inputs()) {
          if (lastUse[static_cast<size_t>(v->id())] == static_cast<int>(p))
            env[static_cast<size_t>(v->id())].reset();
        }
        break;
      }
    }
    // Values nobody reads (dead outputs of multi-output eager nodes) go at once.
    for (const ir::Value* v : node.outputs()) {
      if (lastUse[static_cast<size_t>(v->id())] == kNever)
        env[static_cast<size_t>(v->id())].reset();
    }
  }

  std::vector<at::Tensor> outputs;
  outputs.reserve(graph.outputs().size());
  for (const ir::Value* v : graph.outputs()) {
    at::Tensor t = env[static_cast<size_t>(v->id())];
    KILN_CHECK(t.defined(), "graph output %{} has no value", v->id());
    // A constant returned as is leaves as a real tensor of its IR type.
    if (isScalarOperand(t))
      t = t.to(at::TensorOptions().dtype(toAtenDType(v->dtype())).device(device),
               /*non_blocking=*/false,
               /*copy=*/true);
    outputs.push_back(std::move(t));
  }
  return outputs;
}

}  // namespace kiln::jit

// Note [Capturing TorchScript from its graph] (script_graph.h).
#include "jit/capture/script_graph.h"

#include <functional>

#include <fmt/format.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>

#include "jit/capture/capture.h"
#include "src/support/error.h"

namespace kiln::jit {

namespace tj = torch::jit;

size_t ModuleTensors::add(const std::string& name, const at::Tensor& t) {
  auto [it, added] = index.emplace(t.unsafeGetTensorImpl(), tensors.size());
  if (added) {
    tensors.push_back(t);
    names.push_back(name);
  }
  return it->second;
}

namespace {

// The first prim::If or prim::Loop in `block` or its sub-blocks, or null.
const tj::Node* firstControlFlow(const tj::Block* block) {
  for (const tj::Node* n : block->nodes()) {
    if (n->kind() == c10::prim::If || n->kind() == c10::prim::Loop) return n;
    for (const tj::Block* b : n->blocks())
      if (const tj::Node* found = firstControlFlow(b)) return found;
  }
  return nullptr;
}

// Runs one node on IValues. List and tuple construction/unpacking are interpreter instructions
// rather than operators, so they are done here.
std::vector<c10::IValue> runNode(tj::Node* n, std::vector<c10::IValue> in) {
  switch (n->kind()) {
    case c10::prim::ListConstruct: {
      auto listType = n->output()->type()->expect<c10::ListType>();
      c10::impl::GenericList list(listType->getElementType());
      for (c10::IValue& v : in) list.push_back(std::move(v));
      return {c10::IValue(std::move(list))};
    }
    case c10::prim::TupleConstruct:
      return {c10::ivalue::Tuple::create(std::move(in))};
    case c10::prim::ListUnpack: {
      std::vector<c10::IValue> out;
      for (const c10::IValue& v : in.at(0).toListRef()) out.push_back(v);
      return out;
    }
    case c10::prim::TupleUnpack:
      return in.at(0).toTupleRef().elements().vec();
    default:
      break;
  }
  tj::Stack stack(std::make_move_iterator(in.begin()), std::make_move_iterator(in.end()));
  n->getOperation()(stack);
  return stack;
}

}  // namespace

namespace {

// Whether a method call's target is a module (whose methods the scan below visits).
bool callsAModule(const tj::Node* n) {
  const auto cls = n->inputs().empty() ? nullptr : n->input(0)->type()->cast<c10::ClassType>();
  return cls != nullptr && cls->is_module();
}

// Whether any method of `module` or its submodules has a prim::If, a prim::Loop, a call of a free
// function or a method call on an object that is not a module (whose bodies may): a scan of the
// graphs as they are, with no copy.
bool mayHaveControlFlow(const tj::Module& module) {
  std::function<bool(const tj::Block*)> scan = [&](const tj::Block* block) {
    for (const tj::Node* n : block->nodes()) {
      if (n->kind() == c10::prim::If || n->kind() == c10::prim::Loop ||
          n->kind() == c10::prim::CallFunction ||
          (n->kind() == c10::prim::CallMethod && !callsAModule(n)))
        return true;
      for (const tj::Block* b : n->blocks())
        if (scan(b)) return true;
    }
    return false;
  };
  for (const auto& sub : module.modules())
    for (const tj::Method& m : sub.get_methods())
      if (scan(m.graph()->block())) return true;
  return false;
}

}  // namespace

std::optional<std::string> controlFlowIn(const tj::Module& module) {
  auto method = module.find_method("forward");
  if (!method) return std::nullopt;
  // Traced modules have none: skip the copy, the inlining and the constant propagation below,
  // which cost tens of milliseconds on a transformer (Note [First call breakdown]).
  if (!mayHaveControlFlow(module)) return std::nullopt;
  std::shared_ptr<tj::Graph> g = method->graph()->copy();
  tj::Inline(*g);
  tj::ConstantPropagation(g);  // branches on constants are not control flow
  const tj::Node* n = firstControlFlow(g->block());
  if (n == nullptr) return std::nullopt;
  return fmt::format(
      "the module's forward has control flow ({} on %{}) that tracing would fix to the example's "
      "path",
      n->kind().toQualString(), n->input(0)->debugName());
}

std::shared_ptr<tj::Graph> scriptGraphFor(const tj::Module& module, ModuleTensors& tensors,
                                          const std::vector<at::Tensor>& inputs,
                                          std::string* why) {
  auto method = module.find_method("forward");
  if (!method) {
    *why = "the module has no forward method";
    return nullptr;
  }
  std::shared_ptr<tj::Graph> g = method->graph()->copy();
  tj::Inline(*g);
  if (firstControlFlow(g->block()) != nullptr) {
    *why = "forward has control flow";
    return nullptr;
  }
  if (g->inputs().size() != inputs.size() + 1) {
    *why = fmt::format("forward takes {} inputs, {} given", g->inputs().size() - 1, inputs.size());
    return nullptr;
  }

  // Attributes: tensors become leading inputs (in `tensors` order), other values constants.
  tj::Value* self = g->inputs()[0];
  std::unordered_map<const tj::Value*, c10::IValue> objects{{self, module._ivalue()}};
  std::vector<std::pair<tj::Node*, c10::IValue>> getAttrs;
  for (tj::Node* n : g->nodes()) {
    if (n->kind() != c10::prim::GetAttr) continue;
    auto owner = objects.find(n->input(0));
    if (owner == objects.end() || !owner->second.isObject()) {
      *why = "an attribute of something other than the module";
      return nullptr;
    }
    c10::IValue value = owner->second.toObjectRef().getAttr(n->s(c10::attr::name));
    if (value.isObject()) objects[n->output()] = value;
    if (value.isTensor()) tensors.add(fmt::format("attr{}", tensors.tensors.size()), value.toTensor());
    getAttrs.emplace_back(n, value);
  }
  std::vector<tj::Value*> params;
  for (size_t p = 0; p < tensors.tensors.size(); ++p) {
    params.push_back(g->insertInput(p));
    params.back()->setType(c10::TensorType::create(tensors.tensors[p]));
  }
  for (auto& [n, value] : getAttrs) {
    if (value.isTensor()) {
      n->output()->replaceAllUsesWith(params[tensors.add("", value.toTensor())]);
    } else if (!value.isObject()) {
      tj::WithInsertPoint guard(n);
      n->output()->replaceAllUsesWith(g->insertConstant(value));
    }
  }
  for (auto it = getAttrs.rbegin(); it != getAttrs.rend(); ++it)
    if (!it->first->output()->hasUses()) it->first->destroy();
  if (self->hasUses()) {
    *why = "forward uses a module object other than through its attributes";
    return nullptr;
  }
  g->eraseInput(params.size());  // self

  try {
    tj::RemoveTensorMutation(g);
    tj::EliminateDeadCode(g);
  } catch (const c10::Error& e) {
    *why = fmt::format("TorchScript's passes rejected the graph: {}", e.what_without_backtrace());
    return nullptr;
  }
  for (const tj::Node* n : g->nodes()) {
    const c10::FunctionSchema* schema = n->maybeSchema();
    if (schema != nullptr && schema->is_mutable()) {
      *why = fmt::format("{} mutates a tensor", n->kind().toQualString());
      return nullptr;
    }
  }

  // Run it once on the examples, giving every tensor value its complete type.
  std::unordered_map<const tj::Value*, c10::IValue> values;
  for (size_t p = 0; p < tensors.tensors.size(); ++p) values[g->inputs()[p]] = tensors.tensors[p];
  for (size_t k = 0; k < inputs.size(); ++k) {
    tj::Value* in = g->inputs()[tensors.tensors.size() + k];
    values[in] = inputs[k];
    in->setType(c10::TensorType::create(inputs[k]));
  }
  at::NoGradGuard noGrad;
  for (tj::Node* n : g->nodes()) {
    std::vector<c10::IValue> out;
    if (n->kind() == c10::prim::Constant) {
      out.push_back(*tj::toIValue(n->output()));
    } else {
      std::vector<c10::IValue> in;
      for (const tj::Value* v : n->inputs()) in.push_back(values.at(v));
      try {
        out = runNode(n, std::move(in));
      } catch (const c10::Error& e) {
        throw Unsupported(fmt::format("capture: running the module's graph failed at {}: {}",
                                      n->kind().toQualString(), e.what_without_backtrace()));
      }
    }
    if (out.size() != n->outputs().size()) {
      *why = fmt::format("{} gave {} values for {} outputs", n->kind().toQualString(), out.size(),
                         n->outputs().size());
      return nullptr;
    }
    for (size_t i = 0; i < out.size(); ++i) {
      tj::Value* v = n->outputs()[i];
      if (out[i].isTensor() && v->type()->kind() == c10::TypeKind::TensorType)
        v->setType(c10::TensorType::create(out[i].toTensor()));
      values[v] = std::move(out[i]);
    }
  }
  return g;
}

}  // namespace kiln::jit

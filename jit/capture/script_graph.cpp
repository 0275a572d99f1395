// Note [Capturing TorchScript from its graph] (script_graph.h).
#include "jit/capture/script_graph.h"

#include <algorithm>
#include <functional>
#include <unordered_set>

#include <fmt/format.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/csrc/jit/runtime/custom_operator.h>
#include <torch/csrc/jit/runtime/interpreter.h>

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

// Note [Mutation islands]
// A module may build a tensor by writing into it: Swin's shifted-window mask is
// m = x.new_zeros([H, W]) followed by m[h0:h1, w0:w1] = k (slices and fill_) nine times. Such
// writes cannot be rewritten out of place (RemoveTensorMutation leaves writes through views), and
// PyTorch's tracer fails on them (an alias-analysis assert on full_like with a tensor fill value),
// so the whole module ran as itself. But the writes are private to the tensor: it is fresh (made
// by an op of the graph, not an input, a parameter or a constant), written only through chains of
// views, and read only after the last write. Such an island - the op that makes the tensor, the
// view chains to each write, and the writes - becomes one kiln::mutation_island node holding the
// island, with the pure nodes between its first and last write that only the island reads (the
// dtype and device of a view, for the value written into it), as a TorchScript subgraph, run by
// the interpreter when the node runs (an eager step of
// the plan, named "kiln::mutation_island" in explain()). Its inputs are the values the island
// reads from outside (tensors, ints, int lists); constants are copied in. Anything else - a
// written tensor that is not fresh, a view of it read outside the island or before the last write
// - keeps the graph out of this path, as before. A plan with such a step is not stored in the
// capture cache (the subgraph is not a dispatcher operator); it is captured again per process.
torch::jit::RegisterOperators islandOp({tj::Operator(
    std::string(kMutationIslandOp) + "(...) -> Tensor",
    [](const tj::Node* node) -> tj::Operation {
      auto code = std::make_shared<tj::Code>(node->g(c10::attr::Subgraph), kMutationIslandOp);
      return [code](tj::Stack& stack) { tj::InterpreterState(*code).run(stack); };
    },
    c10::AliasAnalysisKind::CONSERVATIVE)});

// Whether `n` returns a view of its first argument (slice, select, view, ...): its schema says
// output 0 aliases argument 0 without writing it.
bool isView(const tj::Node* n) {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (schema == nullptr || schema->is_mutable() || schema->returns().size() != 1 ||
      schema->arguments().empty())
    return false;
  const c10::AliasInfo* out = schema->returns()[0].alias_info();
  const c10::AliasInfo* in = schema->arguments()[0].alias_info();
  return out != nullptr && in != nullptr && !out->isWrite() &&
         out->beforeSets() == in->beforeSets();
}

// The writes of `n`: it mutates its first argument only (fill_, copy_, masked_fill_, ...).
bool writesFirstArgumentOnly(const tj::Node* n) {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (schema == nullptr || !schema->is_mutable()) return false;
  for (size_t i = 0; i < schema->arguments().size(); ++i) {
    const c10::AliasInfo* a = schema->arguments()[i].alias_info();
    if ((a != nullptr && a->isWrite()) != (i == 0)) return false;
  }
  return !n->inputs().empty();
}

// Replaces the mutation islands of `g` (top-level block, no control flow) with island nodes.
// False with the reason when a write is not part of an island.
bool groupMutationIslands(tj::Graph& g, std::string* why) {
  // Writes grouped by the fresh tensor they write into.
  std::vector<tj::Node*> order;
  std::unordered_map<const tj::Node*, size_t> position;
  for (tj::Node* n : g.nodes()) {
    position[n] = order.size();
    order.push_back(n);
  }
  std::vector<tj::Value*> roots;
  std::unordered_map<const tj::Value*, std::vector<tj::Node*>> writes;
  for (tj::Node* n : order) {
    const c10::FunctionSchema* schema = n->maybeSchema();
    if (schema == nullptr || !schema->is_mutable()) continue;
    if (!writesFirstArgumentOnly(n)) {
      *why = fmt::format("{} mutates a tensor other than its first argument",
                         n->kind().toQualString());
      return false;
    }
    tj::Value* root = n->input(0);
    while (root->node()->kind() != c10::prim::Param && isView(root->node()))
      root = root->node()->input(0);
    const tj::Node* maker = root->node();
    if (maker->kind() == c10::prim::Param || maker->kind() == c10::prim::Constant ||
        maker->maybeSchema() == nullptr || maker->maybeSchema()->is_mutable()) {
      *why = fmt::format(
          "{} mutates a tensor that the graph did not make (an input, a parameter "
          "or a constant)",
          n->kind().toQualString());
      return false;
    }
    auto [it, fresh] = writes.try_emplace(root);
    if (fresh) roots.push_back(root);
    it->second.push_back(n);
  }
  for (tj::Value* root : roots) {
    // Graph order again: an earlier island's node replaced its nodes.
    order.clear();
    position.clear();
    for (tj::Node* n : g.nodes()) {
      position[n] = order.size();
      order.push_back(n);
    }
    const std::vector<tj::Node*>& ws = writes[root];
    tj::Node* last = ws.back();
    // The island: the maker, the view chains from the root to each write, the writes.
    std::unordered_set<const tj::Node*> island{root->node()};
    for (tj::Node* w : ws) {
      island.insert(w);
      for (tj::Value* v = w->input(0); v != root; v = v->node()->input(0)) island.insert(v->node());
    }
    // Pure nodes between the maker and the last write whose every result only the island reads
    // join it (TorchScript's m[a:b] = 5.0 reads the view's dtype and device to make the value it
    // copies in); in reverse order, so a node's readers are decided before it.
    const size_t from = position.at(root->node());
    for (size_t k = position.at(last); k-- > from + 1;) {
      tj::Node* n = order[k];
      if (island.count(n) || n->outputs().empty() || !n->blocks().empty()) continue;
      const c10::FunctionSchema* schema = n->maybeSchema();
      if (schema != nullptr && schema->is_mutable()) continue;
      bool onlyIsland = true;
      for (const tj::Value* out : n->outputs())
        for (const tj::Use& u : out->uses()) onlyIsland = onlyIsland && island.count(u.user) > 0;
      if (onlyIsland) island.insert(n);
    }
    // Outside the island, only the root is read, and only after the last write. A write into the
    // root itself returns the root (BART's x = shifted.masked_fill_(...)), so its result is read
    // like the root; other writes' results (views) must be unused.
    std::vector<tj::Value*> finals{root};
    for (tj::Node* w : ws)
      if (w->input(0) == root) finals.push_back(w->output());
    auto isFinal = [&](const tj::Value* v) {
      return std::find(finals.begin(), finals.end(), v) != finals.end();
    };
    for (const tj::Node* n : island) {
      for (const tj::Value* out : n->outputs()) {
        for (const tj::Use& u : out->uses()) {
          if (island.count(u.user)) continue;
          if (!isFinal(out) || position.at(u.user) < position.at(last)) {
            *why = fmt::format("{} writes a tensor that is read outside its writes",
                               last->kind().toQualString());
            return false;
          }
        }
      }
    }
    // The subgraph, in graph order; constants copied, other outside values become inputs.
    auto sub = std::make_shared<tj::Graph>();
    std::unordered_map<const tj::Value*, tj::Value*> inside;
    std::vector<tj::Value*> outsideInputs;
    auto map = [&](tj::Value* v) -> tj::Value* {
      if (auto it = inside.find(v); it != inside.end()) return it->second;
      tj::Value* in = nullptr;
      if (v->node()->kind() == c10::prim::Constant) {
        in = sub->insertNode(
                    sub->createClone(v->node(), [](tj::Value*) -> tj::Value* { return nullptr; }))
                 ->output();
      } else {
        in = sub->addInput()->setType(v->type());
        outsideInputs.push_back(v);
      }
      inside[v] = in;
      return in;
    };
    for (tj::Node* n : order) {
      if (!island.count(n)) continue;
      tj::Node* copy = sub->insertNode(sub->createClone(n, map));
      for (size_t k = 0; k < n->outputs().size(); ++k) inside[n->outputs()[k]] = copy->outputs()[k];
    }
    sub->registerOutput(inside.at(root));
    tj::Node* node = g.create(c10::Symbol::fromQualString(kMutationIslandOp), outsideInputs, 1);
    node->g_(c10::attr::Subgraph, sub);
    node->output()->setType(root->type());
    node->insertAfter(last);
    for (tj::Value* v : finals) v->replaceAllUsesAfterNodeWith(last, node->output());
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      if (island.count(*it)) (*it)->destroy();
  }
  return true;
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
                                          const std::vector<at::Tensor>& inputs, std::string* why) {
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
    if (value.isTensor())
      tensors.add(fmt::format("attr{}", tensors.tensors.size()), value.toTensor());
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
  // Note [Mutation islands]: the writes left are private to tensors the graph makes, or the
  // graph is not taken.
  if (!groupMutationIslands(*g, why)) return nullptr;

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

// Lowering of a traced torch::jit::Graph to kiln IR: the driver (Lowerer::run), operands and
// emission, sizes and eager calls. The rules per op are in lower_*.cpp (Note [Lowering table] in
// lower_rules.h).
#include "jit/capture/lower.h"

#include <algorithm>
#include <map>

#include <fmt/ranges.h>
#include <torch/csrc/jit/ir/constants.h>

#include "jit/capture/lower_rules.h"
#include "jit/capture/lowerer.h"
#include "jit/capture/script_graph.h"
#include "jit/capture/sym_resolve.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

namespace tj = torch::jit;
using ir::Attrs;
using ir::DType;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::TensorType;

std::optional<DType> fromAten(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kBool:
      return DType::kBool;
    case at::kLong:
      return DType::kInt64;
    case at::kInt:
      return DType::kInt32;
    default:
      return std::nullopt;
  }
}

bool isTensorValue(const tj::Value* v) {
  return v->type()->kind() == c10::TypeKind::TensorType;
}

std::string traced(const tj::Node* n) {
  return fmt::format("{} (%{})", n->kind().toQualString(),
                     n->outputs().empty() ? std::string("?") : n->outputs()[0]->debugName());
}

// ---------------------------------------------------------------------------------------------
// Operands

std::optional<c10::IValue> Lowerer::constIValue(const tj::Value* v) const {
  if (auto iv = tj::toIValue(v)) return iv;
  // Literal lists the tracer did not fold (dims of sum, sizes): ints, doubles or bools.
  const tj::Node* n = v->node();
  if (n->kind() != c10::prim::ListConstruct || n->inputs().empty()) return std::nullopt;
  std::vector<c10::IValue> elems;
  for (const tj::Value* e : n->inputs()) {
    auto iv = tj::toIValue(e);
    if (!iv) {
      auto it = ints_.find(e);
      if (it == ints_.end() || !it->second.isConstant()) return std::nullopt;
      iv = c10::IValue(it->second.constant());
    }
    elems.push_back(*iv);
  }
  if (elems[0].isInt()) {
    std::vector<int64_t> xs;
    for (const auto& e : elems) {
      if (!e.isInt()) return std::nullopt;
      xs.push_back(e.toInt());
    }
    return c10::IValue(xs);
  }
  if (elems[0].isDouble()) {
    std::vector<double> xs;
    for (const auto& e : elems) {
      if (!e.isDouble()) return std::nullopt;
      xs.push_back(e.toDouble());
    }
    return c10::IValue(xs);
  }
  if (elems[0].isBool()) {
    c10::List<bool> xs;
    for (const auto& e : elems) {
      if (!e.isBool()) return std::nullopt;
      xs.push_back(e.toBool());
    }
    return c10::IValue(xs);
  }
  return std::nullopt;
}

bool Lowerer::isNone(const tj::Value* v) const {
  if (v->type()->kind() == c10::TypeKind::NoneType) return true;
  auto iv = constIValue(v);
  return iv && iv->isNone();
}

int64_t Lowerer::intArg(const tj::Value* v) const {
  if (auto it = ints_.find(v); it != ints_.end()) {
    if (it->second.isConstant()) return it->second.constant();
    throw NotLowerable{"symbolic int argument"};
  }
  auto iv = constIValue(v);
  if (!iv || !iv->isInt()) throw NotLowerable{"non-constant int argument"};
  return iv->toInt();
}

double Lowerer::doubleArg(const tj::Value* v) const {
  auto iv = constIValue(v);
  if (!iv) throw NotLowerable{"non-constant scalar argument"};
  if (iv->isDouble()) return iv->toDouble();
  if (iv->isInt()) return static_cast<double>(iv->toInt());
  if (iv->isBool()) return iv->toBool() ? 1.0 : 0.0;
  throw NotLowerable{"scalar argument of unexpected type"};
}

bool Lowerer::boolArg(const tj::Value* v) const {
  auto iv = constIValue(v);
  if (!iv || !iv->isBool()) throw NotLowerable{"non-constant bool argument"};
  return iv->toBool();
}

std::vector<int64_t> Lowerer::intsArg(const tj::Value* v) const {
  if (auto iv = constIValue(v)) {
    if (iv->isIntList()) return iv->toIntVector();
    if (iv->isInt()) return {iv->toInt()};
  }
  std::vector<int64_t> out;
  for (const auto& d : symIntsArg(v)) {
    if (!d || !d->isConstant()) throw NotLowerable{"non-constant int list"};
    out.push_back(d->constant());
  }
  return out;
}

// Elements of an int list: set where the trace computed them (sizes, int arithmetic), else the
// literal as a constant; nullopt entries are literals the caller may still resolve.
std::vector<std::optional<SymDim>> Lowerer::symIntsArg(const tj::Value* v) const {
  std::vector<std::optional<SymDim>> out;
  if (auto it = intLists_.find(v); it != intLists_.end()) {
    for (const SymDim& d : it->second) out.emplace_back(d);
    return out;
  }
  // A literal: a constant where the graph recorded sizes as nodes (LowerRequest), else a value
  // the caller may still resolve to a symbol. -1 (infer) is always left to the caller.
  auto literal = [&](int64_t x) -> std::optional<SymDim> {
    if (req_.literalsAreConstants && x >= 0) return SymDim(x);
    return std::nullopt;
  };
  if (auto iv = tj::toIValue(v); iv && iv->isIntList()) {
    for (int64_t x : iv->toIntVector()) out.emplace_back(literal(x));
    return out;
  }
  const tj::Node* n = v->node();
  if (n->kind() != c10::prim::ListConstruct) throw NotLowerable{"int list of unknown origin"};
  for (const tj::Value* e : n->inputs()) {
    if (auto it = ints_.find(e); it != ints_.end()) {
      out.emplace_back(it->second);
    } else if (auto iv = constIValue(e); iv && iv->isInt()) {
      out.emplace_back(literal(iv->toInt()));
    } else {
      throw NotLowerable{"int list element of unknown origin"};
    }
  }
  return out;
}

bool Lowerer::onInputsDevice(const tj::Value* out) const {
  auto tt = out->type()->cast<c10::TensorType>();
  if (!tt || !tt->device()) return false;
  for (const at::Tensor& t : req_.inputs)
    if (t.defined()) return *tt->device() == t.device();
  return true;
}

std::vector<int64_t> Lowerer::tracedSizes(const tj::Value* v) const {
  auto tt = v->type()->cast<c10::TensorType>();
  KILN_CHECK(tt, "traced value %{} is not a tensor", v->debugName());
  auto sizes = tt->sizes().concrete_sizes();
  if (!sizes) throw NotLowerable{"traced tensor without concrete sizes"};
  return *sizes;
}

DType Lowerer::mapDType(at::ScalarType t) const {
  auto d = fromAten(t);
  if (!d) throw NotLowerable{fmt::format("dtype {}", c10::toString(t))};
  if (*d == DType::kFloat32 && req_.options.retypeTo) return *req_.options.retypeTo;
  return *d;
}

double Lowerer::retypedNumber(double v) const {
  const std::optional<DType>& to = req_.options.retypeTo;
  return to ? retypedFloat(v, retypedScalarType(*to)) : v;
}

c10::IValue Lowerer::retypedLiteral(const c10::IValue& iv, const c10::Argument* arg) const {
  const std::optional<DType>& to = req_.options.retypeTo;
  if (!to) return iv;
  if (iv.isDouble()) return c10::IValue(retypedNumber(iv.toDouble()));
  if (iv.isInt() && iv.toInt() == static_cast<int64_t>(at::kFloat) && arg != nullptr) {
    c10::TypePtr type = arg->real_type();
    if (auto opt = type->cast<c10::OptionalType>()) type = opt->getElementType();
    if (type->kind() == c10::TypeKind::ScalarTypeType)
      return c10::IValue(static_cast<int64_t>(retypedScalarType(*to)));
  }
  return iv;
}

DType Lowerer::tracedDType(const tj::Value* v) const {
  auto tt = v->type()->cast<c10::TensorType>();
  KILN_CHECK(tt, "traced value %{} is not a tensor", v->debugName());
  auto st = tt->scalarType();
  if (!st) throw NotLowerable{"traced tensor without dtype"};
  return mapDType(*st);
}

ir::Value* Lowerer::lowered(const tj::Value* v) const {
  auto it = env_.find(v);
  return it == env_.end() ? nullptr : it->second;
}

std::optional<SymDim> Lowerer::sizeInt(const tj::Value* v) const {
  auto it = ints_.find(v);
  if (it == ints_.end()) return std::nullopt;
  return it->second;
}

ir::Value* Lowerer::constant(const c10::IValue& iv) {
  if (iv.isDouble()) return g_->addConstant(retypedNumber(iv.toDouble()), DType::kFloat32);
  if (iv.isInt()) return g_->addConstant(static_cast<double>(iv.toInt()), DType::kInt64);
  if (iv.isBool()) return g_->addConstant(iv.toBool() ? 1.0 : 0.0, DType::kBool);
  throw NotLowerable{"constant of unsupported type"};
}

ir::Value* Lowerer::tensor(const tj::Value* v) {
  if (auto it = env_.find(v); it != env_.end()) return it->second;
  if (v->node()->kind() == c10::prim::Constant) {
    auto iv = constIValue(v);
    KILN_CHECK(iv, "prim::Constant without value");
    if (iv->isTensor() && iv->toTensor().dim() == 0 &&
        (iv->toTensor().scalar_type() == at::kDouble ||
         iv->toTensor().scalar_type() == at::kLong)) {
      // A Python number the tracer wrapped as a 0-dim float64/int64 tensor (0.5 * x): a scalar
      // constant, promoted as eager promotes it (Note [Constants are Python scalars]).
      const at::Tensor& t = iv->toTensor();
      ir::Value* c = t.scalar_type() == at::kDouble ? constant(c10::IValue(t.item<double>()))
                                                    : constant(c10::IValue(t.item<int64_t>()));
      env_[v] = c;
      return c;
    }
    if (iv->isTensor()) {
      // A tensor the traced code created or captured: bound by reference like a parameter.
      at::Tensor t = iv->toTensor();
      auto dt = fromAten(t.scalar_type());
      if (!dt) throw NotLowerable{"tensor constant of unsupported dtype"};
      DType irType = *dt == DType::kFloat32 && req_.options.retypeTo ? *req_.options.retypeTo : *dt;
      Shape shape(t.sizes().begin(), t.sizes().end());
      std::string name = fmt::format("const{}", constCount_++);
      ir::Value* p = g_->addParam(name, TensorType{irType, shape});
      p->setName(name);
      res_.params.push_back(t);
      res_.paramNames.push_back(name);
      env_[v] = p;
      return p;
    }
    ir::Value* c = constant(*iv);
    env_[v] = c;
    return c;
  }
  if (auto it = ints_.find(v); it != ints_.end()) {
    if (it->second.isConstant())
      return g_->addConstant(static_cast<double>(it->second.constant()), DType::kInt64);
    if (isTensorValue(v)) return symScalar(v, it->second);  // prim::NumToTensor of a size
  }
  throw NotLowerable{fmt::format("operand %{} is not available", v->debugName())};
}

// A size-derived int used as a tensor (what prim::NumToTensor makes of it): a 0-dim int64 tensor
// computed per call by a kiln::sym_scalar eager node (Note [Eager calls] in lower.h).
ir::Value* Lowerer::symScalar(const tj::Value* v, const SymDim& value) {
  auto call = std::make_unique<EagerCall>();
  call->name = "kiln::sym_scalar";
  call->stackTemplate.emplace_back(int64_t{0});
  EagerCall::Slot slot;
  slot.kind = EagerCall::Slot::Kind::kScalar;
  slot.scalars.push_back({value, -1, EagerCall::Scalar::Type::kInt});
  call->slots.push_back(std::move(slot));
  int64_t id = static_cast<int64_t>(res_.eagerNodes.size());
  ir::Node* node = g_->appendMulti(OpKind::kEager, {}, {{"schema", call->name}, {"eager_id", id}},
                                   {TensorType{DType::kInt64, {}}});
  res_.eagerNodes.push_back(nullptr);
  res_.eagerCalls.push_back(std::move(call));
  env_[v] = node->output(0);
  return node->output(0);
}

// An int the lowering knows: computed from sizes, a literal, or a 0-dim integer tensor constant
// (Python traces keep `seq_len + 0` as tensor arithmetic).
std::optional<SymDim> Lowerer::symIntOf(const tj::Value* v) const {
  if (auto it = ints_.find(v); it != ints_.end()) return it->second;
  auto iv = constIValue(v);
  if (iv && iv->isInt()) return SymDim(iv->toInt());
  if (iv && iv->isTensor()) {
    const at::Tensor& t = iv->toTensor();
    if (t.dim() == 0 && at::isIntegralType(t.scalar_type(), /*includeBool=*/false))
      return SymDim(t.item<int64_t>());
  }
  return std::nullopt;
}

// A non-tensor argument computed when the call runs: a symbolic int, or a value read from a tensor
// (`operand` gives that tensor's IR operand index). nullopt for constants and anything else.
std::optional<EagerCall::Scalar> Lowerer::runtimeScalar(
    const tj::Value* v, const std::function<int(const tj::Value*)>& operand) {
  if (auto it = ints_.find(v); it != ints_.end())
    return EagerCall::Scalar{it->second, -1, EagerCall::Scalar::Type::kInt};
  if (auto it = items_.find(v); it != items_.end())
    return EagerCall::Scalar{SymDim(0), operand(it->second.tensor), it->second.type};
  return std::nullopt;
}

// The symbolic shape of a creation op's output (new_ones(size), zeros(size), full(size, v),
// arange(end), arange(start, end[, step +-1])) when its size arguments are known symbolically.
std::optional<Shape> Lowerer::creationShape(const tj::Node* n, const tj::Value* out) const {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (schema == nullptr) return std::nullopt;
  auto argIndex = [&](const char* name) -> std::optional<size_t> {
    auto i = schema->argumentIndexWithName(name);
    if (!i || static_cast<size_t>(*i) >= n->inputs().size()) return std::nullopt;
    return static_cast<size_t>(*i);
  };
  const size_t rank = tracedSizes(out).size();
  if (auto size = argIndex("size");
      size && schema->name() != "aten::expand" &&
      schema->arguments()[*size].type()->kind() == c10::TypeKind::ListType) {
    Shape shape;
    try {
      for (const auto& d : symIntsArg(n->input(*size))) {
        if (!d) return std::nullopt;  // a literal: let symbolize() match it
        shape.push_back(*d);
      }
    } catch (const NotLowerable&) {
      return std::nullopt;
    }
    if (shape.size() == rank) return shape;
    return std::nullopt;
  }
  if (schema->name() == "aten::arange" && rank == 1) {
    auto end = argIndex("end");
    if (!end) return std::nullopt;
    std::optional<SymDim> e = symIntOf(n->input(*end));
    std::optional<SymDim> start = SymDim(0);
    if (auto st = argIndex("start")) start = symIntOf(n->input(*st));
    // A step of 1 or -1, int or float (XLNet's arange(klen, -qlen, -1.0)); other steps need a
    // rounding division of symbolic sizes.
    int64_t step = 1;
    if (auto st = argIndex("step")) {
      auto iv = constIValue(n->input(*st));
      if (!iv) return std::nullopt;
      const double v =
          iv->isInt() ? static_cast<double>(iv->toInt()) : (iv->isDouble() ? iv->toDouble() : 0.0);
      if (v != 1.0 && v != -1.0) return std::nullopt;
      step = static_cast<int64_t>(v);
    }
    if (e && start && !(e->isConstant() && start->isConstant()))
      return Shape{step == 1 ? *e - *start : *start - *e};
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Emission

void Lowerer::checkAgainstTrace(const tj::Value* traced, const ir::Value* v) const {
  std::vector<int64_t> want = tracedSizes(traced);
  std::vector<int64_t> got = ctx_.eval(v->shape());
  DType wantType = tracedDType(traced);
  KILN_CHECK(want == got && wantType == v->dtype(),
             "capture: lowering of {} gives {} (= [{}]), the trace has {}[{}]",
             traced->node()->kind().toQualString(), v->type().toString(), fmt::join(got, ", "),
             ir::toString(wantType), fmt::join(want, ", "));
}

void Lowerer::bind(const tj::Value* traced, ir::Value* v, bool check) {
  // Note [Tracing in float32]: a float32 result the retype did not reach through type promotion
  // (1.0 - int_mask is float32, the default dtype, in XLNet) follows the retyped trace, as every
  // other float32 value of the graph does.
  if (check && req_.options.retypeTo && v->dtype() == DType::kFloat32 &&
      tracedDType(traced) == *req_.options.retypeTo)
    v = castTo(v, *req_.options.retypeTo);
  if (check) checkAgainstTrace(traced, v);
  ctx_.noteShape(v->shape());
  env_[traced] = v;
}

std::optional<ContentAssumption> Lowerer::paramContent(const tj::Value* v) const {
  auto it = contents_.find(v);
  if (it == contents_.end()) return std::nullopt;
  return it->second;
}

void Lowerer::assumeContent(const tj::Value* v) {
  auto it = contents_.find(v);
  KILN_CHECK(it != contents_.end(), "assumeContent: %{} has no known content", v->debugName());
  for (const ContentAssumption& a : res_.contents)
    if (a.param == it->second.param) return;
  res_.contents.push_back(it->second);
}

void Lowerer::assume(SymDim lhs, SymDim rhs, std::string what) {
  res_.assumptions.push_back({std::move(lhs), std::move(rhs), std::move(what)});
}

ir::Value* Lowerer::emit(OpKind kind, std::vector<ir::Value*> inputs, Attrs attrs) {
  return g_->op(kind, std::move(inputs), std::move(attrs));
}

ir::Value* Lowerer::emitTyped(OpKind kind, std::vector<ir::Value*> inputs, Attrs attrs,
                              TensorType type) {
  return g_->op(kind, std::move(inputs), std::move(attrs), std::move(type));
}

ir::Value* Lowerer::castTo(ir::Value* x, DType dtype) {
  if (x->dtype() == dtype) return x;
  return emitTyped(OpKind::kCast, {x}, {}, TensorType{dtype, x->shape()});
}

ir::Value* Lowerer::reshape(ir::Value* x, Shape shape) {
  if (shape == x->shape()) return x;
  return emitTyped(OpKind::kReshape, {x}, {}, TensorType{x->dtype(), std::move(shape)});
}

ir::Value* Lowerer::reshapeTo(ir::Value* x, const tj::Value* traced,
                              const std::vector<std::optional<SymDim>>& known) {
  std::vector<int64_t> out = tracedSizes(traced);
  bool ambiguous = false;
  auto shape = resolveReshape(x->shape(), out, known, ctx_, &ambiguous);
  if (!shape) {
    KILN_LOG_WARN("capture: {} from {} to [{}] kept concrete (no symbolic form found)",
                  traced->node()->kind().toQualString(), ir::toString(x->shape()),
                  fmt::join(out, ", "));
    shape = Shape(out.begin(), out.end());
    // A concrete target for a symbolic input is only right for the example sizes; it must be a
    // valid view of them at least.
    if (ir::numel(*shape) != ir::numel(x->shape()))
      throw NotLowerable{"view target not expressible over the graph's symbols"};
  }
  if (ambiguous && !ambiguousWarned_) {
    ambiguousWarned_ = true;
    KILN_LOG_WARN(
        "capture: ambiguous symbolic sizes in {} ({} -> {}); choose distinct example "
        "sizes for dynamic dims",
        traced->node()->kind().toQualString(), ir::toString(x->shape()), ir::toString(*shape));
  }
  return reshape(x, std::move(*shape));
}

ir::Value* Lowerer::slice(ir::Value* x, int64_t dim, int64_t start, int64_t step, SymDim length) {
  Shape shape = x->shape();
  if (shape[static_cast<size_t>(dim)] == length && start == 0 && step == 1) return x;
  shape[static_cast<size_t>(dim)] = length;
  return emitTyped(OpKind::kSlice, {x}, {{"dim", dim}, {"start", start}, {"step", step}},
                   TensorType{x->dtype(), shape});
}

// Symbolic shape for an output whose size the lowering cannot compute (eager ops): the shape of a
// same-sized tensor operand, else dims matched against symbolic dims seen so far.
Shape Lowerer::symbolize(const tj::Value* out, const tj::Node* node) {
  std::vector<int64_t> sizes = tracedSizes(out);
  for (const tj::Value* in : node->inputs()) {
    auto it = env_.find(in);
    if (it != env_.end() && ctx_.eval(it->second->shape()) == sizes) return it->second->shape();
  }
  Shape shape;
  for (size_t d = 0; d < sizes.size(); ++d) {
    std::optional<SymDim> same;
    for (const tj::Value* in : node->inputs()) {
      auto it = env_.find(in);
      if (it == env_.end() || it->second->rank() != static_cast<int64_t>(sizes.size())) continue;
      const SymDim& cand = it->second->shape()[d];
      if (ctx_.eval(cand) == sizes[d]) {
        same = cand;
        break;
      }
    }
    if (!same) same = ctx_.matchLiteral(sizes[d]);
    shape.push_back(same ? *same : SymDim(sizes[d]));
  }
  return shape;
}

// ---------------------------------------------------------------------------------------------
// Rules

// aten::size / aten::Int / int arithmetic / list construction: tracked as symbolic ints.
bool Lowerer::lowerShapeArith(const tj::Node* n) {
  auto kind = n->kind();
  auto isInt = [](const tj::Value* v) { return v->type()->kind() == c10::TypeKind::IntType; };
  if (kind == c10::aten::size && n->inputs().size() == 2 && isInt(n->output())) {
    auto it = env_.find(n->input(0));
    auto d = constIValue(n->input(1));
    if (it == env_.end() || !d) return false;
    ints_[n->output()] =
        it->second->shape().at(static_cast<size_t>(normDim(d->toInt(), it->second->rank())));
    return true;
  }
  if (kind == c10::aten::size && n->inputs().size() == 1) {
    auto it = env_.find(n->input(0));
    if (it == env_.end()) return false;
    intLists_[n->output()] = it->second->shape();
    return true;
  }
  const std::string name = kind.toQualString();
  if ((name == "prim::NumToTensor" || name == "aten::Int" || name == "aten::ScalarImplicit" ||
       name == "aten::Float" || name == "aten::Bool" || name == "aten::item") &&
      n->inputs().size() == 1) {
    if (auto s = symIntOf(n->input(0))) {
      if (name == "aten::Float" || name == "aten::Bool") return false;
      ints_[n->output()] = *s;
      return true;
    }
    // A scalar read from a tensor the call computes: read when the call runs.
    if (name != "prim::NumToTensor" && isTensorValue(n->input(0)) && !isTensorValue(n->output())) {
      using Type = EagerCall::Scalar::Type;
      auto outKind = n->output()->type()->kind();
      Type type = outKind == c10::TypeKind::FloatType  ? Type::kDouble
                  : outKind == c10::TypeKind::BoolType ? Type::kBool
                                                       : Type::kInt;
      if (outKind == c10::TypeKind::NumberType || outKind == c10::TypeKind::ScalarTypeType) {
        // item()/ScalarImplicit: the number's kind is the tensor's
        auto tt = n->input(0)->type()->cast<c10::TensorType>();
        auto st = tt ? tt->scalarType() : std::nullopt;
        if (!st) return false;
        type = at::isFloatingType(*st) ? Type::kDouble
               : *st == at::kBool      ? Type::kBool
                                       : Type::kInt;
      }
      items_[n->output()] = ItemOf{n->input(0), type};
      return true;
    }
    return false;
  }
  // x % y of known ints (torchvision Swin's window padding, (w - W % w) % w): Python's remainder
  // takes the divisor's sign, fmod the dividend's. Symbolic sizes have no remainder.
  if ((name == "aten::remainder" || name == "aten::fmod") && n->inputs().size() == 2 &&
      (isInt(n->output()) || isTensorValue(n->output()))) {
    auto a = symIntOf(n->input(0));
    auto b = symIntOf(n->input(1));
    if (!a || !b || !a->isConstant() || !b->isConstant() || b->constant() == 0) return false;
    int64_t r = a->constant() % b->constant();
    if (name == "aten::remainder" && r != 0 && ((r < 0) != (b->constant() < 0))) r += b->constant();
    ints_[n->output()] = SymDim(r);
    return true;
  }
  // Integer arithmetic, on ints or on the 0-dim tensors Python traces make of sizes.
  bool floorDiv = name == "aten::floordiv" || name == "aten::floor_divide";
  bool truncDiv = false;
  if (name == "aten::div" && n->inputs().size() == 3) {  // div(a, b, rounding_mode=...)
    auto mode = constIValue(n->input(2));
    if (mode && mode->isString()) {
      floorDiv = mode->toStringRef() == "floor";
      truncDiv = mode->toStringRef() == "trunc";
    }
  }
  const bool intArith = name == "aten::mul" || name == "aten::add" || name == "aten::sub" ||
                        name == "aten::rsub" || floorDiv || truncDiv || name == "aten::neg";
  if (intArith && (isInt(n->output()) || isTensorValue(n->output()))) {
    const size_t arity = name == "aten::neg" ? 1 : 2;
    if (n->inputs().size() < arity) return false;
    if (n->inputs().size() == 3 && !floorDiv && !truncDiv) {  // add/sub/rsub(x, y, alpha)
      auto alpha = constIValue(n->input(2));
      if (!alpha || !alpha->isInt() || alpha->toInt() != 1) return false;
    } else if (n->inputs().size() > arity && !floorDiv && !truncDiv) {
      return false;
    }
    auto a = symIntOf(n->input(0));
    if (!a) return false;
    if (name == "aten::neg") {
      ints_[n->output()] = SymDim(0) - *a;
      return true;
    }
    auto b = symIntOf(n->input(1));
    if (!b) return false;
    if (name == "aten::mul") ints_[n->output()] = *a * *b;
    if (name == "aten::add") ints_[n->output()] = *a + *b;
    if (name == "aten::sub") ints_[n->output()] = *a - *b;
    if (name == "aten::rsub") ints_[n->output()] = *b - *a;
    if (floorDiv || truncDiv) {
      if (a->isConstant() && b->isConstant() && b->constant() != 0) {
        int64_t x = a->constant();
        int64_t y = b->constant();
        int64_t q = x / y;  // C++ truncates; floor as Python does:
        if (floorDiv && (x % y != 0) && ((x < 0) != (y < 0))) --q;
        ints_[n->output()] = SymDim(q);
        return true;
      }
      auto q = b->isConstant() && b->constant() > 0 ? a->divExact(*b) : std::nullopt;
      if (!q) return false;
      ints_[n->output()] = *q;
    }
    return true;
  }
  return false;
}

// prim::TupleUnpack of a TupleConstruct, prim::ListUnpack of a ListConstruct or of aten::size(x):
// each output is the matching element.
bool Lowerer::lowerUnpack(const tj::Node* n) {
  const tj::Node* src = n->input(0)->node();
  if (auto it = intLists_.find(n->input(0)); it != intLists_.end()) {
    if (it->second.size() != n->outputs().size()) return false;
    for (size_t i = 0; i < n->outputs().size(); ++i) ints_[n->outputs()[i]] = it->second[i];
    return true;
  }
  if ((src->kind() != c10::prim::TupleConstruct && src->kind() != c10::prim::ListConstruct) ||
      src->inputs().size() != n->outputs().size())
    return false;
  for (size_t i = 0; i < n->outputs().size(); ++i) {
    const tj::Value* from = src->inputs()[i];
    const tj::Value* to = n->outputs()[i];
    if (auto e = env_.find(from); e != env_.end()) env_[to] = e->second;
    if (auto e = ints_.find(from); e != ints_.end()) ints_[to] = e->second;
    if (auto e = items_.find(from); e != items_.end()) items_[to] = e->second;
    if (auto e = intLists_.find(from); e != intLists_.end()) intLists_[to] = e->second;
  }
  return true;
}

// A node with a rule in the table (Note [Lowering table] in lower_rules.h): true when the rule
// lowered it and its outputs are bound.
bool Lowerer::lowerByRule(const tj::Node* n) {
  const LoweringTable::Entry* rule = loweringTable().find(n->kind());
  if (rule == nullptr) return false;
  if (rule->multi) return rule->multi(*this, n);
  // Ops like native_layer_norm also return saved statistics; unused extra outputs are fine.
  const tj::Value* out = n->outputs().empty() ? nullptr : n->outputs()[0];
  for (size_t k = 1; k < n->outputs().size(); ++k)
    if (!n->outputs()[k]->uses().empty()) return false;
  if (!out || !isTensorValue(out)) return false;
  ir::Value* v = rule->single(*this, n);
  if (v == nullptr) return false;
  bind(n->outputs()[0], v);
  return true;
}

void Lowerer::lowerEager(const tj::Node* n) {
  const std::string name = n->kind().toQualString();
  auto call = std::make_unique<EagerCall>();
  call->name = name;
  call->op = n->getOperation();
  if (const c10::FunctionSchema* schema = n->maybeSchema())
    call->overload = schema->overload_name();
  using Kind = EagerCall::Slot::Kind;
  std::vector<ir::Value*> operands;
  auto operandIndex = [&](const tj::Value* v) {
    operands.push_back(tensor(v));
    return static_cast<int>(operands.size() - 1);
  };
  for (size_t i = 0; i < n->inputs().size(); ++i) {
    const tj::Value* v = n->input(i);
    call->stackTemplate.emplace_back();
    EagerCall::Slot slot;
    slot.stackIndex = i;
    if (isTensorValue(v)) {
      if (v->node()->kind() == c10::prim::Constant && !env_.count(v)) {
        auto iv = constIValue(v);
        if (iv && iv->isTensor() && !fromAten(iv->toTensor().scalar_type())) {
          // A constant of a dtype kiln's IR lacks (float64, uint8): only eager ops read it, so
          // it stays in the call as the trace recorded it.
          call->stackTemplate.back() = *iv;
          continue;
        }
      }
      slot.kind = Kind::kTensor;
      slot.operands.push_back(operandIndex(v));
      call->slots.push_back(std::move(slot));
      continue;
    }
    auto listType = v->type()->cast<c10::ListType>();
    if (listType && v->node()->kind() == c10::prim::ListConstruct) {
      auto elem = listType->getElementType();
      bool optional = elem->kind() == c10::TypeKind::OptionalType;
      bool tensors = elem->kind() == c10::TypeKind::TensorType ||
                     (optional && elem->castRaw<c10::OptionalType>()->getElementType()->kind() ==
                                      c10::TypeKind::TensorType);
      if (tensors) {
        slot.kind = optional ? Kind::kOptionalList : Kind::kTensorList;
        for (const tj::Value* e : v->node()->inputs())
          slot.operands.push_back(isTensorValue(e) ? operandIndex(e) : -1);
        call->slots.push_back(std::move(slot));
        continue;
      }
    }
    if (auto iv = constIValue(v)) {
      const c10::FunctionSchema* schema = n->maybeSchema();
      const c10::Argument* arg =
          schema != nullptr && i < schema->arguments().size() ? &schema->arguments()[i] : nullptr;
      call->stackTemplate.back() = retypedLiteral(*iv, arg);
      continue;
    }
    if (auto sc = runtimeScalar(v, operandIndex)) {
      slot.kind = Kind::kScalar;
      slot.scalars.push_back(*sc);
      call->slots.push_back(std::move(slot));
      continue;
    }
    if (auto it = intLists_.find(v); it != intLists_.end()) {  // x.size()
      slot.kind = Kind::kIntList;
      for (const SymDim& d : it->second)
        slot.scalars.push_back({d, -1, EagerCall::Scalar::Type::kInt});
      call->slots.push_back(std::move(slot));
      continue;
    }
    if (listType && listType->getElementType()->kind() == c10::TypeKind::IntType &&
        v->node()->kind() == c10::prim::ListConstruct) {
      slot.kind = Kind::kIntList;
      for (const tj::Value* e : v->node()->inputs()) {
        if (auto iv = constIValue(e); iv && iv->isInt()) {
          slot.scalars.push_back({SymDim(iv->toInt()), -1, EagerCall::Scalar::Type::kInt});
        } else if (auto sc = runtimeScalar(e, operandIndex)) {
          slot.scalars.push_back(*sc);
        } else {
          throw NotLowerable{fmt::format("element %{} of int list argument {} has no known value",
                                         e->debugName(), i)};
        }
      }
      call->slots.push_back(std::move(slot));
      continue;
    }
    throw NotLowerable{
        fmt::format("argument {} (%{}: {}) is produced by {}, which kiln does not follow", i,
                    v->debugName(), v->type()->str(), v->node()->kind().toQualString())};
  }

  // Outputs: tensors, or a tensor list unpacked by the trace.
  std::vector<const tj::Value*> outs;
  for (size_t r = 0; r < n->outputs().size(); ++r) {
    const tj::Value* o = n->outputs()[r];
    if (o->uses().empty()) continue;
    call->results.push_back(r);
    if (isTensorValue(o)) {
      outs.push_back(o);
    } else if (o->type()->cast<c10::ListType>() && o->uses().size() == 1 &&
               o->uses()[0].user->kind() == c10::prim::ListUnpack) {
      for (const tj::Value* e : o->uses()[0].user->outputs()) outs.push_back(e);
    } else {
      throw NotLowerable{
          fmt::format("its output %{} of type {} is used", o->debugName(), o->type()->str())};
    }
  }
  std::vector<TensorType> types;
  for (const tj::Value* o : outs) {
    std::optional<Shape> shape = outs.size() == 1 ? creationShape(n, o) : std::nullopt;
    types.push_back(TensorType{tracedDType(o), shape ? *shape : symbolize(o, n)});
  }
  int64_t id = static_cast<int64_t>(res_.eagerNodes.size());
  ir::Node* node =
      g_->appendMulti(OpKind::kEager, operands, {{"schema", name}, {"eager_id", id}}, types);
  res_.eagerNodes.push_back(const_cast<tj::Node*>(n));
  res_.eagerCalls.push_back(std::move(call));
  unsupported_.insert(name);
  for (size_t k = 0; k < outs.size(); ++k) bind(outs[k], node->output(static_cast<int>(k)), false);
}

void Lowerer::run() {
  res_.graph = std::make_unique<ir::Graph>();
  g_ = res_.graph.get();
  const tj::Graph& tg = *req_.traced;
  const size_t numParams = req_.params.size();
  KILN_CHECK(tg.inputs().size() == numParams + req_.inputs.size(),
             "trace has {} inputs, expected {} params + {} inputs", tg.inputs().size(), numParams,
             req_.inputs.size());

  // Symbols for the declared dynamic dims.
  std::vector<std::string> names = res_.inputNames;
  std::vector<Shape> inputShapes;
  for (const at::Tensor& t : req_.inputs)
    inputShapes.emplace_back(t.sizes().begin(), t.sizes().end());
  std::map<std::string, int> symbolByName;
  std::vector<int64_t> symbolValues;
  for (const DynamicDim& dd : req_.options.dynamicDims) {
    auto it = std::find(names.begin(), names.end(), dd.input);
    KILN_USER_CHECK(it != names.end(), "capture: dynamic dim names input \"{}\", inputs are [{}]",
                    dd.input, fmt::join(names, ", "));
    size_t k = static_cast<size_t>(it - names.begin());
    int64_t rank = static_cast<int64_t>(inputShapes[k].size());
    int64_t dim = dd.dim < 0 ? dd.dim + rank : dd.dim;
    KILN_USER_CHECK(dim >= 0 && dim < rank,
                    "capture: dynamic dim {} of input \"{}\" is out of range for rank {}", dd.dim,
                    dd.input, rank);
    int64_t value = req_.inputs[k].size(dim);
    KILN_USER_CHECK(value >= 2,
                    "capture: input \"{}\" dim {} is dynamic but its example size is {}; use an "
                    "example size >= 2 (sizes 0 and 1 specialize broadcasting)",
                    dd.input, dim, value);
    int id = -1;
    if (!dd.symbol.empty() && symbolByName.count(dd.symbol)) {
      id = symbolByName.at(dd.symbol);
      KILN_USER_CHECK(symbolValues[static_cast<size_t>(id)] == value,
                      "capture: symbol {} has example sizes {} and {}", dd.symbol,
                      symbolValues[static_cast<size_t>(id)], value);
    } else {
      SymDim s = g_->newSymbol(dd.symbol);
      id = *s.asSymbol();
      if (!dd.symbol.empty()) symbolByName[dd.symbol] = id;
      symbolValues.push_back(value);
    }
    inputShapes[k][static_cast<size_t>(dim)] = SymDim::symbol(id);
  }
  ctx_ = SymContext(symbolValues);
  res_.exampleSymbolValues = symbolValues;

  for (size_t k = 0; k < req_.inputs.size(); ++k) {
    auto dt = fromAten(req_.inputs[k].scalar_type());
    if (!dt)
      throw Unsupported(fmt::format("capture: input {} (\"{}\"): kiln's IR has no dtype {}", k,
                                    names[k], c10::toString(req_.inputs[k].scalar_type())));
    // Note [Precision] in jit/runtime/optimize.h: float32 inputs stay float32, cast at entry.
    const bool keep = req_.options.castAtBoundary && *dt == DType::kFloat32;
    ir::Value* v = g_->addInput(
        names[k], TensorType{keep ? *dt : mapDType(req_.inputs[k].scalar_type()), inputShapes[k]});
    v->setName(names[k]);
    ctx_.noteShape(v->shape());
    env_[tg.inputs()[numParams + k]] = keep ? castTo(v, mapDType(at::kFloat)) : v;
  }
  for (size_t p = 0; p < numParams; ++p) {
    const tj::Value* tv = tg.inputs()[p];
    if (tv->uses().empty()) continue;
    const at::Tensor& t = req_.params[p];
    auto dt = fromAten(t.scalar_type());
    if (!dt)
      throw Unsupported(fmt::format("capture: parameter \"{}\": kiln's IR has no dtype {}",
                                    req_.paramNames[p], c10::toString(t.scalar_type())));
    ir::Value* v = g_->addParam(
        req_.paramNames[p],
        TensorType{mapDType(t.scalar_type()), Shape(t.sizes().begin(), t.sizes().end())});
    v->setName(req_.paramNames[p]);
    res_.params.push_back(t);
    res_.paramNames.push_back(req_.paramNames[p]);
    env_[tv] = v;
    if (std::optional<ContentAssumption> c = knownContent(t)) {
      c->param = req_.paramNames[p];
      contents_[tv] = std::move(*c);
    }
  }

  for (const tj::Node* n : tg.nodes()) {
    auto kind = n->kind();
    if (kind == c10::prim::Constant || kind == c10::prim::TupleConstruct) continue;
    if (kind == c10::prim::ListUnpack || kind == c10::prim::TupleUnpack) {
      // Unpacks of tensor lists are bound by their producer (lowerEager, the split rules).
      if (!lowerUnpack(n) && !env_.count(n->outputs()[0]))
        KILN_LOG_DEBUG("capture: {} of {} left unbound", kind.toQualString(),
                       n->input(0)->node()->kind().toQualString());
      continue;
    }
    if (lowerShapeArith(n)) continue;
    if (kind == c10::prim::ListConstruct) continue;  // consumed by its users
    bool done = false;
    try {
      done = lowerByRule(n);
    } catch (const NotLowerable& e) {
      KILN_LOG_DEBUG("capture: {} runs eagerly: {}", kind.toQualString(), e.why);
      reasons_.emplace(kind.toQualString(), e.why);  // the first reason per op
    }
    if (!done) {
      // Note [Mutation islands] (script_graph.cpp): writes into a tensor the graph made.
      reasons_.emplace(kind.toQualString(),
                       std::string_view(kind.toQualString()) == kMutationIslandOp
                           ? "writes into a tensor the module made, run as one step"
                           : "kiln has no lowering for it");
      try {
        lowerEager(n);
      } catch (const NotLowerable& e) {
        throw Unsupported(
            fmt::format("capture: cannot run {} eagerly inside a plan: {}", traced(n), e.why));
      }
    }
  }

  // Outputs: a tensor, or a tuple/list of tensors.
  KILN_CHECK(tg.outputs().size() == 1, "trace has {} outputs", tg.outputs().size());
  const tj::Value* result = tg.outputs()[0];
  std::vector<const tj::Value*> outs;
  if (isTensorValue(result)) {
    res_.outputs.kind = OutputStructure::Kind::kTensor;
    outs.push_back(result);
  } else if (result->node()->kind() == c10::prim::TupleConstruct ||
             result->node()->kind() == c10::prim::ListConstruct) {
    res_.outputs.kind = result->node()->kind() == c10::prim::TupleConstruct
                            ? OutputStructure::Kind::kTuple
                            : OutputStructure::Kind::kList;
    for (const tj::Value* v : result->node()->inputs()) {
      if (!isTensorValue(v))
        throw Unsupported(fmt::format(
            "capture: the module returns a {} with a non-tensor element ({}); kiln supports a "
            "tensor or a flat tuple/list of tensors",
            result->type()->str(), v->type()->str()));
      outs.push_back(v);
    }
  } else {
    throw Unsupported(fmt::format(
        "capture: the module returns {}; kiln supports a tensor or a flat tuple/list of tensors",
        result->type()->str()));
  }
  std::vector<ir::Value*> graphOutputs;
  for (const tj::Value* v : outs) {
    ir::Value* out = tensor(v);
    // Note [Precision]: an output the module gives in float32 goes back to float32.
    auto tt = v->type()->cast<c10::TensorType>();
    if (req_.options.castAtBoundary && tt && tt->scalarType() == at::kFloat)
      out = castTo(out, DType::kFloat32);
    graphOutputs.push_back(out);
  }
  res_.outputs.count = static_cast<int>(graphOutputs.size());
  g_->setOutputs(graphOutputs);
  // Lowering leaves a few dead nodes (the t of Note [Linear from addmm], partial rewrites that
  // fell back to eager, the aranges of Note [Indexing by aranges]); drop them so the captured graph
  // reads like the model. Eager nodes that write into an argument, or have no outputs, stay.
  for (bool changed = true; changed;) {
    changed = false;
    for (auto it = g_->nodes().rbegin(); it != g_->nodes().rend(); ++it) {
      ir::Node* node = it->get();
      if (node->category() == ir::OpCategory::kBoundary) continue;
      if (node->kind() == OpKind::kEager &&
          (node->outputs().empty() || eagerCallMutates(res_, node->attrs().getInt("eager_id"))))
        continue;
      bool dead = true;
      for (ir::Value* o : node->outputs())
        dead = dead && o->uses().empty() && !g_->isGraphOutput(o);
      if (dead) {
        g_->erase(node);
        changed = true;
        break;
      }
    }
  }
  dropUnusedEagerCalls();
}

// The calls of erased eager nodes go, and the others are numbered again in graph order: the
// capture cache stores one call per eager node (Note [Eager calls in the capture cache]), and the
// report names an op only while a node still runs it.
void Lowerer::dropUnusedEagerCalls() {
  std::vector<std::unique_ptr<EagerCall>> calls;
  std::vector<tj::Node*> nodes;
  std::set<std::string> ops;
  for (const auto& n : g_->nodes()) {
    if (n->kind() != OpKind::kEager) continue;
    const auto id = static_cast<size_t>(n->attrs().getInt("eager_id"));
    n->mutableAttrs().set("eager_id", static_cast<int64_t>(calls.size()));
    if (unsupported_.count(res_.eagerCalls[id]->name) != 0) ops.insert(res_.eagerCalls[id]->name);
    calls.push_back(std::move(res_.eagerCalls[id]));
    nodes.push_back(res_.eagerNodes[id]);
  }
  res_.eagerCalls = std::move(calls);
  res_.eagerNodes = std::move(nodes);
  res_.unsupportedOps.assign(ops.begin(), ops.end());
  for (const std::string& op : res_.unsupportedOps) res_.unsupportedReasons.push_back(reasons_[op]);
}

void lowerTrace(const LowerRequest& request, CapturedGraph& result) {
  Lowerer(request, result).run();
}

}  // namespace kiln::jit

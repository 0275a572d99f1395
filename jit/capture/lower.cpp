// Lowering of a traced torch::jit::Graph to kiln IR (the lowering table of issue 3).
#include "jit/capture/lower.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include <fmt/ranges.h>
#include <torch/csrc/jit/ir/constants.h>

#include "jit/capture/sym_resolve.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {

namespace tj = torch::jit;
using ir::Attrs;
using ir::DType;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::TensorType;

// Thrown inside a lowering rule when this particular call cannot be lowered: the node becomes
// kEager instead.
struct NotLowerable {
  std::string why;
};

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

// "aten::slice (%45)": names a traced node in messages.
std::string traced(const tj::Node* n) {
  return fmt::format("{} (%{})", n->kind().toQualString(),
                     n->outputs().empty() ? std::string("?") : n->outputs()[0]->debugName());
}

int64_t normDim(int64_t d, int64_t rank) {
  if (d < 0) d += rank;
  if (d < 0 || d >= std::max<int64_t>(rank, 1)) throw NotLowerable{"dim out of range"};
  return d;
}

class Lowerer {
 public:
  Lowerer(const LowerRequest& req, CapturedGraph& res) : req_(req), res_(res) {}

  void run();

 private:
  // --- operands ---
  ir::Value* tensor(const tj::Value* v);  // tensor or scalar constant operand
  ir::Value* constant(const c10::IValue& iv);
  std::optional<c10::IValue> constIValue(const tj::Value* v) const;
  bool isNone(const tj::Value* v) const;
  int64_t intArg(const tj::Value* v) const;
  double doubleArg(const tj::Value* v) const;
  bool boolArg(const tj::Value* v) const;
  std::vector<int64_t> intsArg(const tj::Value* v) const;
  std::vector<std::optional<SymDim>> symIntsArg(const tj::Value* v) const;
  std::vector<int64_t> tracedSizes(const tj::Value* v) const;
  DType tracedDType(const tj::Value* v) const;
  DType mapDType(at::ScalarType t) const;

  // --- emission ---
  ir::Value* emit(OpKind kind, std::vector<ir::Value*> inputs, Attrs attrs = {});
  ir::Value* emitTyped(OpKind kind, std::vector<ir::Value*> inputs, Attrs attrs, TensorType type);
  ir::Value* reshapeTo(ir::Value* x, const tj::Value* traced,
                       const std::vector<std::optional<SymDim>>& known = {});
  ir::Value* castTo(ir::Value* x, DType dtype);
  ir::Value* slice(ir::Value* x, int64_t dim, int64_t start, int64_t step, SymDim length);
  Shape symbolize(const tj::Value* out, const tj::Node* node);
  void bind(const tj::Value* traced, ir::Value* v, bool check = true);
  void checkAgainstTrace(const tj::Value* traced, const ir::Value* v) const;

  // --- rules ---
  bool lowerShapeArith(const tj::Node* n);
  bool lowerUnpack(const tj::Node* n);
  ir::Value* lowerNode(const tj::Node* n);
  bool lowerMulti(const tj::Node* n);
  void lowerEager(const tj::Node* n);

  const LowerRequest& req_;
  CapturedGraph& res_;
  ir::Graph* g_ = nullptr;
  SymContext ctx_;
  std::unordered_map<const tj::Value*, ir::Value*> env_;
  std::unordered_map<const tj::Value*, SymDim> ints_;  // int scalars computed from sizes
  std::unordered_map<const tj::Value*, std::vector<SymDim>> intLists_;
  // Scalars read from a tensor when the call runs (Note [Run-time scalars] in lower.h).
  struct ItemOf {
    const tj::Value* tensor;
    EagerCall::Scalar::Type type;
  };
  std::unordered_map<const tj::Value*, ItemOf> items_;
  ir::Value* symScalar(const tj::Value* v, const SymDim& value);
  std::optional<EagerCall::Scalar> runtimeScalar(const tj::Value* v,
                                                 const std::function<int(const tj::Value*)>& operand);
  std::optional<Shape> creationShape(const tj::Node* n, const tj::Value* out) const;
  std::optional<SymDim> symIntOf(const tj::Value* v) const;
  std::set<std::string> unsupported_;
  std::map<std::string, std::string> reasons_;  // why an op runs eagerly, first reason per op
  int constCount_ = 0;
  bool ambiguousWarned_ = false;
};

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

DType Lowerer::tracedDType(const tj::Value* v) const {
  auto tt = v->type()->cast<c10::TensorType>();
  KILN_CHECK(tt, "traced value %{} is not a tensor", v->debugName());
  auto st = tt->scalarType();
  if (!st) throw NotLowerable{"traced tensor without dtype"};
  return mapDType(*st);
}

ir::Value* Lowerer::constant(const c10::IValue& iv) {
  if (iv.isDouble()) return g_->addConstant(iv.toDouble(), DType::kFloat32);
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
        (iv->toTensor().scalar_type() == at::kDouble || iv->toTensor().scalar_type() == at::kLong)) {
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
// arange(end), arange(start, end)) when its size arguments are known symbolically.
std::optional<Shape> Lowerer::creationShape(const tj::Node* n, const tj::Value* out) const {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (schema == nullptr) return std::nullopt;
  auto argIndex = [&](const char* name) -> std::optional<size_t> {
    auto i = schema->argumentIndexWithName(name);
    if (!i || static_cast<size_t>(*i) >= n->inputs().size()) return std::nullopt;
    return static_cast<size_t>(*i);
  };
  auto symOf = [&](const tj::Value* v) { return symIntOf(v); };
  const size_t rank = tracedSizes(out).size();
  if (auto size = argIndex("size"); size && schema->name() != "aten::expand" &&
                                    schema->arguments()[*size].type()->kind() ==
                                        c10::TypeKind::ListType) {
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
    std::optional<SymDim> e = symOf(n->input(*end));
    std::optional<SymDim> start = SymDim(0);
    if (auto st = argIndex("start")) start = symOf(n->input(*st));
    if (auto step = argIndex("step")) {
      auto iv = constIValue(n->input(*step));
      if (!iv || !iv->isInt() || iv->toInt() != 1) return std::nullopt;
    }
    if (e && start && !e->isConstant()) return Shape{*e - *start};
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
  if (check) checkAgainstTrace(traced, v);
  ctx_.noteShape(v->shape());
  env_[traced] = v;
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
  if (*shape == x->shape()) return x;
  return emitTyped(OpKind::kReshape, {x}, {}, TensorType{x->dtype(), *shape});
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
  auto symInt = [&](const tj::Value* v) { return symIntOf(v); };
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
    if (auto s = symInt(n->input(0))) {
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
        type = at::isFloatingType(*st) ? Type::kDouble : *st == at::kBool ? Type::kBool : Type::kInt;
      }
      items_[n->output()] = ItemOf{n->input(0), type};
      return true;
    }
    return false;
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
                        floorDiv || truncDiv || name == "aten::neg";
  if (intArith && (isInt(n->output()) || isTensorValue(n->output()))) {
    const size_t arity = name == "aten::neg" ? 1 : 2;
    if (n->inputs().size() < arity) return false;
    if (n->inputs().size() == 3 && !floorDiv && !truncDiv) {  // add/sub(x, y, alpha)
      auto alpha = constIValue(n->input(2));
      if (!alpha || !alpha->isInt() || alpha->toInt() != 1) return false;
    } else if (n->inputs().size() > arity && !floorDiv && !truncDiv) {
      return false;
    }
    auto a = symInt(n->input(0));
    if (!a) return false;
    if (name == "aten::neg") {
      ints_[n->output()] = SymDim(0) - *a;
      return true;
    }
    auto b = symInt(n->input(1));
    if (!b) return false;
    if (name == "aten::mul") ints_[n->output()] = *a * *b;
    if (name == "aten::add") ints_[n->output()] = *a + *b;
    if (name == "aten::sub") ints_[n->output()] = *a - *b;
    if (floorDiv || truncDiv) {
      if (a->isConstant() && b->isConstant() && b->constant() != 0) {
        int64_t x = a->constant();
        int64_t y = b->constant();
        int64_t q = x / y;  // C++ truncates
        if (floorDiv && (x % y != 0) && ((x < 0) != (y < 0))) --q;  // floor, as Python
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

ir::Value* Lowerer::lowerNode(const tj::Node* n) {
  const std::string name = n->kind().toQualString();
  const auto& in = n->inputs();
  const size_t nin = in.size();
  // Ops like native_layer_norm also return saved statistics; unused extra outputs are fine.
  const tj::Value* out = n->outputs().empty() ? nullptr : n->outputs()[0];
  for (size_t k = 1; k < n->outputs().size(); ++k)
    if (!n->outputs()[k]->uses().empty()) return nullptr;
  if (!out || !isTensorValue(out)) return nullptr;
  auto T = [&](size_t i) { return tensor(in.at(i)); };

  static const std::map<std::string, OpKind> kUnary = {
      {"aten::neg", OpKind::kNeg},   {"aten::abs", OpKind::kAbs},
      {"aten::exp", OpKind::kExp},   {"aten::log", OpKind::kLog},
      {"aten::sqrt", OpKind::kSqrt}, {"aten::rsqrt", OpKind::kRsqrt},
      {"aten::tanh", OpKind::kTanh}, {"aten::sigmoid", OpKind::kSigmoid},
      {"aten::relu", OpKind::kRelu}, {"aten::silu", OpKind::kSilu},
      {"aten::erf", OpKind::kErf},
  };
  static const std::map<std::string, OpKind> kBinary = {
      {"aten::mul", OpKind::kMul},         {"aten::maximum", OpKind::kMaximum},
      {"aten::minimum", OpKind::kMinimum}, {"aten::eq", OpKind::kEq},
      {"aten::ne", OpKind::kNe},           {"aten::lt", OpKind::kLt},
      {"aten::le", OpKind::kLe},           {"aten::gt", OpKind::kGt},
      {"aten::ge", OpKind::kGe},
  };
  static const std::set<std::string> kIdentity = {
      "aten::contiguous", "aten::clone",   "aten::detach",          "aten::alias",
      "aten::lift_fresh", "aten::dropout", "aten::feature_dropout", "aten::alpha_dropout",
  };
  static const std::set<std::string> kCasts = {"aten::to", "aten::type_as", "aten::_to_copy",
                                               "aten::_cast_Float", "aten::_cast_Half"};
  static const std::set<std::string> kViews = {
      "aten::view",       "aten::reshape",   "aten::_unsafe_view",
      "aten::flatten",    "aten::unflatten", "aten::view_as",
      "aten::reshape_as", "aten::squeeze",   "aten::unsqueeze"};

  if (auto it = kUnary.find(name); it != kUnary.end()) return emit(it->second, {T(0)});
  if (auto it = kBinary.find(name); it != kBinary.end() && nin == 2)
    return emit(it->second, {T(0), T(1)});

  if (kIdentity.count(name)) {
    if (name.find("dropout") != std::string::npos && nin >= 3 && boolArg(in[2]))
      throw NotLowerable{"dropout in training mode"};
    return T(0);
  }
  if (kCasts.count(name)) return castTo(T(0), tracedDType(out));

  if (name == "aten::add" || name == "aten::sub" || name == "aten::rsub") {
    // add/sub: a op alpha*b; rsub: b - alpha*a.
    bool reversed = name == "aten::rsub";
    ir::Value* a = reversed ? T(1) : T(0);
    ir::Value* b = reversed ? T(0) : T(1);
    if (nin >= 3 && doubleArg(in[2]) != 1.0)
      b = emit(OpKind::kMul, {b, constant(*constIValue(in[2]))});
    return emit(name == "aten::add" ? OpKind::kAdd : OpKind::kSub, {a, b});
  }
  if (name == "aten::div") {
    if (nin == 3 && !isNone(in[2])) throw NotLowerable{"div with rounding_mode"};
    return emit(OpKind::kDiv, {T(0), T(1)});
  }
  if (name == "aten::pow") {
    if (in[1]->node()->kind() == c10::prim::Constant && !constIValue(in[1])->isTensor() &&
        isTensorValue(in[0])) {
      return emit(OpKind::kPowScalar, {T(0)}, {{"exponent", doubleArg(in[1])}});
    }
    return emit(OpKind::kPow, {T(0), T(1)});
  }
  if (name == "aten::gelu") {
    std::string approx = "none";
    if (nin >= 2) {
      auto iv = constIValue(in[1]);
      if (iv && iv->isString()) approx = iv->toStringRef();
    }
    if (approx == "tanh") return emit(OpKind::kGeluTanh, {T(0)});
    if (approx != "none") throw NotLowerable{"gelu approximate=" + approx};
    return emit(OpKind::kGelu, {T(0)});
  }
  if (name == "aten::clamp" || name == "aten::clamp_min" || name == "aten::clamp_max") {
    Attrs attrs;
    auto scalarOrNone = [&](size_t i, const char* key) {
      if (i >= nin || isNone(in[i])) return;
      if (isTensorValue(in[i])) throw NotLowerable{"clamp with tensor bounds"};
      attrs.set(key, doubleArg(in[i]));
    };
    if (name == "aten::clamp") {
      scalarOrNone(1, "min");
      scalarOrNone(2, "max");
    } else {
      scalarOrNone(1, name == "aten::clamp_min" ? "min" : "max");
    }
    return emit(OpKind::kClamp, {T(0)}, std::move(attrs));
  }
  if (name == "aten::where" && nin == 3) return emit(OpKind::kWhere, {T(0), T(1), T(2)});
  if (name == "aten::masked_fill" && nin == 3) return emit(OpKind::kWhere, {T(1), T(2), T(0)});

  if (name == "aten::softmax" || name == "aten::_softmax" || name == "aten::log_softmax" ||
      name == "aten::_log_softmax") {
    ir::Value* x = T(0);
    if (nin >= 3 && !isNone(in[2]) && !constIValue(in[2])->isBool()) {
      x = castTo(x, tracedDType(out));
    } else if (nin >= 3 && constIValue(in[2])->isBool() && boolArg(in[2])) {
      x = castTo(x, tracedDType(out));  // _softmax(half_to_float=true)
    }
    bool log = name.find("log_") != std::string::npos;
    return emit(log ? OpKind::kLogSoftmax : OpKind::kSoftmax, {x},
                {{"dim", normDim(intArg(in[1]), x->rank())}});
  }
  if (name == "aten::layer_norm" || name == "aten::native_layer_norm") {
    ir::Value* x = T(0);
    auto normalized = intsArg(in[1]);
    bool hasW = !isNone(in[2]);
    bool hasB = !isNone(in[3]);
    if (hasW != hasB) throw NotLowerable{"layer_norm with only one of weight/bias"};
    std::vector<ir::Value*> ops{x};
    if (hasW) {
      ops.push_back(T(2));
      ops.push_back(T(3));
    }
    return emit(
        OpKind::kLayerNorm, std::move(ops),
        {{"normalized_ndim", static_cast<int64_t>(normalized.size())}, {"eps", doubleArg(in[4])}});
  }
  if (name == "aten::sum" || name == "aten::mean" || name == "aten::amax" || name == "aten::amin") {
    ir::Value* x = T(0);
    std::vector<int64_t> dims;
    bool keepdim = false;
    const tj::Value* dtypeArg = nullptr;
    if (name == "aten::amax" || name == "aten::amin") {
      dims = intsArg(in[1]);
      keepdim = boolArg(in[2]);
    } else if (nin == 2) {  // sum(self, dtype)
      dtypeArg = in[1];
    } else {
      if (!isNone(in[1])) dims = intsArg(in[1]);
      keepdim = boolArg(in[2]);
      if (nin >= 4) dtypeArg = in[3];
    }
    if (dtypeArg && !isNone(dtypeArg)) x = castTo(x, tracedDType(out));
    if (name == "aten::sum" && !ir::isFloating(x->dtype())) x = castTo(x, DType::kInt64);
    if (dims.empty())
      for (int64_t d = 0; d < x->rank(); ++d) dims.push_back(d);
    for (int64_t& d : dims) d = normDim(d, x->rank());
    std::sort(dims.begin(), dims.end());
    dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
    OpKind kind = name == "aten::sum"    ? OpKind::kSum
                  : name == "aten::mean" ? OpKind::kMean
                  : name == "aten::amax" ? OpKind::kAmax
                                         : OpKind::kAmin;
    return emit(kind, {x}, {{"dims", dims}, {"keepdim", keepdim}});
  }

  if (kViews.count(name)) {
    std::vector<std::optional<SymDim>> known;
    if ((name == "aten::view" || name == "aten::reshape") && nin == 2) {
      try {
        known = symIntsArg(in[1]);
      } catch (const NotLowerable&) {
        known.clear();
      }
    }
    if ((name == "aten::view_as" || name == "aten::reshape_as") && env_.count(in[1])) {
      ir::Value* x = T(0);
      const Shape& target = env_.at(in[1])->shape();
      if (target == x->shape()) return x;
      if (ir::numel(target) == ir::numel(x->shape()))
        return emitTyped(OpKind::kReshape, {x}, {}, TensorType{x->dtype(), target});
    }
    return reshapeTo(T(0), out, known);
  }
  if (name == "aten::permute") {
    ir::Value* x = T(0);
    auto perm = intsArg(in[1]);
    for (int64_t& p : perm) p = normDim(p, x->rank());
    bool identity = true;
    for (size_t i = 0; i < perm.size(); ++i)
      identity = identity && perm[i] == static_cast<int64_t>(i);
    if (identity) return x;
    return emit(OpKind::kPermute, {x}, {{"perm", perm}});
  }
  if (name == "aten::transpose" || name == "aten::t" || name == "aten::swapaxes") {
    ir::Value* x = T(0);
    int64_t rank = x->rank();
    if (name == "aten::t" && rank < 2) return x;
    int64_t a = name == "aten::t" ? 0 : normDim(intArg(in[1]), rank);
    int64_t b = name == "aten::t" ? 1 : normDim(intArg(in[2]), rank);
    if (a == b) return x;
    std::vector<int64_t> perm(static_cast<size_t>(rank));
    for (int64_t i = 0; i < rank; ++i) perm[static_cast<size_t>(i)] = i;
    std::swap(perm[static_cast<size_t>(a)], perm[static_cast<size_t>(b)]);
    return emit(OpKind::kPermute, {x}, {{"perm", perm}});
  }
  if (name == "aten::expand" || name == "aten::expand_as" || name == "aten::broadcast_to") {
    ir::Value* x = T(0);
    Shape target;
    std::vector<std::optional<SymDim>> known;
    if (name != "aten::expand_as") {
      try {
        known = symIntsArg(in[1]);
      } catch (const NotLowerable&) {
        known.clear();
      }
    }
    if (name == "aten::expand_as" && env_.count(in[1])) {
      target = env_.at(in[1])->shape();
    } else if (!known.empty() && known.size() >= static_cast<size_t>(x->rank())) {
      // Sizes the graph computed or wrote as constants; -1 keeps the input's dim, and a literal
      // the C++ tracer recorded is matched against the symbols seen (resolveExpand).
      bool ambiguous = false;
      Shape guess = resolveExpand(x->shape(), tracedSizes(out), ctx_, &ambiguous);
      const size_t offset = known.size() - static_cast<size_t>(x->rank());
      for (size_t j = 0; j < known.size(); ++j) {
        if (known[j]) {
          target.push_back(*known[j]);
        } else if (j >= offset && ctx_.eval(x->shape()[j - offset]) == tracedSizes(out)[j]) {
          target.push_back(x->shape()[j - offset]);  // -1, or the input's own size
        } else {
          target.push_back(guess[j]);
        }
      }
    } else {
      bool ambiguous = false;
      target = resolveExpand(x->shape(), tracedSizes(out), ctx_, &ambiguous);
    }
    if (target == x->shape()) return x;
    return emitTyped(OpKind::kExpand, {x}, {}, TensorType{x->dtype(), target});
  }
  if (name == "aten::slice" || name == "aten::narrow" || name == "aten::select") {
    ir::Value* x = T(0);
    int64_t dim = normDim(intArg(in[1]), x->rank());
    const SymDim size = x->shape()[static_cast<size_t>(dim)];
    const int64_t sizeVal = ctx_.eval(size);
    int64_t start = 0;
    int64_t step = 1;
    std::optional<SymDim> length;
    if (name == "aten::select") {
      start = intArg(in[2]);
      if (start < 0) {
        if (!size.isConstant()) throw NotLowerable{"negative index into a symbolic dim"};
        start += sizeVal;
      }
      ir::Value* s = slice(x, dim, start, 1, SymDim(1));
      return reshapeTo(s, out);
    }
    if (name == "aten::narrow") {
      start = intArg(in[2]);
      if (start < 0) throw NotLowerable{"narrow with negative start"};
      length = SymDim(intArg(in[3]));
    } else {
      std::optional<int64_t> startArg =
          isNone(in[2]) ? std::nullopt : std::optional<int64_t>(intArg(in[2]));
      // An end computed from sizes (x[:, :seq]) is symbolic (Note [Run-time scalars]).
      std::optional<SymDim> endSym;
      if (auto it = ints_.find(in[3]); it != ints_.end() && !it->second.isConstant())
        endSym = it->second;
      std::optional<int64_t> endArg = isNone(in[3]) || endSym
                                          ? std::nullopt
                                          : std::optional<int64_t>(intArg(in[3]));
      step = intArg(in[4]);
      if (endSym) {
        if (step != 1) throw NotLowerable{"slice with step != 1"};
        start = isNone(in[2]) ? 0 : intArg(in[2]);
        if (start < 0) throw NotLowerable{"negative start with a symbolic end"};
        if (*endSym == size) return slice(x, dim, start, 1, size - SymDim(start));
        // Eager clamps an end past the size; kiln's slice does not, so the plan assumes it
        // (Note [Size assumptions] in capture.h).
        if (ctx_.eval(*endSym) > sizeVal || ctx_.eval(*endSym) < start)
          throw NotLowerable{"slice end outside the dim in the example"};
        res_.assumptions.push_back(
            {*endSym, size, fmt::format("slice end {} <= size {} of dim {} in {}",
                                         endSym->toString(), size.toString(), dim,
                                         traced(n))});
        res_.assumptions.push_back({SymDim(start), *endSym,
                                    fmt::format("slice start {} <= end {} in {}", start,
                                                endSym->toString(), traced(n))});
        return slice(x, dim, start, 1, *endSym - SymDim(start));
      }
      if (step != 1) throw NotLowerable{"slice with step != 1"};
      start = startArg.value_or(0);
      if (start < 0) {
        if (!size.isConstant()) throw NotLowerable{"negative start on a symbolic dim"};
        start = std::max<int64_t>(start + sizeVal, 0);
      }
      start = std::min(start, sizeVal);
      int64_t end = endArg.value_or(std::numeric_limits<int64_t>::max());
      if (end >= sizeVal) {
        length = size - SymDim(start);  // to the end (also a literal equal to the size)
      } else if (end < 0) {
        length = size + SymDim(end) - SymDim(start);
      } else if (size.isConstant()) {
        // x[:T] of a static buffer, T a dynamic size (Note [Symbolic dims in captured graphs]).
        auto m = ctx_.matchLiteral(end);
        length = m ? *m - SymDim(start) : SymDim(end - start);
      } else {
        length = SymDim(end - start);
      }
    }
    return slice(x, dim, start, step, *length);
  }
  if (name == "aten::cat" || name == "aten::concat" || name == "aten::concatenate") {
    const tj::Node* list = in[0]->node();
    if (list->kind() != c10::prim::ListConstruct) throw NotLowerable{"cat of a non-literal list"};
    std::vector<ir::Value*> parts;
    for (const tj::Value* v : list->inputs()) parts.push_back(tensor(v));
    if (parts.empty()) throw NotLowerable{"empty cat"};
    int64_t dim = normDim(intArg(in[1]), parts[0]->rank());
    if (parts.size() == 1) return parts[0];
    return emit(OpKind::kCat, std::move(parts), {{"dim", dim}});
  }

  if (name == "aten::linear") {
    std::vector<ir::Value*> ops{T(0), T(1)};
    if (nin >= 3 && !isNone(in[2])) ops.push_back(T(2));
    return emit(OpKind::kLinear, std::move(ops));
  }
  if (name == "aten::matmul" && in[1]->node()->kind() == c10::aten::t &&
      tensor(in[1]->node()->input(0))->rank() == 2 && T(0)->rank() >= 2) {
    // Note [Linear from addmm], for inputs of rank > 2 (x @ w.t(); the bias add stays an add).
    return emit(OpKind::kLinear, {T(0), tensor(in[1]->node()->input(0))});
  }
  if (name == "aten::matmul" || name == "aten::mm") return emit(OpKind::kMatMul, {T(0), T(1)});
  if (name == "aten::bmm") return emit(OpKind::kBmm, {T(0), T(1)});
  if (name == "aten::addmm" && in[2]->node()->kind() == c10::aten::t && nin > 4 &&
      doubleArg(in[3]) == 1.0 && doubleArg(in[4]) == 1.0 && T(0)->rank() == 1) {
    // Note [Linear from addmm]: the tracer records nn::Linear decomposed (t + addmm); kLinear
    // keeps the weight in its [out, in] layout and the bias as an epilogue. The t is left dead.
    return emit(OpKind::kLinear, {T(1), tensor(in[2]->node()->input(0)), T(0)});
  }
  if (name == "aten::addmm" || name == "aten::baddbmm") {
    return emit(
        name == "aten::addmm" ? OpKind::kAddmm : OpKind::kBaddbmm, {T(0), T(1), T(2)},
        {{"beta", nin > 3 ? doubleArg(in[3]) : 1.0}, {"alpha", nin > 4 ? doubleArg(in[4]) : 1.0}});
  }
  if (name == "aten::scaled_dot_product_attention") {
    if (nin > 4 && doubleArg(in[4]) != 0.0) throw NotLowerable{"sdpa with dropout"};
    if (nin > 7 && boolArg(in[7])) throw NotLowerable{"sdpa with enable_gqa"};
    std::vector<ir::Value*> ops{T(0), T(1), T(2)};
    if (nin > 3 && !isNone(in[3])) ops.push_back(T(3));
    Attrs attrs{{"is_causal", nin > 5 ? boolArg(in[5]) : false}};
    if (nin > 6 && !isNone(in[6])) attrs.set("scale", doubleArg(in[6]));
    return emit(OpKind::kSdpa, std::move(ops), std::move(attrs));
  }
  if (name == "aten::_convolution" || name == "aten::convolution") {
    if (boolArg(in[6])) throw NotLowerable{"transposed convolution"};
    if (T(0)->rank() != 4) throw NotLowerable{"convolution that is not 2-d"};
    std::vector<ir::Value*> ops{T(0), T(1)};
    if (!isNone(in[2])) ops.push_back(T(2));
    return emit(OpKind::kConv2d, std::move(ops),
                {{"stride", intsArg(in[3])},
                 {"padding", intsArg(in[4])},
                 {"dilation", intsArg(in[5])},
                 {"groups", intArg(in[8])}});
  }
  if (name == "aten::conv2d") {
    auto padIv = constIValue(in[4]);
    if (!padIv || !padIv->isIntList()) throw NotLowerable{"conv2d with string padding"};
    auto pair = [](std::vector<int64_t> v) {
      if (v.size() == 1) v.push_back(v[0]);
      return v;
    };
    std::vector<ir::Value*> ops{T(0), T(1)};
    if (!isNone(in[2])) ops.push_back(T(2));
    return emit(OpKind::kConv2d, std::move(ops),
                {{"stride", pair(intsArg(in[3]))},
                 {"padding", pair(intsArg(in[4]))},
                 {"dilation", pair(intsArg(in[5]))},
                 {"groups", intArg(in[6])}});
  }
  if (name == "aten::batch_norm" || name == "aten::_batch_norm_impl_index" ||
      name == "aten::native_batch_norm" || name == "aten::_native_batch_norm_legit_no_training") {
    const bool noTrainingArg = name == "aten::_native_batch_norm_legit_no_training";
    // Note [Eval batch_norm decomposition]
    // Eval-mode batch_norm is pointwise: (x - mean) * rsqrt(var + eps) * w + b with the per-channel
    // params reshaped to [C, 1, ...]. Decomposing it lets the partitioner fuse it with the conv's
    // epilogue (relu) instead of leaving a library call; running stats stay params by reference,
    // so updated statistics are seen. Training mode (batch statistics) stays eager.
    if (!noTrainingArg && boolArg(in[5])) throw NotLowerable{"batch_norm in training mode"};
    if (isNone(in[3]) || isNone(in[4])) throw NotLowerable{"batch_norm without running stats"};
    ir::Value* x = T(0);
    if (x->rank() < 2) throw NotLowerable{"batch_norm of rank < 2"};
    Shape chan{x->shape()[1]};
    for (int64_t d = 2; d < x->rank(); ++d) chan.emplace_back(1);
    auto perChannel = [&](ir::Value* p) {
      return emitTyped(OpKind::kReshape, {p}, {}, TensorType{p->dtype(), chan});
    };
    ir::Value* mean = perChannel(T(3));
    ir::Value* var = perChannel(T(4));
    ir::Value* eps = g_->addConstant(doubleArg(in[noTrainingArg ? 6 : 7]), DType::kFloat32);
    ir::Value* inv = emit(OpKind::kRsqrt, {emit(OpKind::kAdd, {var, eps})});
    ir::Value* y = emit(OpKind::kMul, {emit(OpKind::kSub, {x, mean}), inv});
    if (!isNone(in[1])) y = emit(OpKind::kMul, {y, perChannel(T(1))});
    if (!isNone(in[2])) y = emit(OpKind::kAdd, {y, perChannel(T(2))});
    return castTo(y, tracedDType(out));
  }
  return nullptr;
}

// Ops with a tensor-list output unpacked by the trace (chunk/split/unbind): one slice each.
bool Lowerer::lowerMulti(const tj::Node* n) {
  const std::string name = n->kind().toQualString();
  if (name != "aten::chunk" && name != "aten::split" && name != "aten::split_with_sizes" &&
      name != "aten::unsafe_chunk" && name != "aten::unsafe_split" && name != "aten::unbind")
    return false;
  if (n->outputs().size() != 1 || n->output()->uses().size() != 1) return false;
  const tj::Node* unpack = n->output()->uses()[0].user;
  if (unpack->kind() != c10::prim::ListUnpack) return false;
  ir::Value* x = tensor(n->input(0));
  int64_t dim = normDim(intArg(n->input(name == "aten::unbind" ? 1 : 2)), x->rank());
  const SymDim size = x->shape()[static_cast<size_t>(dim)];
  if (!size.isConstant()) throw NotLowerable{"split along a symbolic dim"};
  int64_t start = 0;
  std::vector<std::pair<const tj::Value*, ir::Value*>> results;
  for (const tj::Value* o : unpack->outputs()) {
    std::vector<int64_t> sizes = tracedSizes(o);
    if (name == "aten::unbind") {
      ir::Value* s = slice(x, dim, start, 1, SymDim(1));
      results.emplace_back(o, reshapeTo(s, o));
      start += 1;
    } else {
      int64_t len = sizes.at(static_cast<size_t>(dim));
      results.emplace_back(o, slice(x, dim, start, 1, SymDim(len)));
      start += len;
    }
  }
  for (auto& [o, v] : results) bind(o, v);
  return true;
}

void Lowerer::lowerEager(const tj::Node* n) {
  const std::string name = n->kind().toQualString();
  auto call = std::make_unique<EagerCall>();
  call->name = name;
  call->op = n->getOperation();
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
      call->stackTemplate.back() = *iv;
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
    throw NotLowerable{fmt::format("argument {} (%{}: {}) is produced by {}, which kiln does not follow",
                                   i, v->debugName(), v->type()->str(),
                                   v->node()->kind().toQualString())};
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
      throw NotLowerable{fmt::format("its output %{} of type {} is used", o->debugName(),
                                     o->type()->str())};
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
    ir::Value* v =
        g_->addInput(names[k], TensorType{mapDType(req_.inputs[k].scalar_type()), inputShapes[k]});
    v->setName(names[k]);
    ctx_.noteShape(v->shape());
    env_[tg.inputs()[numParams + k]] = v;
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
  }

  for (const tj::Node* n : tg.nodes()) {
    auto kind = n->kind();
    if (kind == c10::prim::Constant || kind == c10::prim::TupleConstruct) continue;
    if (kind == c10::prim::ListUnpack || kind == c10::prim::TupleUnpack) {
      // Unpacks of eager tensor lists are bound by their producer (lowerEager, lowerMulti).
      if (!lowerUnpack(n) && !env_.count(n->outputs()[0]))
        KILN_LOG_DEBUG("capture: {} of {} left unbound", kind.toQualString(),
                       n->input(0)->node()->kind().toQualString());
      continue;
    }
    if (lowerShapeArith(n)) continue;
    if (kind == c10::prim::ListConstruct) continue;  // consumed by its users
    bool done = false;
    try {
      if (lowerMulti(n)) {
        done = true;
      } else if (ir::Value* v = lowerNode(n)) {
        bind(n->output(), v);
        done = true;
      }
    } catch (const NotLowerable& e) {
      KILN_LOG_DEBUG("capture: {} runs eagerly: {}", kind.toQualString(), e.why);
      reasons_.emplace(kind.toQualString(), e.why);  // the first reason per op
    }
    if (!done) {
      if (n->kind() != c10::prim::ListConstruct)
        reasons_.emplace(kind.toQualString(), "kiln has no lowering for it");
      try {
        lowerEager(n);
      } catch (const NotLowerable& e) {
        throw Unsupported(fmt::format("capture: cannot run {} eagerly inside a plan: {}",
                                      traced(n), e.why));
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
  for (const tj::Value* v : outs) graphOutputs.push_back(tensor(v));
  res_.outputs.count = static_cast<int>(graphOutputs.size());
  g_->setOutputs(graphOutputs);
  // Lowering leaves a few dead nodes (the t of Note [Linear from addmm], partial rewrites that
  // fell back to eager); drop them so the captured graph reads like the model. Eager nodes stay.
  for (bool changed = true; changed;) {
    changed = false;
    for (auto it = g_->nodes().rbegin(); it != g_->nodes().rend(); ++it) {
      ir::Node* node = it->get();
      if (node->category() == ir::OpCategory::kBoundary || node->kind() == OpKind::kEager) continue;
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
  res_.unsupportedOps.assign(unsupported_.begin(), unsupported_.end());
  for (const std::string& op : res_.unsupportedOps) res_.unsupportedReasons.push_back(reasons_[op]);
}

}  // namespace

void lowerTrace(const LowerRequest& request, CapturedGraph& result) {
  Lowerer(request, result).run();
}

}  // namespace kiln::jit

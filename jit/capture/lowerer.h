#pragma once
// Internal to jit/capture: one lowering of a traced graph to kiln IR (lowerTrace in lower.h), and
// the operand and emission helpers the lowering rules (lower_rules.h) are written with.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/csrc/jit/ir/ir.h>

#include "jit/capture/lower.h"
#include "jit/capture/sym_resolve.h"

namespace kiln::jit {

// Thrown inside a lowering rule when this particular call cannot be lowered: the node becomes
// kEager instead, with `why` as its reason in the capture report.
struct NotLowerable {
  std::string why;
};

// kiln's dtype for an ATen one; nullopt where the IR has none (float64, uint8, ...).
std::optional<ir::DType> fromAten(at::ScalarType t);

bool isTensorValue(const torch::jit::Value* v);

// "aten::slice (%45)": names a traced node in messages.
std::string traced(const torch::jit::Node* n);

// `d` (negative counts from the end) as a dim of a tensor of rank `rank`.
inline int64_t normDim(int64_t d, int64_t rank) {
  if (d < 0) d += rank;
  if (d < 0 || d >= std::max<int64_t>(rank, 1)) throw NotLowerable{"dim out of range"};
  return d;
}

class Lowerer {
 public:
  Lowerer(const LowerRequest& req, CapturedGraph& res) : req_(req), res_(res) {}

  void run();

  // --- operands ---
  // The IR value of a tensor operand, or a scalar constant; may add a constant or a param.
  ir::Value* tensor(const torch::jit::Value* v);
  // Input i of n, as tensor() lowers it.
  ir::Value* operand(const torch::jit::Node* n, size_t i) { return tensor(n->inputs().at(i)); }
  ir::Value* constant(const c10::IValue& iv);
  std::optional<c10::IValue> constIValue(const torch::jit::Value* v) const;
  bool isNone(const torch::jit::Value* v) const;
  int64_t intArg(const torch::jit::Value* v) const;
  double doubleArg(const torch::jit::Value* v) const;
  bool boolArg(const torch::jit::Value* v) const;
  std::vector<int64_t> intsArg(const torch::jit::Value* v) const;
  std::vector<std::optional<ir::SymDim>> symIntsArg(const torch::jit::Value* v) const;
  std::vector<int64_t> tracedSizes(const torch::jit::Value* v) const;
  ir::DType tracedDType(const torch::jit::Value* v) const;
  // What `v` is already lowered to, else nullptr (unlike tensor(), adds nothing).
  ir::Value* lowered(const torch::jit::Value* v) const;
  // An int the trace computed from sizes (Note [Run-time scalars] in lower.h), else nullopt.
  std::optional<ir::SymDim> sizeInt(const torch::jit::Value* v) const;
  // An int known when lowering: computed from sizes (sizeInt), a literal, or a 0-dim integer
  // tensor constant.
  std::optional<ir::SymDim> symIntOf(const torch::jit::Value* v) const;
  const SymContext& ctx() const { return ctx_; }
  // Note [Buffers with known contents] in capture.h: what param `v` (an input of the trace) holds,
  // when that is known; nullopt for anything else.
  std::optional<ContentAssumption> paramContent(const torch::jit::Value* v) const;
  // Records that the lowering relies on what param `v` holds (paramContent(v) must be known).
  void assumeContent(const torch::jit::Value* v);
  // Whether traced tensor `out` is on the device of the call's inputs (true when there are none):
  // a creation op's result may then be made wherever the call runs (Note [Fills] in
  // lower_indexing.cpp).
  bool onInputsDevice(const torch::jit::Value* out) const;

  // --- emission ---
  ir::Graph& graph() { return *g_; }
  ir::Value* emit(ir::OpKind kind, std::vector<ir::Value*> inputs, ir::Attrs attrs = {});
  ir::Value* emitTyped(ir::OpKind kind, std::vector<ir::Value*> inputs, ir::Attrs attrs,
                       ir::TensorType type);
  ir::Value* reshapeTo(ir::Value* x, const torch::jit::Value* traced,
                       const std::vector<std::optional<ir::SymDim>>& known = {});
  // x reshaped to `shape`, or x itself when it has that shape already.
  ir::Value* reshape(ir::Value* x, ir::Shape shape);
  ir::Value* castTo(ir::Value* x, ir::DType dtype);
  ir::Value* slice(ir::Value* x, int64_t dim, int64_t start, int64_t step, ir::SymDim length);
  void bind(const torch::jit::Value* traced, ir::Value* v, bool check = true);
  // Records lhs <= rhs for the plan to check per call (Note [Size assumptions] in capture.h).
  void assume(ir::SymDim lhs, ir::SymDim rhs, std::string what);

  // Note [Tracing in float32]: a float literal as the retyped graph has it (+-FLT_MAX become the
  // 16-bit type's extremes).
  double retypedNumber(double v) const;

 private:
  ir::DType mapDType(at::ScalarType t) const;
  // Note [Tracing in float32]: literals that follow the retype (+-FLT_MAX, float32 dtype
  // arguments); `arg` is the schema argument the literal is passed as, when known.
  c10::IValue retypedLiteral(const c10::IValue& iv, const c10::Argument* arg) const;
  ir::Shape symbolize(const torch::jit::Value* out, const torch::jit::Node* node);
  void checkAgainstTrace(const torch::jit::Value* traced, const ir::Value* v) const;

  // --- the driver: sizes, unpacks, the rule table, eager calls ---
  bool lowerShapeArith(const torch::jit::Node* n);
  bool lowerUnpack(const torch::jit::Node* n);
  bool lowerByRule(const torch::jit::Node* n);
  void lowerEager(const torch::jit::Node* n);
  void dropUnusedEagerCalls();

  const LowerRequest& req_;
  CapturedGraph& res_;
  ir::Graph* g_ = nullptr;
  SymContext ctx_;
  std::unordered_map<const torch::jit::Value*, ir::Value*> env_;
  std::unordered_map<const torch::jit::Value*, ir::SymDim>
      ints_;  // int scalars computed from sizes
  std::unordered_map<const torch::jit::Value*, std::vector<ir::SymDim>> intLists_;
  // Scalars read from a tensor when the call runs (Note [Run-time scalars] in lower.h).
  struct ItemOf {
    const torch::jit::Value* tensor;
    EagerCall::Scalar::Type type;
  };
  std::unordered_map<const torch::jit::Value*, ItemOf> items_;
  ir::Value* symScalar(const torch::jit::Value* v, const ir::SymDim& value);
  std::optional<EagerCall::Scalar> runtimeScalar(
      const torch::jit::Value* v, const std::function<int(const torch::jit::Value*)>& operand);
  std::optional<ir::Shape> creationShape(const torch::jit::Node* n,
                                         const torch::jit::Value* out) const;
  std::unordered_map<const torch::jit::Value*, ContentAssumption> contents_;
  std::set<std::string> unsupported_;
  std::map<std::string, std::string> reasons_;  // why an op runs eagerly, first reason per op
  int constCount_ = 0;
  bool ambiguousWarned_ = false;
};

}  // namespace kiln::jit

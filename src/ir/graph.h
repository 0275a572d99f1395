#pragma once
// kiln's IR: an SSA graph of tensor ops with symbolic shapes. No LibTorch, no CUDA here.
//
// A Graph owns Nodes in a topological order and the Values they define. Graph inputs (kInput),
// parameters (kParam) and constants (kConstant) are nodes too, so every Value has a producer.
// Text form (printer.h / parser.h):
//
//   graph(%x: f16[s0, 128], %w: f16[128] param) {
//     %c0: f32[] = constant() {value = 0.5}
//     %1: f16[s0, 128] = mul(%x, %w)
//     %2: f16[s0, 128] = add(%1, %c0)
//     %3: f16[s0, 128] = softmax(%2) {dim = 1}
//     return(%3)
//   }
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "src/ir/dtype.h"
#include "src/ir/op_kind.h"
#include "src/ir/sym_dim.h"

namespace kiln::ir {

struct TensorType {
  DType dtype = DType::kFloat32;
  Shape shape;
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  bool operator==(const TensorType& o) const { return dtype == o.dtype && shape == o.shape; }
  std::string toString() const;  // "f16[s0, 128]"
};

using AttrValue = std::variant<bool, int64_t, double, std::string, std::vector<int64_t>>;

// A node's attributes, kept sorted by name so printing and hashing are deterministic.
class Attrs {
 public:
  Attrs() = default;
  Attrs(std::initializer_list<std::pair<std::string, AttrValue>> init);

  bool has(std::string_view name) const;
  void set(std::string name, AttrValue value);
  const AttrValue* find(std::string_view name) const;
  // Typed getters: InternalError if missing or of another type.
  int64_t getInt(std::string_view name) const;
  double getDouble(std::string_view name) const;  // accepts an int too
  bool getBool(std::string_view name) const;
  const std::string& getString(std::string_view name) const;
  const std::vector<int64_t>& getInts(std::string_view name) const;
  std::optional<double> getDoubleOpt(std::string_view name) const;

  const std::vector<std::pair<std::string, AttrValue>>& items() const { return items_; }
  // Doubles compare bitwise: -0.0 != 0.0 (CSE must not merge them) and NaN == NaN.
  bool operator==(const Attrs& o) const;
  uint64_t hash() const;
  std::string toString() const;  // "{dim = 1, keepdim = true}" or "" when empty

 private:
  std::vector<std::pair<std::string, AttrValue>> items_;
};

class Node;

struct Use {
  Node* user;
  int index;  // operand index in user->inputs()
  bool operator==(const Use&) const = default;
};

class Value {
 public:
  int id() const { return id_; }
  const TensorType& type() const { return type_; }
  DType dtype() const { return type_.dtype; }
  const Shape& shape() const { return type_.shape; }
  int64_t rank() const { return type_.rank(); }
  Node* producer() const { return producer_; }
  const std::vector<Use>& uses() const { return uses_; }
  // Display name ("x" for inputs named by capture); empty means "%<id>".
  const std::string& name() const { return name_; }
  void setName(std::string name) { name_ = std::move(name); }
  void setType(TensorType type) { type_ = std::move(type); }

 private:
  friend class Graph;
  friend class Node;
  Value(int id, TensorType type, Node* producer) : id_(id), type_(std::move(type)), producer_(producer) {}
  int id_;
  TensorType type_;
  Node* producer_;
  std::vector<Use> uses_;
  std::string name_;
};

class Node {
 public:
  OpKind kind() const { return kind_; }
  OpCategory category() const { return categoryOf(kind_); }
  const std::vector<Value*>& inputs() const { return inputs_; }
  Value* input(int i) const { return inputs_.at(static_cast<size_t>(i)); }
  const std::vector<Value*>& outputs() const { return outputs_; }
  Value* output(int i = 0) const { return outputs_.at(static_cast<size_t>(i)); }
  const Attrs& attrs() const { return attrs_; }
  Attrs& mutableAttrs() { return attrs_; }
  // Position in the graph's node order; refreshed by Graph on every structural change.
  int index() const { return index_; }
  // Rewires operand i to v, keeping use lists consistent.
  void replaceInput(int i, Value* v);

 private:
  friend class Graph;
  explicit Node(OpKind kind) : kind_(kind) {}
  OpKind kind_;
  std::vector<Value*> inputs_;
  std::vector<Value*> outputs_;
  Attrs attrs_;
  int index_ = -1;
};

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // --- building ---
  Value* addInput(std::string name, TensorType type);
  Value* addParam(std::string name, TensorType type);
  // A rank-0 literal of the given dtype.
  Value* addConstant(double value, DType dtype);
  // Appends a node. When outType is empty its type is inferred (shape_inference.h); ops whose
  // output cannot be inferred from inputs and attrs (reshape, expand, cast, slice, eager) need it.
  // Throws UserError for ill-typed ops (e.g. shapes that do not broadcast), naming the op.
  Node* append(OpKind kind, std::vector<Value*> inputs, Attrs attrs = {},
               std::optional<TensorType> outType = std::nullopt);
  // Same as append but for multi-output (eager) nodes, with explicit types.
  Node* appendMulti(OpKind kind, std::vector<Value*> inputs, Attrs attrs,
                    std::vector<TensorType> outTypes);
  Value* op(OpKind kind, std::vector<Value*> inputs, Attrs attrs = {},
            std::optional<TensorType> outType = std::nullopt) {
    return append(kind, std::move(inputs), std::move(attrs), std::move(outType))->output(0);
  }
  void setOutputs(std::vector<Value*> outputs);

  // Symbols for dynamic dims, with display names (default "s<id>").
  SymDim newSymbol(std::string name = {});
  int numSymbols() const { return static_cast<int>(symbolNames_.size()); }
  const std::string& symbolName(int id) const { return symbolNames_.at(static_cast<size_t>(id)); }

  // --- reading ---
  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  // kInput nodes' outputs, in input order.
  std::vector<Value*> inputs() const;
  std::vector<Value*> params() const;
  const std::vector<Value*>& outputs() const { return outputs_; }
  bool isGraphOutput(const Value* v) const;

  // --- rewriting (used by passes) ---
  void replaceAllUsesWith(Value* from, Value* to);  // graph outputs included
  // Removes a node whose outputs have no uses and are not graph outputs; InternalError otherwise.
  void erase(Node* node);
  // Inserts a new node right before `before` (types inferred as in append).
  Node* insertBefore(Node* before, OpKind kind, std::vector<Value*> inputs, Attrs attrs = {},
                     std::optional<TensorType> outType = std::nullopt);

  std::unique_ptr<Graph> clone() const;

 private:
  Node* makeNode(OpKind kind, std::vector<Value*> inputs, Attrs attrs,
                 std::vector<TensorType> outTypes, size_t position);
  void renumber();

  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<Value>> values_;
  std::vector<Value*> outputs_;
  std::vector<std::string> symbolNames_;
  int nextValueId_ = 0;
};

}  // namespace kiln::ir

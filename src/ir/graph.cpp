#include "src/ir/graph.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "src/ir/shape_inference.h"
#include "src/support/error.h"
#include "src/support/hash.h"

namespace kiln::ir {

std::string TensorType::toString() const {
  return fmt::format("{}{}", ir::toString(dtype), ir::toString(shape));
}

// ---------------------------------------------------------------------------------------------
// Attrs

Attrs::Attrs(std::initializer_list<std::pair<std::string, AttrValue>> init) {
  for (const auto& [name, value] : init) set(name, value);
}

bool Attrs::has(std::string_view name) const {
  return find(name) != nullptr;
}

void Attrs::set(std::string name, AttrValue value) {
  auto it = std::lower_bound(items_.begin(), items_.end(), name,
                             [](const auto& item, const std::string& n) { return item.first < n; });
  if (it != items_.end() && it->first == name)
    it->second = std::move(value);
  else
    items_.insert(it, {std::move(name), std::move(value)});
}

const AttrValue* Attrs::find(std::string_view name) const {
  auto it = std::lower_bound(items_.begin(), items_.end(), name,
                             [](const auto& item, std::string_view n) { return item.first < n; });
  if (it != items_.end() && it->first == name) return &it->second;
  return nullptr;
}

namespace {
const char* attrTypeName(const AttrValue& v) {
  switch (v.index()) {
    case 0:
      return "bool";
    case 1:
      return "int";
    case 2:
      return "double";
    case 3:
      return "string";
    default:
      return "int list";
  }
}

template <typename T>
const T& getAs(const Attrs& attrs, std::string_view name, const char* expected) {
  const AttrValue* v = attrs.find(name);
  KILN_CHECK(v != nullptr, "missing attribute '{}' (have {})", name, attrs.toString());
  const T* t = std::get_if<T>(v);
  KILN_CHECK(t != nullptr, "attribute '{}' is a {}, expected {}", name, attrTypeName(*v), expected);
  return *t;
}
}  // namespace

int64_t Attrs::getInt(std::string_view name) const {
  return getAs<int64_t>(*this, name, "int");
}

double Attrs::getDouble(std::string_view name) const {
  const AttrValue* v = find(name);
  if (v != nullptr) {
    if (const int64_t* i = std::get_if<int64_t>(v)) return static_cast<double>(*i);
  }
  return getAs<double>(*this, name, "double");
}

bool Attrs::getBool(std::string_view name) const {
  return getAs<bool>(*this, name, "bool");
}

const std::string& Attrs::getString(std::string_view name) const {
  return getAs<std::string>(*this, name, "string");
}

const std::vector<int64_t>& Attrs::getInts(std::string_view name) const {
  return getAs<std::vector<int64_t>>(*this, name, "int list");
}

std::optional<double> Attrs::getDoubleOpt(std::string_view name) const {
  if (!has(name)) return std::nullopt;
  return getDouble(name);
}

bool Attrs::operator==(const Attrs& o) const {
  if (items_.size() != o.items_.size()) return false;
  for (size_t i = 0; i < items_.size(); ++i) {
    const auto& [na, va] = items_[i];
    const auto& [nb, vb] = o.items_[i];
    if (na != nb || va.index() != vb.index()) return false;
    if (const double* da = std::get_if<double>(&va)) {
      if (std::memcmp(da, &std::get<double>(vb), sizeof(double)) != 0) return false;
    } else if (va != vb) {
      return false;
    }
  }
  return true;
}

uint64_t Attrs::hash() const {
  uint64_t h = kFnvOffset;
  for (const auto& [name, value] : items_) {
    h = hashCombine(h, fnv1a(name));
    h = hashCombine(h, value.index());
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, int64_t>) {
            h = hashCombine(h, static_cast<uint64_t>(v));
          } else if constexpr (std::is_same_v<T, double>) {
            uint64_t bits;  // bitwise, like operator==
            std::memcpy(&bits, &v, sizeof bits);
            h = hashCombine(h, bits);
          } else if constexpr (std::is_same_v<T, std::string>) {
            h = hashCombine(h, fnv1a(v));
          } else {
            h = hashCombine(h, v.size());
            for (int64_t x : v) h = hashCombine(h, static_cast<uint64_t>(x));
          }
        },
        value);
  }
  return h;
}

namespace {

std::string formatDouble(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", v);  // shortest text that round-trips
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string quoteString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += c;
    }
  }
  return out + "\"";
}

std::string formatAttrValue(const AttrValue& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, int64_t>) {
          return std::to_string(v);
        } else if constexpr (std::is_same_v<T, double>) {
          return formatDouble(v);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return quoteString(v);
        } else {
          std::string out = "[";
          for (size_t i = 0; i < v.size(); ++i) {
            if (i) out += ", ";
            out += std::to_string(v[i]);
          }
          return out + "]";
        }
      },
      value);
}

}  // namespace

std::string Attrs::toString() const {
  if (items_.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < items_.size(); ++i) {
    if (i) out += ", ";
    out += items_[i].first + " = " + formatAttrValue(items_[i].second);
  }
  return out + "}";
}

// ---------------------------------------------------------------------------------------------
// Node

void Node::replaceInput(int i, Value* v) {
  KILN_CHECK(i >= 0 && static_cast<size_t>(i) < inputs_.size(), "operand {} out of range", i);
  KILN_CHECK(v != nullptr, "null operand");
  Value* old = inputs_[static_cast<size_t>(i)];
  if (old == v) return;
  auto& uses = old->uses_;
  auto it = std::find(uses.begin(), uses.end(), Use{this, i});
  KILN_CHECK(it != uses.end(), "use list of %{} lacks operand {} of {}", old->id(), i,
             ir::toString(kind_));
  uses.erase(it);
  inputs_[static_cast<size_t>(i)] = v;
  v->uses_.push_back(Use{this, i});
}

// ---------------------------------------------------------------------------------------------
// Graph

Node* Graph::makeNode(OpKind kind, std::vector<Value*> inputs, Attrs attrs,
                      std::vector<TensorType> outTypes, size_t position) {
  KILN_CHECK(position <= nodes_.size(), "insert position {} past {} nodes", position,
             nodes_.size());
  auto node = std::unique_ptr<Node>(new Node(kind));
  Node* n = node.get();
  n->attrs_ = std::move(attrs);
  for (size_t i = 0; i < inputs.size(); ++i) {
    KILN_CHECK(inputs[i] != nullptr, "{}: operand {} is null", ir::toString(kind), i);
    inputs[i]->uses_.push_back(Use{n, static_cast<int>(i)});
  }
  n->inputs_ = std::move(inputs);
  for (TensorType& t : outTypes) {
    auto v = std::unique_ptr<Value>(new Value(nextValueId_++, std::move(t), n));
    n->outputs_.push_back(v.get());
    values_.push_back(std::move(v));
  }
  bool atEnd = position == nodes_.size();
  nodes_.insert(nodes_.begin() + static_cast<std::ptrdiff_t>(position), std::move(node));
  if (atEnd)
    n->index_ = static_cast<int>(position);
  else
    renumber();
  return n;
}

void Graph::renumber() {
  for (size_t i = 0; i < nodes_.size(); ++i) nodes_[i]->index_ = static_cast<int>(i);
}

namespace {
// Inputs and params form a prefix of the node list, so every other node may use them.
size_t boundaryEnd(const std::vector<std::unique_ptr<Node>>& nodes) {
  size_t i = 0;
  while (i < nodes.size() &&
         (nodes[i]->kind() == OpKind::kInput || nodes[i]->kind() == OpKind::kParam))
    ++i;
  return i;
}
}  // namespace

Value* Graph::addInput(std::string name, TensorType type) {
  int64_t index = static_cast<int64_t>(inputs().size());
  Node* n = makeNode(OpKind::kInput, {}, Attrs{{"name", name}, {"index", index}}, {std::move(type)},
                     boundaryEnd(nodes_));
  n->output()->setName(std::move(name));
  return n->output();
}

Value* Graph::addParam(std::string name, TensorType type) {
  Node* n =
      makeNode(OpKind::kParam, {}, Attrs{{"name", name}}, {std::move(type)}, boundaryEnd(nodes_));
  n->output()->setName(std::move(name));
  return n->output();
}

Value* Graph::addConstant(double value, DType dtype) {
  // Right after the boundary block and earlier constants, so it dominates every possible user
  // (passes create constants while rewriting the middle of the graph).
  size_t pos = boundaryEnd(nodes_);
  while (pos < nodes_.size() && nodes_[pos]->kind() == OpKind::kConstant) ++pos;
  Node* n = makeNode(OpKind::kConstant, {}, Attrs{{"value", value}}, {TensorType{dtype, {}}}, pos);
  return n->output();
}

Node* Graph::append(OpKind kind, std::vector<Value*> inputs, Attrs attrs,
                    std::optional<TensorType> outType) {
  return insertBefore(nullptr, kind, std::move(inputs), std::move(attrs), std::move(outType));
}

Node* Graph::appendMulti(OpKind kind, std::vector<Value*> inputs, Attrs attrs,
                         std::vector<TensorType> outTypes) {
  return makeNode(kind, std::move(inputs), std::move(attrs), std::move(outTypes), nodes_.size());
}

Node* Graph::insertBefore(Node* before, OpKind kind, std::vector<Value*> inputs, Attrs attrs,
                          std::optional<TensorType> outType) {
  TensorType type = outType ? std::move(*outType) : inferType(kind, inputs, attrs);
  size_t pos = nodes_.size();
  if (before != nullptr) {
    KILN_CHECK(before->index_ >= 0 && static_cast<size_t>(before->index_) < nodes_.size() &&
                   nodes_[static_cast<size_t>(before->index_)].get() == before,
               "insertBefore: node is not in this graph");
    pos = static_cast<size_t>(before->index_);
  }
  return makeNode(kind, std::move(inputs), std::move(attrs), {std::move(type)}, pos);
}

void Graph::setOutputs(std::vector<Value*> outputs) {
  for (Value* v : outputs) KILN_CHECK(v != nullptr, "null graph output");
  outputs_ = std::move(outputs);
}

SymDim Graph::newSymbol(std::string name) {
  int id = numSymbols();
  if (name.empty()) name = fmt::format("s{}", id);
  symbolNames_.push_back(std::move(name));
  return SymDim::symbol(id);
}

std::vector<Value*> Graph::inputs() const {
  std::vector<Value*> r;
  for (const auto& n : nodes_)
    if (n->kind() == OpKind::kInput) r.push_back(n->output());
  return r;
}

std::vector<Value*> Graph::params() const {
  std::vector<Value*> r;
  for (const auto& n : nodes_)
    if (n->kind() == OpKind::kParam) r.push_back(n->output());
  return r;
}

bool Graph::isGraphOutput(const Value* v) const {
  return std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
}

void Graph::replaceAllUsesWith(Value* from, Value* to) {
  KILN_CHECK(from != nullptr && to != nullptr, "replaceAllUsesWith: null value");
  if (from == to) return;
  for (const Use& u : from->uses_) {
    u.user->inputs_[static_cast<size_t>(u.index)] = to;
    to->uses_.push_back(u);
  }
  from->uses_.clear();
  for (Value*& o : outputs_)
    if (o == from) o = to;
}

void Graph::erase(Node* node) {
  KILN_CHECK(node != nullptr, "erase: null node");
  size_t pos = static_cast<size_t>(node->index_);
  KILN_CHECK(pos < nodes_.size() && nodes_[pos].get() == node, "erase: node is not in this graph");
  for (Value* v : node->outputs_) {
    KILN_CHECK(v->uses_.empty(), "erase: %{} ({}) still has {} use(s)", v->id(),
               ir::toString(node->kind()), v->uses_.size());
    KILN_CHECK(!isGraphOutput(v), "erase: %{} ({}) is a graph output", v->id(),
               ir::toString(node->kind()));
  }
  for (size_t i = 0; i < node->inputs_.size(); ++i) {
    auto& uses = node->inputs_[i]->uses_;
    auto it = std::find(uses.begin(), uses.end(), Use{node, static_cast<int>(i)});
    KILN_CHECK(it != uses.end(), "erase: use list of operand {} is missing the use", i);
    uses.erase(it);
  }
  for (Value* v : node->outputs_) {
    auto it = std::find_if(values_.begin(), values_.end(),
                           [v](const std::unique_ptr<Value>& p) { return p.get() == v; });
    KILN_CHECK(it != values_.end(), "erase: value not owned by the graph");
    values_.erase(it);
  }
  nodes_.erase(nodes_.begin() + static_cast<std::ptrdiff_t>(pos));
  renumber();
}

std::unique_ptr<Graph> Graph::clone() const {
  auto g = std::make_unique<Graph>();
  g->symbolNames_ = symbolNames_;
  std::unordered_map<const Value*, Value*> map;
  for (const auto& n : nodes_) {
    std::vector<Value*> ins;
    for (Value* v : n->inputs_) {
      auto it = map.find(v);
      KILN_CHECK(it != map.end(), "clone: operand %{} of {} defined later (graph not topological)",
                 v->id(), ir::toString(n->kind()));
      ins.push_back(it->second);
    }
    std::vector<TensorType> types;
    for (Value* v : n->outputs_) types.push_back(v->type());
    Node* c = g->makeNode(n->kind(), std::move(ins), n->attrs_, std::move(types), g->nodes_.size());
    for (size_t i = 0; i < n->outputs_.size(); ++i) {
      Value* cv = c->outputs_[i];
      cv->id_ = n->outputs_[i]->id_;
      cv->name_ = n->outputs_[i]->name_;
      map[n->outputs_[i]] = cv;
    }
  }
  g->nextValueId_ = nextValueId_;
  for (Value* v : outputs_) {
    auto it = map.find(v);
    KILN_CHECK(it != map.end(), "clone: graph output %{} has no producer in the graph", v->id());
    g->outputs_.push_back(it->second);
  }
  return g;
}

}  // namespace kiln::ir

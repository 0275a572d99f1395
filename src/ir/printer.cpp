#include "src/ir/printer.h"

#include <algorithm>
#include <cctype>
#include <unordered_set>

#include "src/support/error.h"

namespace kiln::ir {

namespace {

bool isNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
}

bool isNumeric(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
}

std::string sanitize(const std::string& name) {
  std::string out = name;
  for (char& c : out)
    if (!isNameChar(c)) c = '_';
  return out;
}

}  // namespace

ValueNames::ValueNames(const Graph& graph) {
  std::unordered_set<std::string> used;
  // Named values first, so numbering can skip their names.
  for (const auto& n : graph.nodes()) {
    for (const Value* v : n->outputs()) {
      if (v->name().empty() || isNumeric(v->name())) continue;
      std::string base = sanitize(v->name());
      std::string name = base;
      for (int k = 1; used.count(name); ++k) name = fmt::format("{}_{}", base, k);
      used.insert(name);
      names_[v] = name;
    }
  }
  int next = 0;
  for (const auto& n : graph.nodes()) {
    for (const Value* v : n->outputs()) {
      if (names_.count(v)) continue;
      std::string name;
      do {
        name = std::to_string(next++);
      } while (used.count(name));
      names_[v] = name;
    }
  }
}

std::string ValueNames::ref(const Value* v) const {
  auto it = names_.find(v);
  KILN_CHECK(it != names_.end(), "value %{} is not defined by a node of this graph",
             v ? v->id() : -1);
  return "%" + it->second;
}

std::string printDim(const Graph& graph, const SymDim& dim) {
  return dim.toString([&](int id) {
    return id < graph.numSymbols() ? graph.symbolName(id) : fmt::format("s{}", id);
  });
}

std::string printType(const Graph& graph, const TensorType& type) {
  std::string out(toString(type.dtype));
  out += "[";
  for (size_t i = 0; i < type.shape.size(); ++i) {
    if (i) out += ", ";
    out += printDim(graph, type.shape[i]);
  }
  return out + "]";
}

std::string printNode(const Graph& graph, const ValueNames& names, const Node& node) {
  std::string out;
  for (size_t i = 0; i < node.outputs().size(); ++i) {
    if (i) out += ", ";
    out += names.ref(node.outputs()[i]) + ": " + printType(graph, node.outputs()[i]->type());
  }
  if (!node.outputs().empty()) out += " = ";
  out += toString(node.kind());
  out += "(";
  for (size_t i = 0; i < node.inputs().size(); ++i) {
    if (i) out += ", ";
    out += names.ref(node.inputs()[i]);
  }
  out += ")";
  if (!node.attrs().items().empty()) out += " " + node.attrs().toString();
  return out;
}

std::string print(const Graph& graph) {
  ValueNames names(graph);
  std::string out = "graph(";
  bool first = true;
  for (const auto& n : graph.nodes()) {
    if (n->kind() != OpKind::kInput && n->kind() != OpKind::kParam) continue;
    if (!first) out += ", ";
    first = false;
    out += names.ref(n->output()) + ": " + printType(graph, n->output()->type());
    if (n->kind() == OpKind::kParam) out += " param";
  }
  out += ") {\n";
  for (const auto& n : graph.nodes()) {
    if (n->kind() == OpKind::kInput || n->kind() == OpKind::kParam) continue;
    out += "  " + printNode(graph, names, *n) + "\n";
  }
  out += "  return(";
  for (size_t i = 0; i < graph.outputs().size(); ++i) {
    if (i) out += ", ";
    out += names.ref(graph.outputs()[i]);
  }
  out += ")\n}\n";
  return out;
}

}  // namespace kiln::ir

#include "src/passes/merge_linears.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Value;

namespace {

const Node* paramOf(const Value* v) {
  const Node* p = v->producer();
  return p != nullptr && p->kind() == OpKind::kParam ? p : nullptr;
}

const std::string& paramName(const Value* v) {
  return paramOf(v)->attrs().getString("name");
}

// The part of a param name that tells the linears apart in explain(): "layers.0.q_proj".
std::string shortName(const std::string& weight) {
  const std::string suffix = ".weight";
  if (weight.size() > suffix.size() && weight.ends_with(suffix))
    return weight.substr(0, weight.size() - suffix.size());
  return weight;
}

// A linear this pass may merge, read by what accepts a strided view of its output.
bool mergeable(const ir::Graph& graph, const Node& n) {
  if (n.kind() != OpKind::kLinear || !n.attrs().items().empty()) return false;
  const Value* w = n.input(1);
  if (paramOf(w) == nullptr || w->rank() != 2 || !w->shape()[0].isConstant() ||
      !w->shape()[1].isConstant())
    return false;
  if (n.inputs().size() == 3 && (paramOf(n.input(2)) == nullptr || n.input(2)->rank() != 1))
    return false;
  const Value* out = n.output();
  if (graph.isGraphOutput(out)) return false;
  for (const ir::Use& u : out->uses())
    if (u.user->kind() == OpKind::kEager) return false;
  return true;
}

// "m.layers.0.attn.{q_proj,k_proj,v_proj}": the common prefix up to a '.', then the rest of each.
std::string label(const std::vector<std::string>& names) {
  size_t common = names.front().size();
  for (const std::string& n : names) {
    size_t i = 0;
    while (i < common && i < n.size() && n[i] == names.front()[i]) ++i;
    common = i;
  }
  const size_t dot = names.front().rfind('.', common == 0 ? 0 : common - 1);
  const size_t prefix = dot == std::string::npos || common == 0 ? 0 : dot + 1;
  std::vector<std::string> rest;
  for (const std::string& n : names) rest.push_back(n.substr(prefix));
  return fmt::format("{}{{{}}}", names.front().substr(0, prefix), fmt::join(rest, ","));
}

}  // namespace

MergedLinears mergeSiblingLinears(ir::Graph& graph, const std::vector<std::string>& taken,
                                  const AcceptSources& accept, int64_t maxBytes) {
  MergedLinears result;
  std::set<std::string> names(taken.begin(), taken.end());
  // The first value, in graph order, read by two or more mergeable linears and not looked at yet.
  // Found again after each rewrite: a merge inserts and erases nodes, and its slices may be read
  // by sibling linears of their own.
  std::set<int> seen;
  auto next = [&]() -> Value* {
    for (const auto& n : graph.nodes())
      for (Value* v : n->outputs()) {
        if (seen.count(v->id()) != 0) continue;
        int linears = 0;
        for (const ir::Use& u : v->uses())
          if (u.index == 0 && mergeable(graph, *u.user)) ++linears;
        if (linears >= 2) return v;
      }
    return nullptr;
  };

  while (Value* x = next()) {
    seen.insert(x->id());
    // Siblings that can share one weight: one weight dtype, K, and bias (present and its dtype).
    using Key = std::tuple<ir::DType, int64_t, bool, ir::DType>;
    std::map<Key, std::vector<Node*>> byKey;
    for (const ir::Use& u : x->uses()) {
      if (u.index != 0 || !mergeable(graph, *u.user)) continue;
      Node* n = u.user;
      const bool bias = n->inputs().size() == 3;
      const Key key{n->input(1)->dtype(), n->input(1)->shape()[1].constant(), bias,
                    bias ? n->input(2)->dtype() : n->input(1)->dtype()};
      byKey[key].push_back(n);
    }
    for (auto& [key, siblings] : byKey) {
      if (siblings.size() < 2) continue;
      std::sort(siblings.begin(), siblings.end(),
                [](const Node* a, const Node* b) { return a->index() < b->index(); });
      const auto [wType, k, hasBias, bType] = key;
      int64_t n = 0;
      std::vector<std::string> weights, biases;
      for (const Node* s : siblings) {
        n += s->input(1)->shape()[0].constant();
        weights.push_back(paramName(s->input(1)));
        if (hasBias) biases.push_back(paramName(s->input(2)));
      }
      const int64_t bytes = n * k * ir::byteSize(wType) + (hasBias ? n * ir::byteSize(bType) : 0);
      if (bytes > maxBytes) continue;
      if (accept && (!accept(weights) || (hasBias && !accept(biases)))) continue;
      auto join = [](const std::vector<std::string>& items) {
        return fmt::format("{}", fmt::join(items, "+"));
      };
      const std::string wName = join(weights), bName = hasBias ? join(biases) : std::string();
      if (names.count(wName) != 0 || (hasBias && names.count(bName) != 0)) continue;
      names.insert(wName);

      Node* first = siblings.front();
      std::vector<Value*> inputs{x, graph.addParam(wName, ir::TensorType{wType, {n, k}})};
      result.params.push_back({wName, weights, wType});
      if (hasBias) {
        names.insert(bName);
        inputs.push_back(graph.addParam(bName, ir::TensorType{bType, {n}}));
        result.params.push_back({bName, biases, bType});
      }
      Value* merged = graph.insertBefore(first, OpKind::kLinear, std::move(inputs))->output();
      const int64_t last = merged->rank() - 1;
      int64_t offset = 0;
      std::vector<Value*> parts;
      std::vector<std::string> labels;
      for (const Node* s : siblings) {
        parts.push_back(graph
                            .insertBefore(first, OpKind::kSlice, {merged},
                                          {{"dim", last}, {"start", offset}, {"step", int64_t{1}}},
                                          s->output()->type())
                            ->output());
        offset += s->input(1)->shape()[0].constant();
        labels.push_back(shortName(paramName(s->input(1))));
      }
      for (size_t i = 0; i < siblings.size(); ++i) {
        graph.replaceAllUsesWith(siblings[i]->output(), parts[i]);
        graph.erase(siblings[i]);
      }
      ++result.groups;
      result.linears += static_cast<int>(siblings.size());
      result.bytes += bytes;
      result.describe.push_back(fmt::format("{}: [{}, {}]", label(labels), n, k));
    }
  }
  return result;
}

}  // namespace kiln::passes

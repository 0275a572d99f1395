// explain(): the partition as text, for people and for FileCheck-style tests. Layout:
//
//   partition: 4 steps (2 fusion, 2 library, 0 view, 0 eager)
//   step 0: library matmul
//     %s: f32[s0, 128, 128] = matmul(%q, %kt)
//   step 1: fusion #0 row rowDims=1 domain=[s0, 128, 128] epilogue_of=0
//     inputs: %s, %mask
//     %1: f32[s0, 128, 128] = mul(%s, %c)
//     ...
//     outputs: %3
//   eager leftovers: none
//
// Values, types and nodes print exactly as ir::print() writes them (printer.h).
//
// explainJson(): the same content as one JSON object,
//
//   {"counts": {"fusion": 2, "library": 2, "view": 0, "eager": 0},
//    "steps": [{"step": 0, "kind": "library", "op": "matmul", "node": "%s: f32[...] = ..."},
//              {"step": 1, "kind": "fusion", "group": {"id": 0, "kind": "row", "rowDims": 1,
//                 "domain": ["s0", "128", "128"], "inputs": ["%s", "%mask"],
//                 "nodes": ["%1: f32[s0, 128, 128] = mul(%s, %c)", ...], "outputs": ["%3"]},
//               "epilogueOf": 0}, ...],
//    "eagerLeftovers": [{"step": 4, "node": "...", "reason": "..."}]}
//
// "epilogueOf" is null for a group that is no epilogue, "rowDims" 0 for a pointwise group, and
// "reason" empty for an op eager by nature (Step::reason).
#include <array>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "src/ir/printer.h"
#include "src/partition/partition.h"

namespace kiln::partition {

namespace {

class Printer {
 public:
  explicit Printer(const ir::Graph& graph) : graph_(graph), names_(graph) {}

  std::string value(const ir::Value* v) const { return names_.ref(v); }

  std::vector<std::string> valueList(const std::vector<const ir::Value*>& vs) const {
    std::vector<std::string> out;
    for (const ir::Value* v : vs) out.push_back(value(v));
    return out;
  }

  std::string values(const std::vector<const ir::Value*>& vs) const {
    if (vs.empty()) return "(none)";
    return fmt::format("{}", fmt::join(valueList(vs), ", "));
  }

  std::vector<std::string> dims(const ir::Shape& s) const {
    std::vector<std::string> out;
    for (const ir::SymDim& d : s) out.push_back(ir::printDim(graph_, d));
    return out;
  }

  std::string shape(const ir::Shape& s) const {
    return fmt::format("[{}]", fmt::join(dims(s), ", "));
  }

  std::string node(const ir::Node* n) const { return ir::printNode(graph_, names_, *n); }

 private:
  const ir::Graph& graph_;
  ir::ValueNames names_;
};

std::string_view stepKindName(StepKind kind) {
  switch (kind) {
    case StepKind::kFusion:
      return "fusion";
    case StepKind::kLibrary:
      return "library";
    case StepKind::kView:
      return "view";
    case StepKind::kEager:
      return "eager";
  }
  return "?";
}

// Steps per StepKind, indexed by its value.
std::array<int, 4> kindCounts(const Partition& partition) {
  std::array<int, 4> counts{};
  for (const Step& s : partition.steps) ++counts[static_cast<size_t>(s.kind)];
  return counts;
}

// What a step that is not a fusion runs: eager nodes are named by their ATen schema
// ("aten::cumsum"), others by their op.
std::string opName(const Step& s) {
  const ir::AttrValue* schema = s.node->attrs().find("schema");
  const std::string* schemaName = schema ? std::get_if<std::string>(schema) : nullptr;
  return s.node->kind() == ir::OpKind::kEager && schemaName
             ? *schemaName
             : std::string(ir::toString(s.node->kind()));
}

}  // namespace

std::string explain(const ir::Graph& graph, const Partition& partition) {
  const Printer p(graph);
  const std::array<int, 4> counts = kindCounts(partition);
  std::string out = fmt::format("partition: {} steps ({} fusion, {} library, {} view, {} eager)\n",
                                partition.steps.size(), counts[0], counts[1], counts[2], counts[3]);
  std::vector<size_t> eager;
  for (size_t i = 0; i < partition.steps.size(); ++i) {
    const Step& s = partition.steps[i];
    if (s.kind != StepKind::kFusion) {
      out += fmt::format("step {}: {} {}\n", i, stepKindName(s.kind), opName(s));
      out += fmt::format("  {}\n", p.node(s.node));
      if (s.kind == StepKind::kEager) eager.push_back(i);
      continue;
    }
    const FusionGroup& g = s.group;
    out += fmt::format("step {}: fusion #{} ", i, g.id);
    if (g.kind == GroupKind::kRow)
      out += fmt::format("row rowDims={}", g.rowDims);
    else
      out += "pointwise";
    out += fmt::format(" domain={}", p.shape(g.domain));
    if (s.epilogueOf >= 0) out += fmt::format(" epilogue_of={}", s.epilogueOf);
    out += "\n";
    out += fmt::format("  inputs: {}\n", p.values(g.inputs));
    for (const ir::Node* n : g.nodes) out += fmt::format("  {}\n", p.node(n));
    out += fmt::format("  outputs: {}\n", p.values(g.outputs));
  }
  if (eager.empty()) {
    out += "eager leftovers: none\n";
  } else {
    out += fmt::format("eager leftovers: {}\n", eager.size());
    for (size_t i : eager) {
      const Step& s = partition.steps[i];
      out += fmt::format("  step {}: {}{}\n", i, p.node(s.node),
                         s.reason.empty() ? "" : fmt::format(" ({})", s.reason));
    }
  }
  return out;
}

std::string explainJson(const ir::Graph& graph, const Partition& partition) {
  using Json = nlohmann::ordered_json;
  const Printer p(graph);
  const std::array<int, 4> counts = kindCounts(partition);
  Json out;
  out["counts"] = {
      {"fusion", counts[0]}, {"library", counts[1]}, {"view", counts[2]}, {"eager", counts[3]}};
  Json steps = Json::array();
  Json leftovers = Json::array();
  for (size_t i = 0; i < partition.steps.size(); ++i) {
    const Step& s = partition.steps[i];
    Json step = {{"step", i}, {"kind", stepKindName(s.kind)}};
    if (s.kind != StepKind::kFusion) {
      step["op"] = opName(s);
      step["node"] = p.node(s.node);
      if (s.kind == StepKind::kEager) {
        step["reason"] = s.reason;
        leftovers.push_back({{"step", i}, {"node", p.node(s.node)}, {"reason", s.reason}});
      }
    } else {
      const FusionGroup& g = s.group;
      Json nodes = Json::array();
      for (const ir::Node* n : g.nodes) nodes.push_back(p.node(n));
      step["group"] = {{"id", g.id},
                       {"kind", g.kind == GroupKind::kRow ? "row" : "pointwise"},
                       {"rowDims", g.kind == GroupKind::kRow ? g.rowDims : 0},
                       {"domain", p.dims(g.domain)},
                       {"inputs", p.valueList(g.inputs)},
                       {"nodes", std::move(nodes)},
                       {"outputs", p.valueList(g.outputs)}};
      step["epilogueOf"] = s.epilogueOf >= 0 ? Json(s.epilogueOf) : Json(nullptr);
    }
    steps.push_back(std::move(step));
  }
  out["steps"] = std::move(steps);
  out["eagerLeftovers"] = std::move(leftovers);
  return out.dump(2, ' ', false, Json::error_handler_t::replace);
}

}  // namespace kiln::partition

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
#include <fmt/format.h>

#include "src/ir/printer.h"
#include "src/partition/partition.h"

namespace kiln::partition {

namespace {

class Printer {
 public:
  explicit Printer(const ir::Graph& graph) : graph_(graph), names_(graph) {}

  std::string value(const ir::Value* v) const { return names_.ref(v); }

  std::string values(const std::vector<const ir::Value*>& vs) const {
    if (vs.empty()) return "(none)";
    std::string out;
    for (size_t i = 0; i < vs.size(); ++i) {
      if (i) out += ", ";
      out += value(vs[i]);
    }
    return out;
  }

  std::string shape(const ir::Shape& s) const {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) {
      if (i) out += ", ";
      out += ir::printDim(graph_, s[i]);
    }
    return out + "]";
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

}  // namespace

std::string explain(const ir::Graph& graph, const Partition& partition) {
  const Printer p(graph);
  int counts[4] = {0, 0, 0, 0};
  for (const Step& s : partition.steps) ++counts[static_cast<int>(s.kind)];
  std::string out = fmt::format("partition: {} steps ({} fusion, {} library, {} view, {} eager)\n",
                                partition.steps.size(), counts[0], counts[1], counts[2], counts[3]);
  std::vector<size_t> eager;
  for (size_t i = 0; i < partition.steps.size(); ++i) {
    const Step& s = partition.steps[i];
    if (s.kind != StepKind::kFusion) {
      // Eager nodes are named by their ATen schema ("aten::cumsum"), others by their op.
      const ir::AttrValue* schema = s.node->attrs().find("schema");
      const std::string* schemaName = schema ? std::get_if<std::string>(schema) : nullptr;
      out += fmt::format("step {}: {} {}\n", i, stepKindName(s.kind),
                         s.node->kind() == ir::OpKind::kEager && schemaName
                             ? *schemaName
                             : std::string(ir::toString(s.node->kind())));
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

}  // namespace kiln::partition

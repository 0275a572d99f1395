#include "jit/tuner/records.h"

#include <sstream>

#include <fmt/format.h>

#include "cache/kernel_cache.h"
#include "codegen/kernel_abi.h"
#include "src/ir/printer.h"

namespace kiln::tuner {

std::string groupSignature(const ir::Graph& graph, const partition::FusionGroup& group) {
  const ir::ValueNames names(graph);
  std::string out =
      fmt::format("kind {} rowDims {} domain [", static_cast<int>(group.kind), group.rowDims);
  for (const ir::SymDim& d : group.domain) out += ir::printDim(graph, d) + ",";
  out += "]\n";
  for (const ir::Value* v : group.inputs)
    out += fmt::format("in {} {}\n", names.ref(v), ir::printType(graph, v->type()));
  for (const ir::Node* n : group.nodes) out += ir::printNode(graph, names, *n) + "\n";
  for (const ir::Value* v : group.outputs) out += fmt::format("out {}\n", names.ref(v));
  return out;
}

std::string encodeRecord(const TuningRecord& record) {
  return fmt::format("schedule {}\nspeedup {}\nvariants {}\n",
                     codegen::encodeSchedule(record.schedule), record.speedup,
                     record.variantsTried);
}

std::optional<TuningRecord> decodeRecord(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::string line;
  TuningRecord r;
  if (!std::getline(in, line) || line.rfind("schedule ", 0) != 0) return std::nullopt;
  std::optional<codegen::ScheduleParams> p = codegen::decodeSchedule(line.substr(9));
  if (!p) return std::nullopt;
  r.schedule = *p;
  std::string word;
  if (!(in >> word >> r.speedup) || word != "speedup") return std::nullopt;
  if (!(in >> word >> r.variantsTried) || word != "variants") return std::nullopt;
  return r;
}

bool saveRecord(cache::KernelCache& cache, const ir::Graph& graph,
                const partition::FusionGroup& group, std::string_view bucket,
                const std::string& arch, const TuningRecord& record) {
  return cache.putTuningRecord(groupSignature(graph, group), bucket, arch, codegen::kCodegenVersion,
                               encodeRecord(record));
}

std::optional<TuningRecord> loadRecord(cache::KernelCache& cache, const ir::Graph& graph,
                                       const partition::FusionGroup& group, std::string_view bucket,
                                       const std::string& arch) {
  std::optional<std::string> text =
      cache.getTuningRecord(groupSignature(graph, group), bucket, arch, codegen::kCodegenVersion);
  if (!text) return std::nullopt;
  return decodeRecord(*text);
}

}  // namespace kiln::tuner

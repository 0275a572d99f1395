#pragma once
// Note [Tuning records]
// The tuner's winner for a (group, bucket, arch) is stored in the kernel cache's store (entry kind
// "tuning"), so every later process, and kiln-warmup, starts with it: emitKernels looks a record
// up before falling back to the heuristic default. The group is named by its computation, not by
// its kernel text (which depends on the schedule): the group's ops as IR text, its domain and its
// inputs' types. Records name a schedule in encodeSchedule form; one that does not decode or no
// longer validates for the group is ignored.
#include <optional>
#include <string>
#include <string_view>

#include "codegen/schedule.h"
#include "src/ir/graph.h"
#include "src/partition/partition.h"

namespace kiln::cache {
class KernelCache;
}  // namespace kiln::cache

namespace kiln::tuner {

struct TuningRecord {
  codegen::ScheduleParams schedule;
  double speedup = 1.0;  // over the default schedule, as measured
  int variantsTried = 0;
};

std::string groupSignature(const ir::Graph& graph, const partition::FusionGroup& group);

std::string encodeRecord(const TuningRecord& record);
std::optional<TuningRecord> decodeRecord(std::string_view text);

// Stores / finds the record for (group, bucket label, arch) in `cache`. saveRecord returns
// whether it reached the disk tier (false for a memory-only cache).
bool saveRecord(cache::KernelCache& cache, const ir::Graph& graph,
                const partition::FusionGroup& group, std::string_view bucket,
                const std::string& arch, const TuningRecord& record);
std::optional<TuningRecord> loadRecord(cache::KernelCache& cache, const ir::Graph& graph,
                                       const partition::FusionGroup& group, std::string_view bucket,
                                       const std::string& arch);

}  // namespace kiln::tuner

#pragma once
// Schedules: plain-data launch/tiling parameters for a fusion group's kernel. A heuristic picks the
// default; the autotuner searches candidateSchedules(). Codegen (emit_cuda.h) is a pure function of
// (graph, group, params, bucket), so a params value fully names a kernel variant.
//
// Note [Schedule space]
// Pointwise kernels tile the flattened iteration domain: a block owns blockSize*vectorWidth*
// elementsPerThread consecutive elements per step; with gridStride the grid is capped at
// maxBlocksPerSm*SMs and blocks loop, else ("one-shot") the grid covers the domain once.
// Row kernels (GroupKind::kRow) give each row (the innermost rowDims dims) to threadsPerRow
// threads: threadsPerRow <= 32 is warp-per-row (a warp, or a power-of-two slice of one, per row;
// several rows per block), > 32 is block-per-row (one row per block, cross-warp reduction through
// shared memory). With cacheRow the row's inputs are loaded once into registers (chunksPerThread
// vectors a thread, sized from the bucket's maximal row length), else every pass over the row
// re-reads them from global memory (L2 usually serves the re-reads). Variance (layer_norm) is
// welford (one pass) or two-pass (mean, then squared deviations; more accurate, free when the row
// is cached).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "src/partition/partition.h"

namespace kiln::codegen {

struct BucketInfo;

struct PointwiseParams {
  int blockSize = 256;        // threads per block (multiple of 32, <= 1024)
  int vectorWidth = 4;        // elements per vector access on the vector path (1, 2, 4, 8)
  int elementsPerThread = 1;  // vectors per thread per tile (unrolled)
  bool gridStride = false;    // cap the grid and loop (see maxBlocksPerSm) vs one-shot grid
  int maxBlocksPerSm = 4;     // grid cap factor when gridStride

  bool operator==(const PointwiseParams&) const = default;
  uint64_t hash() const;
  std::string toString() const;  // "pointwise{block=256, vec=4, ept=1, one-shot}"
};

enum class RowMapping : uint8_t { kWarpPerRow, kBlockPerRow };
enum class VarianceAlgo : uint8_t { kWelford, kTwoPass };

struct ReductionParams {
  int threadsPerRow = 32;   // 1..32 (power of two): warp-per-row; 64..1024 (multiple of 32): block
  int rowsPerBlock = 8;     // warp-per-row: blockSize / threadsPerRow; block-per-row: 1
  int vectorWidth = 4;      // elements per vector access on the vector path (1, 2, 4, 8)
  bool cacheRow = false;    // row inputs held in registers (one read of memory)
  int chunksPerThread = 1;  // cacheRow: register capacity in vectors per thread
  VarianceAlgo variance = VarianceAlgo::kWelford;

  RowMapping mapping() const {
    return threadsPerRow <= 32 ? RowMapping::kWarpPerRow : RowMapping::kBlockPerRow;
  }
  int blockSize() const { return threadsPerRow * rowsPerBlock; }
  // Longest row a cacheRow kernel handles: threadsPerRow * vectorWidth * chunksPerThread.
  int64_t rowCapacity() const;

  bool operator==(const ReductionParams&) const = default;
  uint64_t hash() const;
  std::string toString() const;  // "row{warp, threads=32, rows=8, vec=4, cached x2, welford}"
};

using ScheduleParams = std::variant<PointwiseParams, ReductionParams>;

uint64_t hash(const ScheduleParams& params);
std::string toString(const ScheduleParams& params);
// A stable one-line form for tuning records: "pw 256 4 1 0 4" / "row 32 8 4 1 2 1" (fields in
// declaration order). decodeSchedule reads exactly that back; nullopt for anything else.
std::string encodeSchedule(const ScheduleParams& params);
std::optional<ScheduleParams> decodeSchedule(std::string_view text);

// Empty when the params suit the group's kind and the bucket; else the reason ("cacheRow needs a
// bounded row length", ...). emitCuda throws Unsupported with this reason.
std::string validateSchedule(const partition::FusionGroup& group, const ScheduleParams& params,
                             const BucketInfo& bucket);

// The heuristic default (Note [Schedule heuristics] in schedule.cpp), from the bucket's
// representative sizes and bounds.
ScheduleParams defaultSchedule(const partition::FusionGroup& group, const BucketInfo& bucket);

// The tuner's search space: valid variants for this group and bucket, default first, no repeats,
// deterministic order.
std::vector<ScheduleParams> candidateSchedules(const partition::FusionGroup& group,
                                               const BucketInfo& bucket);

}  // namespace kiln::codegen

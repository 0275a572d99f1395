#include "codegen/schedule.h"

#include <fmt/format.h>
#include <algorithm>
#include <sstream>

#include "codegen/kernel_abi.h"
#include "src/support/error.h"
#include "src/support/hash.h"

namespace kiln::codegen {

namespace {

uint64_t mix(uint64_t h, int64_t v) {
  return hashCombine(h, static_cast<uint64_t>(v));
}

bool isPow2(int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

int64_t pow2Ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Smallest element size among the group's inputs and outputs: it decides how many elements a
// 16-byte access carries.
int64_t minElementBytes(const partition::FusionGroup& group) {
  int64_t bytes = 8;
  for (const auto* v : group.inputs) bytes = std::min(bytes, ir::byteSize(v->dtype()));
  for (const auto* v : group.outputs) bytes = std::min(bytes, ir::byteSize(v->dtype()));
  return bytes;
}

int defaultVectorWidth(const partition::FusionGroup& group) {
  return static_cast<int>(std::clamp<int64_t>(16 / minElementBytes(group), 1, 8));
}

std::span<const ir::SymDim> rowShape(const partition::FusionGroup& group) {
  const auto& d = group.domain;
  return std::span<const ir::SymDim>(d).subspan(d.size() - static_cast<size_t>(group.rowDims));
}

constexpr int kMaxChunksPerThread = 8;  // cached vectors a thread (register budget per input)

}  // namespace

uint64_t PointwiseParams::hash() const {
  uint64_t h = fnv1a("pointwise");
  h = mix(h, blockSize);
  h = mix(h, vectorWidth);
  h = mix(h, elementsPerThread);
  h = mix(h, gridStride ? 1 : 0);
  h = mix(h, gridStride ? maxBlocksPerSm : 0);
  return h;
}

std::string PointwiseParams::toString() const {
  return fmt::format("pointwise{{block={}, vec={}, ept={}, {}}}", blockSize, vectorWidth,
                     elementsPerThread,
                     gridStride ? fmt::format("grid-stride x{}/SM", maxBlocksPerSm) : "one-shot");
}

int64_t ReductionParams::rowCapacity() const {
  return static_cast<int64_t>(threadsPerRow) * vectorWidth * chunksPerThread;
}

uint64_t ReductionParams::hash() const {
  uint64_t h = fnv1a("row");
  h = mix(h, threadsPerRow);
  h = mix(h, rowsPerBlock);
  h = mix(h, vectorWidth);
  h = mix(h, cacheRow ? 1 : 0);
  h = mix(h, chunksPerThread);
  h = mix(h, static_cast<int64_t>(variance));
  return h;
}

std::string ReductionParams::toString() const {
  return fmt::format("row{{{}, threads={}, rows={}, vec={}, {}, {}}}",
                     mapping() == RowMapping::kWarpPerRow ? "warp" : "block", threadsPerRow,
                     rowsPerBlock, vectorWidth,
                     cacheRow ? fmt::format("cached x{}", chunksPerThread) : "reload",
                     variance == VarianceAlgo::kWelford ? "welford" : "two-pass");
}

uint64_t hash(const ScheduleParams& params) {
  return std::visit([](const auto& p) { return p.hash(); }, params);
}

std::string toString(const ScheduleParams& params) {
  return std::visit([](const auto& p) { return p.toString(); }, params);
}

std::string encodeSchedule(const ScheduleParams& params) {
  if (const auto* p = std::get_if<PointwiseParams>(&params))
    return fmt::format("pw {} {} {} {} {}", p->blockSize, p->vectorWidth, p->elementsPerThread,
                       p->gridStride ? 1 : 0, p->maxBlocksPerSm);
  const auto& r = std::get<ReductionParams>(params);
  return fmt::format("row {} {} {} {} {} {}", r.threadsPerRow, r.rowsPerBlock, r.vectorWidth,
                     r.cacheRow ? 1 : 0, r.chunksPerThread, static_cast<int>(r.variance));
}

std::optional<ScheduleParams> decodeSchedule(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::string kind;
  in >> kind;
  auto flag = [](int v) { return v == 0 || v == 1; };
  if (kind == "pw") {
    PointwiseParams p;
    int gs = -1;
    if (!(in >> p.blockSize >> p.vectorWidth >> p.elementsPerThread >> gs >> p.maxBlocksPerSm) ||
        !flag(gs))
      return std::nullopt;
    p.gridStride = gs == 1;
    std::string extra;
    if (in >> extra) return std::nullopt;
    return p;
  }
  if (kind == "row") {
    ReductionParams r;
    int cache = -1, variance = -1;
    if (!(in >> r.threadsPerRow >> r.rowsPerBlock >> r.vectorWidth >> cache >> r.chunksPerThread >>
          variance) ||
        !flag(cache) || !flag(variance))
      return std::nullopt;
    r.cacheRow = cache == 1;
    r.variance = static_cast<VarianceAlgo>(variance);
    std::string extra;
    if (in >> extra) return std::nullopt;
    return r;
  }
  return std::nullopt;
}

std::string validateSchedule(const partition::FusionGroup& group, const ScheduleParams& params,
                             const BucketInfo& bucket) {
  auto vecOk = [](int v) { return v == 1 || v == 2 || v == 4 || v == 8; };
  if (const auto* p = std::get_if<PointwiseParams>(&params)) {
    if (group.kind != partition::GroupKind::kPointwise) return "pointwise params for a row group";
    if (p->blockSize < 32 || p->blockSize > 1024 || p->blockSize % 32 != 0)
      return fmt::format("block size {} is not a multiple of 32 in [32, 1024]", p->blockSize);
    if (!vecOk(p->vectorWidth)) return fmt::format("vector width {}", p->vectorWidth);
    if (p->elementsPerThread < 1 || p->elementsPerThread > 16)
      return fmt::format("elements per thread {}", p->elementsPerThread);
    if (p->gridStride && p->maxBlocksPerSm < 1) return "grid-stride needs maxBlocksPerSm >= 1";
    return {};
  }
  const auto& r = std::get<ReductionParams>(params);
  if (group.kind != partition::GroupKind::kRow) return "row params for a pointwise group";
  if (r.threadsPerRow <= 32) {
    if (!isPow2(r.threadsPerRow)) return fmt::format("threads per row {}", r.threadsPerRow);
    if (r.rowsPerBlock < 1 || r.blockSize() % 32 != 0 || r.blockSize() > 1024)
      return fmt::format("warp-per-row block of {} x {} threads", r.rowsPerBlock, r.threadsPerRow);
  } else {
    if (r.threadsPerRow % 32 != 0 || r.threadsPerRow > 1024)
      return fmt::format("threads per row {}", r.threadsPerRow);
    if (r.rowsPerBlock != 1) return "block-per-row needs rowsPerBlock == 1";
  }
  if (!vecOk(r.vectorWidth)) return fmt::format("vector width {}", r.vectorWidth);
  if (r.cacheRow) {
    if (r.chunksPerThread < 1 || r.chunksPerThread > 2 * kMaxChunksPerThread)
      return fmt::format("chunks per thread {}", r.chunksPerThread);
    const int64_t maxRow = bucket.maxNumel(rowShape(group));
    if (maxRow < 0) return "cacheRow needs a bounded row length";
    if (maxRow > r.rowCapacity())
      return fmt::format("row length up to {} exceeds the register capacity {}", maxRow,
                         r.rowCapacity());
  }
  return {};
}

// Note [Schedule heuristics]
// Pointwise: 16-byte vectors of the narrowest dtype, 256 threads, one vector per thread, one-shot
// grid; very large domains (> 2^24 elements) use two vectors a thread to amortize index math.
// Rows: rows of at most 1024 elements go warp-per-row (a power-of-two slice of a warp for rows
// shorter than 32 vectors, 256-thread blocks); longer rows go block-per-row with enough threads
// that each holds about two vectors. Rows whose bound fits the register capacity are cached
// (one read of memory) and use two-pass variance (free, more accurate); others reload per pass and
// use welford (one pass fewer).
ScheduleParams defaultSchedule(const partition::FusionGroup& group, const BucketInfo& bucket) {
  const int vec = defaultVectorWidth(group);
  if (group.kind == partition::GroupKind::kPointwise) {
    PointwiseParams p;
    p.vectorWidth = vec;
    p.blockSize = 256;
    const int64_t n = bucket.hintNumel(group.domain);
    p.elementsPerThread = n > (int64_t{1} << 24) ? 2 : 1;
    return p;
  }
  KILN_CHECK(group.rowDims >= 1 && group.rowDims <= static_cast<int>(group.domain.size()),
             "row group {} with rowDims {} over rank {}", group.id, group.rowDims,
             group.domain.size());
  ReductionParams r;
  r.vectorWidth = vec;
  int64_t hint = bucket.hintNumel(rowShape(group));
  if (hint <= 0) hint = 1024;
  const int64_t maxRow = bucket.maxNumel(rowShape(group));
  const int64_t vectors = (hint + vec - 1) / vec;
  if (hint <= 1024) {
    r.threadsPerRow = static_cast<int>(std::clamp<int64_t>(pow2Ceil(vectors), 4, 32));
    r.rowsPerBlock = 256 / r.threadsPerRow;
  } else {
    // About 32 elements a thread (kiln-kernel-sweep on an H200, 32768 rows of 4096: 128 threads
    // with 32 cached elements each reached 94% (f32) and 70% (f16) of copy bandwidth against
    // 77% and 64% for 512 and 256 threads).
    r.threadsPerRow = static_cast<int>(std::clamp<int64_t>(pow2Ceil((hint + 31) / 32), 64, 1024));
    r.rowsPerBlock = 1;
  }
  const int64_t perThread = static_cast<int64_t>(r.threadsPerRow) * vec;
  if (maxRow >= 0) {
    const int64_t chunks = std::max<int64_t>(1, (maxRow + perThread - 1) / perThread);
    if (chunks <= kMaxChunksPerThread) {
      r.cacheRow = true;
      r.chunksPerThread = static_cast<int>(chunks);
    }
  }
  r.variance = r.cacheRow ? VarianceAlgo::kTwoPass : VarianceAlgo::kWelford;
  return r;
}

std::vector<ScheduleParams> candidateSchedules(const partition::FusionGroup& group,
                                               const BucketInfo& bucket) {
  std::vector<ScheduleParams> out;
  auto add = [&](const ScheduleParams& p) {
    if (!validateSchedule(group, p, bucket).empty()) return;
    if (std::find(out.begin(), out.end(), p) != out.end()) return;
    out.push_back(p);
  };
  add(defaultSchedule(group, bucket));
  const int vec = defaultVectorWidth(group);
  if (group.kind == partition::GroupKind::kPointwise) {
    for (int block : {128, 256, 512})
      for (int v : {vec, std::max(1, vec / 2)})
        for (int ept : {1, 2, 4})
          for (bool gs : {false, true}) {
            PointwiseParams p;
            p.blockSize = block;
            p.vectorWidth = v;
            p.elementsPerThread = ept;
            p.gridStride = gs;
            add(p);
          }
    return out;
  }
  const int64_t maxRow = bucket.maxNumel(rowShape(group));
  for (int tpr : {4, 8, 16, 32, 64, 128, 256, 512, 1024})
    for (int v : {vec, std::max(1, vec / 2)})
      for (bool cache : {true, false})
        for (VarianceAlgo var : {VarianceAlgo::kTwoPass, VarianceAlgo::kWelford}) {
          ReductionParams r;
          r.threadsPerRow = tpr;
          r.rowsPerBlock = tpr <= 32 ? 256 / tpr : 1;
          r.vectorWidth = v;
          r.cacheRow = cache;
          r.variance = var;
          if (cache) {
            if (maxRow < 0) continue;
            const int64_t per = static_cast<int64_t>(tpr) * v;
            const int64_t chunks = std::max<int64_t>(1, (maxRow + per - 1) / per);
            if (chunks > kMaxChunksPerThread) continue;
            r.chunksPerThread = static_cast<int>(chunks);
          }
          add(r);
        }
  return out;
}

}  // namespace kiln::codegen

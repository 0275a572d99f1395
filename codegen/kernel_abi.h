#pragma once
// The contract between generated kernels and the runtime that launches them.
//
// Note [Kernel ABI]
// Every generated kernel is `extern "C" __global__ void <name>(const KilnArgs args)`: a single
// by-value struct parameter (cuLaunchKernel: kernelParams = { &args }). The device-side definition
// (codegen/runtime/kiln_abi.cuh) has the same layout; both sides static_assert its size.
//
//   ptr[t]         data pointer of tensor t. Tensors are ordered group inputs (FusionGroup::inputs
//                  order) then group outputs (FusionGroup::outputs order); KernelAbi::tensors lists
//                  them. Outputs never alias inputs or each other.
//   sizes[d]       the concrete iteration domain (FusionGroup::domain evaluated for this call),
//                  d < KernelAbi::rank. Static dims are baked into the kernel text as literals, but
//                  the runtime still fills every entry (packArgs does).
//   strides[t][d]  element stride of tensor t along domain dim d; 0 where the tensor broadcasts
//                  (missing or size-1 dim) and along reduced dims of a row-constant output
//                  (TensorArg::dimMap says which tensor dim maps to which domain dim). Arbitrary
//                  (non-contiguous, negative-free) strides are fine. An embedding's table spans
//                  only the innermost domain dim; strides[t][0] holds the stride of its rows.
//   numel          product of sizes.
//   vec            1: the vector path may be used (Note [Vector path]), else 0.
//
// Note [Vector path]
// One kernel holds both a vectorized path (vectorWidth elements per access, 16-byte loads and
// stores or less) and a scalar path, chosen by the runtime flag `vec` at the kernel's entry (a
// uniform branch, no divergence). packArgs sets vec=1 only when, for the kernel's vectorWidth V:
// the innermost domain size is a multiple of V; every tensor's innermost stride is 1 or 0 (a
// broadcast scalar per vector, splatted); every other stride of a tensor with innermost stride 1
// is a multiple of V, and its pointer is aligned to min(16, V * element size) bytes. Then a vector
// never crosses a row and every vector access is aligned (a splat is one scalar load, aligned
// anywhere). Otherwise (odd sizes, unaligned slices, transposed inputs) the scalar path handles
// everything: correct, just slower. There is no scalar tail: the vector path runs only when the
// innermost size divides evenly.
//
// Note [Index width]
// Kernels index with 32-bit integers when the bucket's bounds (BucketInfo) keep every element
// offset below 2^31, else with 64-bit ones (KernelAbi::index64). packArgs checks the actual call
// against this and throws Unsupported when a 32-bit kernel would overflow (e.g. a strided view
// into a huge tensor), so the caller can pick a 64-bit variant or run the group eagerly.
//
// Launch (launchDims): block = (LaunchSpec::blockSize, 1, 1), grid = (gridX, 1, 1), no dynamic
// shared memory (kernels use static shared memory only). gridX == 0 means there is nothing to do:
// skip the launch (empty tensors). Kernels loop over their work with a grid stride, so any gridX
// >= 1 is correct; launchDims picks the one the schedule wants.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "src/ir/dtype.h"
#include "src/ir/sym_dim.h"

namespace kiln::codegen {

// Bumped whenever generated code or this ABI changes in a way the source text might not show
// (cache/cache_key.h: CacheKey::codegenVersion).
inline constexpr uint32_t kCodegenVersion = 1;

inline constexpr int kMaxTensors = 24;  // group inputs + outputs per kernel
inline constexpr int kMaxRank = 8;      // iteration domain rank
inline constexpr int kGatherDim = -2;   // TensorArg::dimMap: rows picked by ids

struct KilnArgs {
  void* ptr[kMaxTensors];
  int64_t sizes[kMaxRank];
  int64_t strides[kMaxTensors][kMaxRank];
  int64_t numel;
  int32_t vec;
  int32_t reserved;
};
static_assert(sizeof(KilnArgs) == 1808, "KilnArgs layout is shared with kiln_abi.cuh");

// What a kernel may assume about the sizes of the calls it serves (a shape bucket).
struct BucketInfo {
  // Representative value of each symbol (index = symbol id), e.g. from the call that created the
  // bucket; drives heuristics only.
  std::vector<int64_t> symbolHint;
  // Upper bound of each symbol in this bucket; empty means "same as symbolHint", a -1 entry means
  // unbounded. Bounds decide the index width and whether a row fits in registers.
  std::vector<int64_t> symbolMax;

  // Bound of `dim` in this bucket, or -1 when unbounded.
  int64_t maxOf(const ir::SymDim& dim) const;
  int64_t hintOf(const ir::SymDim& dim) const;
  // Product bounds; -1 when unbounded (or overflowing int64).
  int64_t maxNumel(std::span<const ir::SymDim> dims) const;
  int64_t hintNumel(std::span<const ir::SymDim> dims) const;
  uint64_t hash() const;
};

struct TensorArg {
  enum class Role : uint8_t { kInput, kOutput };
  Role role = Role::kInput;
  int valueId = -1;  // ir::Value::id() in the graph the kernel was emitted from
  ir::DType dtype = ir::DType::kFloat32;
  ir::Shape shape;  // the value's (symbolic) shape
  // dimMap[k]: the domain dim that tensor dim k runs along (inputs: numpy right-alignment; outputs
  // of keepdim=false reductions: the leading domain dims), or -1 for a size-1 dim that maps to no
  // domain dim. Dims of size 1 get stride 0 whatever they map to. kGatherDim: the rows of an
  // embedding's table, picked by the ids in tensor gatherBy; their stride goes in strides[t][0]
  // (Note [Embeddings in kernels] in emit_cuda.cpp).
  std::vector<int> dimMap;
  int gatherBy = -1;         // a table: the tensor holding its ids
  int64_t indexBound = -1;   // ids: each must be in [0, indexBound) (the table's rows)
  bool rowConstant = false;  // one value per row (reduction results); stored by one thread a row
};

struct KernelAbi {
  int rank = 0;                    // domain rank
  ir::Shape domain;                // the group's iteration domain
  int rowDims = 0;                 // 0: pointwise kernel; >= 1: rows are the innermost rowDims dims
  std::vector<TensorArg> tensors;  // inputs then outputs
  int numInputs = 0;
  bool index64 = false;       // Note [Index width]
  int vectorWidth = 1;        // V of Note [Vector path]
  int64_t maxRowLength = -1;  // cacheRow kernels: rows longer than this are not handled; -1: any
};

struct LaunchSpec {
  int blockSize = 256;
  // Work units a block handles per grid-stride step: elements (pointwise) or rows (row kernels).
  int64_t unitsPerBlock = 256;
  bool rows = false;          // units are rows (product of the leading rank-rowDims sizes)
  int maxBlocksPerSm = 0;     // > 0: cap the grid at maxBlocksPerSm * SM count (grid-stride)
  int staticSharedBytes = 0;  // informational: shared memory the kernel declares
};

// A tensor as the runtime sees it (sizes and strides in elements, like at::Tensor).
struct TensorView {
  void* data = nullptr;
  std::span<const int64_t> sizes;
  std::span<const int64_t> strides;
};

// The concrete domain for given symbol values (index = symbol id).
std::vector<int64_t> domainSizes(const KernelAbi& abi, std::span<const int64_t> symbolValues);

// Packs the kernel argument. `tensors` follows abi.tensors. Throws UserError when a tensor's sizes
// do not match its TensorArg for this domain, Unsupported per Note [Index width] or when a row is
// longer than abi.maxRowLength; sets `vec` per Note [Vector path].
KilnArgs packArgs(const KernelAbi& abi, std::span<const int64_t> domain,
                  std::span<const TensorView> tensors);

struct LaunchDims {
  int64_t gridX = 0;  // 0: skip the launch
  int blockX = 0;
};
LaunchDims launchDims(const LaunchSpec& spec, const KernelAbi& abi, const KilnArgs& args,
                      int multiprocessors);

}  // namespace kiln::codegen

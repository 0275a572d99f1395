#include "codegen/kernel_abi.h"

#include <algorithm>
#include <limits>

#include "src/support/error.h"
#include "src/support/hash.h"

namespace kiln::codegen {

namespace {

// Note [Index width]: 32-bit kernels step their grid-stride loops past numel by up to one grid,
// so they need numel <= 2^30, and every element offset below 2^31.
constexpr int64_t kMaxNumel32 = (int64_t{1} << 30) - (int64_t{1} << 20);
constexpr int64_t kMaxOffset32 = std::numeric_limits<int32_t>::max();

int64_t boundedProduct(std::span<const ir::SymDim> dims, auto&& valueOf) {
  int64_t n = 1;
  for (const auto& d : dims) {
    const int64_t v = valueOf(d);
    if (v < 0) return -1;
    if (v != 0 && n > std::numeric_limits<int64_t>::max() / v) return -1;
    n *= v;
  }
  return n;
}

}  // namespace

int64_t BucketInfo::maxOf(const ir::SymDim& dim) const {
  if (dim.isConstant()) return dim.constant();
  const auto& bounds = symbolMax.empty() ? symbolHint : symbolMax;
  std::vector<int64_t> values;
  for (int s : dim.symbols()) {
    if (s >= static_cast<int>(bounds.size()) || bounds[static_cast<size_t>(s)] < 0) return -1;
  }
  // Polynomials in non-negative symbols with non-negative coefficients are monotone; evaluating at
  // the bounds gives the bound. Negative coefficients (rare: cat offsets) make that unsound.
  const int64_t v = dim.evaluate(bounds);
  for (int s : dim.symbols()) {
    std::vector<int64_t> lower(bounds);
    lower[static_cast<size_t>(s)] = 0;
    if (dim.evaluate(lower) > v) return -1;
  }
  return v;
}

int64_t BucketInfo::hintOf(const ir::SymDim& dim) const {
  if (dim.isConstant()) return dim.constant();
  for (int s : dim.symbols())
    if (s >= static_cast<int>(symbolHint.size())) return -1;
  return dim.evaluate(symbolHint);
}

int64_t BucketInfo::maxNumel(std::span<const ir::SymDim> dims) const {
  return boundedProduct(dims, [&](const ir::SymDim& d) { return maxOf(d); });
}

int64_t BucketInfo::hintNumel(std::span<const ir::SymDim> dims) const {
  return boundedProduct(dims, [&](const ir::SymDim& d) { return hintOf(d); });
}

uint64_t BucketInfo::hash() const {
  uint64_t h = fnv1a("bucket");
  for (int64_t v : symbolHint) h = hashCombine(h, static_cast<uint64_t>(v));
  h = hashCombine(h, 0xb0b0);
  for (int64_t v : symbolMax) h = hashCombine(h, static_cast<uint64_t>(v));
  return h;
}

std::vector<int64_t> domainSizes(const KernelAbi& abi, std::span<const int64_t> symbolValues) {
  std::vector<int64_t> out;
  out.reserve(abi.domain.size());
  for (const auto& d : abi.domain) out.push_back(d.evaluate(symbolValues));
  return out;
}

KilnArgs packArgs(const KernelAbi& abi, std::span<const int64_t> domain,
                  std::span<const TensorView> tensors) {
  KILN_CHECK(static_cast<int>(domain.size()) == abi.rank, "domain rank {} for a rank-{} kernel",
             domain.size(), abi.rank);
  KILN_CHECK(tensors.size() == abi.tensors.size(), "{} tensors for a kernel of {}", tensors.size(),
             abi.tensors.size());
  KilnArgs args{};
  int64_t numel = 1;
  for (int d = 0; d < abi.rank; ++d) {
    KILN_USER_CHECK(domain[static_cast<size_t>(d)] >= 0, "negative size {} in domain dim {}",
                    domain[static_cast<size_t>(d)], d);
    args.sizes[d] = domain[static_cast<size_t>(d)];
    numel *= domain[static_cast<size_t>(d)];
  }
  args.numel = numel;
  int64_t rowLength = 1;
  for (int d = abi.rank - abi.rowDims; d < abi.rank; ++d) rowLength *= args.sizes[d];
  if (abi.maxRowLength >= 0 && rowLength > abi.maxRowLength && numel > 0)
    throw Unsupported(fmt::format("row length {} exceeds the kernel's register capacity {}",
                                  rowLength, abi.maxRowLength));
  if (!abi.index64 && numel > kMaxNumel32)
    throw Unsupported(fmt::format("{} elements exceed a 32-bit-indexed kernel", numel));

  const int v = abi.vectorWidth;
  bool vec = v > 1 && abi.rank > 0 && args.sizes[abi.rank - 1] % v == 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorArg& ta = abi.tensors[t];
    const TensorView& tv = tensors[t];
    const bool output = ta.role == TensorArg::Role::kOutput;
    KILN_USER_CHECK(tv.sizes.size() == ta.dimMap.size() && tv.strides.size() == ta.dimMap.size(),
                    "kernel {} {}: expected rank {}, got {}", output ? "output" : "input", t,
                    ta.dimMap.size(), tv.sizes.size());
    args.ptr[t] = tv.data;
    int64_t maxOffset = 0;
    for (size_t k = 0; k < ta.dimMap.size(); ++k) {
      const int64_t size = tv.sizes[k];
      const int dd = ta.dimMap[k];
      if (dd == kGatherDim) {  // an embedding's rows: the kernel checks ids against their count
        KILN_USER_CHECK(ta.shape[k].isConstant() && size == ta.shape[k].constant(),
                        "kernel tensor {} dim {}: expected {} table rows, got {}", t, k,
                        ta.shape[k].toString(), size);
        KILN_CHECK(abi.rank >= 2, "an embedding's table in a rank-{} kernel", abi.rank);
        args.strides[t][0] = size == 1 ? 0 : tv.strides[k];
        maxOffset += (size - 1) * std::abs(tv.strides[k]);
        continue;
      }
      if (size == 1) continue;  // broadcast or keepdim: stride 0
      KILN_USER_CHECK(dd >= 0 && size == args.sizes[dd],
                      "kernel tensor {} dim {}: expected size {}, got {}", t, k,
                      dd >= 0 ? args.sizes[dd] : 1, size);
      args.strides[t][dd] = tv.strides[k];
      maxOffset += (size - 1) * std::abs(tv.strides[k]);
    }
    if (output && !ta.rowConstant) {
      // An elementwise output is written at every domain element: it must not broadcast.
      for (int d = 0; d < abi.rank; ++d)
        KILN_USER_CHECK(args.sizes[d] <= 1 || args.strides[t][d] != 0,
                        "kernel output {} broadcasts along domain dim {}", t, d);
    }
    if (!abi.index64 && maxOffset > kMaxOffset32)
      throw Unsupported(
          fmt::format("tensor {} spans {} elements, beyond 32-bit indexing", t, maxOffset + 1));
    if (vec && abi.rank > 0) {
      const int64_t inner = args.strides[t][abi.rank - 1];
      bool extends = false;  // along the innermost domain dim (Note [Splat loads])
      for (size_t k = 0; k < ta.dimMap.size(); ++k)
        extends = extends || (ta.dimMap[k] == abi.rank - 1 && tv.sizes[k] > 1);
      if (ta.rowConstant) {
        // stored one element at a time
      } else if (inner != 1 && (inner != 0 || extends)) {
        vec = false;
      } else if (inner == 1) {
        for (int d = 0; d + 1 < abi.rank; ++d)
          if (args.strides[t][d] % v != 0) vec = false;
        const int64_t align = std::min<int64_t>(16, v * ir::byteSize(ta.dtype));
        if (reinterpret_cast<uintptr_t>(tv.data) % static_cast<uintptr_t>(align) != 0) vec = false;
      }
      // else a splat (Note [Splat loads]): one scalar load a vector, at any offset.
    }
  }
  args.vec = vec ? 1 : 0;
  return args;
}

LaunchDims launchDims(const LaunchSpec& spec, const KernelAbi& abi, const KilnArgs& args,
                      int multiprocessors) {
  int64_t units = 1;
  if (spec.rows) {
    for (int d = 0; d < abi.rank - abi.rowDims; ++d) units *= args.sizes[d];
  } else {
    units = args.numel;
  }
  LaunchDims dims;
  dims.blockX = spec.blockSize;
  if (units <= 0) return dims;
  int64_t grid = (units + spec.unitsPerBlock - 1) / spec.unitsPerBlock;
  if (spec.maxBlocksPerSm > 0)
    grid = std::min<int64_t>(grid, int64_t{spec.maxBlocksPerSm} * std::max(1, multiprocessors));
  dims.gridX = std::min<int64_t>(grid, std::numeric_limits<int32_t>::max());
  return dims;
}

}  // namespace kiln::codegen

#include "jit/runtime/buckets.h"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "src/support/error.h"

namespace kiln::jit {

codegen::BucketInfo bucketFor(const std::vector<int64_t>& exampleSymbolValues) {
  // Note [Buckets are deterministic]: the bucket of a value is the next power of two (its upper
  // edge), and the BucketInfo is a function of the bucket alone, never of the example that created
  // it. So the kernel text (and its cache key) for a bucket is the same in every process, which is
  // what lets kiln-warmup fill a cache that a later process hits.
  std::vector<int64_t> edges;
  for (int64_t v : exampleSymbolValues) edges.push_back(bucketEdge(v));
  return bucketInfoForEdges(edges);
}

codegen::BucketInfo bucketInfoForEdges(const std::vector<int64_t>& symbolEdges) {
  codegen::BucketInfo b;
  for (int64_t edge : symbolEdges) {
    if (edge == kOverflowBucket) return genericBucket(symbolEdges.size());
    b.symbolHint.push_back(edge);
    b.symbolMax.push_back(edge);
  }
  return b;
}

codegen::BucketInfo genericBucket(size_t numSymbols) {
  // No hints (heuristics fall back to their defaults) and every bound -1: 64-bit indexing, rows
  // reloaded unless their length is static. Deterministic, so generic kernels are cacheable.
  codegen::BucketInfo b;
  b.symbolMax.assign(numSymbols, -1);
  return b;
}

bool isGeneric(const codegen::BucketInfo& bucket) {
  return bucket.symbolHint.empty() && !bucket.symbolMax.empty() &&
         std::all_of(bucket.symbolMax.begin(), bucket.symbolMax.end(),
                     [](int64_t m) { return m < 0; });
}

std::string bucketLabel(const ir::Graph& graph, const codegen::BucketInfo& bucket) {
  if (graph.numSymbols() == 0) return "static";
  if (isGeneric(bucket)) return "generic";
  std::string out;
  for (int s = 0; s < graph.numSymbols(); ++s) {
    if (!out.empty()) out += ", ";
    const auto& bounds = bucket.symbolMax.empty() ? bucket.symbolHint : bucket.symbolMax;
    int64_t m = s < static_cast<int>(bounds.size()) ? bounds[static_cast<size_t>(s)] : -1;
    out += m < 0 ? fmt::format("{} any", graph.symbolName(s))
                 : fmt::format("{}<={}", graph.symbolName(s), m);
  }
  return out;
}

int64_t bucketEdge(int64_t value) {
  if (value <= 1) return std::max<int64_t>(value, 0);  // 0 and 1 are buckets of their own
  return int64_t{1} << std::bit_width(static_cast<uint64_t>(value - 1));
}

int64_t bucketEdge(int64_t value, std::span<const int64_t> edges) {
  if (value <= 1 || edges.empty()) return bucketEdge(value);
  auto it = std::lower_bound(edges.begin(), edges.end(), value);
  return it == edges.end() ? kOverflowBucket : *it;
}

void validateBucketEdges(std::string_view who, std::span<const int64_t> edges) {
  for (size_t i = 0; i < edges.size(); ++i) {
    KILN_USER_CHECK(edges[i] >= 1, "{}: bucket edges must be >= 1, got {} at position {}", who,
                    edges[i], i);
    KILN_USER_CHECK(i == 0 || edges[i] > edges[i - 1],
                    "{}: bucket edges must be strictly increasing, got {} after {}", who, edges[i],
                    edges[i - 1]);
  }
}

}  // namespace kiln::jit

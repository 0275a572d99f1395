#pragma once
// Shape buckets: which kernels serve a call's symbol values. A plan's kernel set is emitted for
// one bucket (Note [Programs and kernel sets] in plan.h); guards pick the bucket per call
// (Note [Guards and plans] in optimize.h).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codegen/kernel_abi.h"
#include "src/ir/graph.h"

namespace kiln::jit {

// Note [Buckets]
// A dynamic dim's bucket is named by its upper edge. 0 and 1 are buckets of their own (capture
// specializes them: they change broadcasting). Other values go to the smallest edge >= value:
// the next power of two by default, or an explicit edge list (BucketPolicy in optimize.h, e.g.
// {1, 8, 32, 128, 512, 2048}). A value above the last explicit edge is in the overflow bucket,
// served by the generic kernels (no bucket bounds, 64-bit indexing): never an error.
inline constexpr int64_t kOverflowBucket = -1;
int64_t bucketEdge(int64_t value);  // powers of two
// `edges` empty: powers of two; else strictly increasing positive edges (validateBucketEdges).
int64_t bucketEdge(int64_t value, std::span<const int64_t> edges);
// UserError naming `who` unless edges are strictly increasing and >= 1.
void validateBucketEdges(std::string_view who, std::span<const int64_t> edges);

// The BucketInfo codegen sees for the power-of-two buckets of these symbol values (Note [Buckets
// are deterministic] in buckets.cpp). kiln-warmup uses it.
codegen::BucketInfo bucketFor(const std::vector<int64_t>& exampleSymbolValues);
// The BucketInfo of given bucket edges (index = symbol id); any kOverflowBucket gives the generic
// bucket: overflow plans run the generic kernels.
codegen::BucketInfo bucketInfoForEdges(const std::vector<int64_t>& symbolEdges);
// No bounds and no hints: kernels that serve any size ("generic kernels").
codegen::BucketInfo genericBucket(size_t numSymbols);
bool isGeneric(const codegen::BucketInfo& bucket);
// "s0<=8, seq<=128", "generic", or "static" (no symbols).
std::string bucketLabel(const ir::Graph& graph, const codegen::BucketInfo& bucket);

}  // namespace kiln::jit

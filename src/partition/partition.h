#pragma once
// Splits a graph into an ordered list of steps: fusion groups (become one generated kernel each),
// library calls (GEMM/conv/attention through ATen), views (metadata-only ATen ops) and eager ops.
//
// Note [What fuses]
// A FusionGroup is a connected set of pointwise ops (with implicit broadcasting), plus at most one
// "row" stage of reductions/normalizations over the innermost dim(s), with its pointwise prologue
// (feeding the reduction) and epilogue (consuming its output, possibly together with the prologue's
// values, e.g. x - mean(x)). softmax(x*scale+mask) and gelu(layer_norm(x+r)) are one group each.
// Groups never contain views, library or eager ops; a group's inputs are arbitrary strided tensors,
// so permute/expand/slice feeding a group cost no copy. Constants are folded into the kernel text.
// Steps are in a valid topological order.
// Details of this implementation (partition.cpp):
// - A group holds at most one row op (reduction or normalization); two dependent row ops (layer
//   norm written out as mean, sub, mean) give two groups.
// - A reduction not over the innermost dims, or softmax over another dim than the last, is an
//   eager step (Step::reason says why); so is anything reduced from a rank-0 input.
// - A reduction without keepdim ends its group: its outer-dims-only result is a group output, and
//   its consumers start another group.
// - Group outputs have the domain's shape (kRow: or the per-row shape, Note [Group output shapes]
//   in partition.cpp); smaller values (w * 2 with w: [N]) fuse into a bigger group only while
//   nothing outside the group reads them.
// - Merges that would create a cycle between steps are refused (Note [Greedy clustering]).
#include <cstdint>
#include <string>
#include <vector>

#include "src/ir/graph.h"

namespace kiln::partition {

enum class GroupKind : uint8_t {
  kPointwise,  // every output has the same shape (the group's iteration domain)
  kRow,        // reductions/normalizations over the innermost `rowDims` dims of the domain
};

struct FusionGroup {
  int id = 0;
  GroupKind kind = GroupKind::kPointwise;
  // The iteration domain: the shape of the largest value in the group (for kRow, the shape before
  // reduction). Every group input broadcasts to it (after keepdim-style alignment for kRow).
  ir::Shape domain;
  int rowDims = 0;                        // kRow: number of innermost dims reduced (>= 1)
  std::vector<const ir::Node*> nodes;     // in graph order; never boundary/view/library/eager
  std::vector<const ir::Value*> inputs;   // read from outside the group; constants excluded
  std::vector<const ir::Value*> outputs;  // used outside the group or graph outputs
  // For a library step's fused epilogue (see Step::epilogueOf): filled by the partitioner when a
  // group directly consumes a GEMM result; codegen may ignore it.
};

enum class StepKind : uint8_t { kFusion, kLibrary, kView, kEager };

struct Step {
  StepKind kind = StepKind::kEager;
  FusionGroup group;               // kFusion
  const ir::Node* node = nullptr;  // kLibrary, kView, kEager
  // kFusion: index of the library step whose output this group consumes as an epilogue
  // (bias/activation/residual after a GEMM), or -1.
  int epilogueOf = -1;
  // kEager: why a reduction/normalization was not fused (e.g. it reduces a non-innermost dim);
  // empty for ops that are eager by nature.
  std::string reason;
};

struct PartitionOptions {
  bool fuseReductions = true;  // false: reductions become single-op groups (debugging aid)
  int maxGroupInputs = 16;     // kernel argument budget
};

struct Partition {
  std::vector<Step> steps;
  int numFusionGroups() const;
  std::vector<const ir::Node*> eagerNodes() const;
};

Partition partitionGraph(const ir::Graph& graph, const PartitionOptions& options = {});

// Human-readable listing of the partition: groups with their ops, library calls, views, eager ops.
std::string explain(const ir::Graph& graph, const Partition& partition);
// The same content as one JSON object (pretty-printed; its layout is in explain.cpp): step counts
// per kind, every step with its kind, op and node text or its group (id, kind, rowDims, domain,
// inputs, node texts, outputs, epilogueOf), and the eager leftovers with their reasons.
std::string explainJson(const ir::Graph& graph, const Partition& partition);

}  // namespace kiln::partition

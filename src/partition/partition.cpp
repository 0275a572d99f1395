#include "src/partition/partition.h"

#include <algorithm>
#include <optional>
#include <queue>
#include <set>
#include <unordered_set>

#include "src/support/error.h"

namespace kiln::partition {

using ir::Node;
using ir::OpCategory;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::Value;

// Note [Greedy clustering]
// Nodes are visited in graph order. Every non-boundary node starts as its own cluster; a fusible
// node then tries to merge its cluster with the cluster of each fusible producer, in operand order.
// A merge is accepted when
//   (a) the merged set is a legal group (analyzeCluster: at most one row op, every member fits the
//       iteration domain, the input budget holds, pinned members keep a legal output shape), and
//   (b) it creates no cycle between clusters: no path leaves the merged set through another
//       cluster and comes back (clusters, not nodes, are the unit here, because a path that enters
//       a cluster at one node may leave it at another).
// Clusters only ever hold visited nodes and edges go forward in graph order, so the cycle search
// never needs to look past the node being visited. Producer->consumer edges are each tried once,
// when the consumer is visited; merging two producers' clusters through one consumer happens by
// trying them one after the other.
//
// Note [Group output shapes]
// Codegen writes a group's outputs over its iteration domain, so an output must have the domain's
// shape (kPointwise), or for kRow the domain's shape, the per-row shape with keepdim (outer dims +
// ones) or a reduction's own output without keepdim (outer dims). A member of another shape (w * 2
// with w: [N] inside a [B, N] group) is fine while only the group reads it, but not as an output.
// Whether a value ends up an output is only known once grouping is done, so partitionGraph checks
// afterwards, "pins" each offending node (it may then only join groups whose domain makes its shape
// a legal output) and partitions again. Each round pins at least one more node, and a pinned node
// alone is always legal, so this ends; real graphs rarely need a second round.

namespace {

enum class Role : uint8_t { kBoundary, kPointwise, kRow, kView, kLibrary, kEager };

struct NodeInfo {
  Role role = Role::kEager;
  int rowDims = 0;       // kRow: innermost dims reduced
  bool keepRank = true;  // kRow: output keeps the input's rank (normalizations, keepdim reductions)
  std::string reason;    // why a reduction/normalization became eager
};

// Reduction dims as normalized, sorted, unique indices; missing or empty means all dims (torch).
std::vector<int64_t> reductionDims(const Node& node, int64_t rank) {
  std::vector<int64_t> dims;
  if (const ir::AttrValue* v = node.attrs().find("dims")) {
    if (const auto* list = std::get_if<std::vector<int64_t>>(v))
      dims = *list;
    else if (const auto* one = std::get_if<int64_t>(v))
      dims = {*one};
  }
  if (dims.empty()) {
    for (int64_t d = 0; d < rank; ++d) dims.push_back(d);
  }
  for (int64_t& d : dims) {
    if (d < 0) d += rank;
    KILN_CHECK(d >= 0 && d < rank, "reduction dim {} out of range for rank {}", d, rank);
  }
  std::sort(dims.begin(), dims.end());
  dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
  return dims;
}

NodeInfo classify(const Node& node) {
  NodeInfo info;
  switch (node.category()) {
    case OpCategory::kBoundary:
      info.role = Role::kBoundary;
      return info;
    case OpCategory::kPointwise:
    case OpCategory::kGather:  // Note [Embeddings in kernels] in codegen/emit_cuda.cpp
      info.role = Role::kPointwise;
      return info;
    case OpCategory::kView:
      info.role = Role::kView;
      return info;
    case OpCategory::kLibrary:
      info.role = Role::kLibrary;
      return info;
    case OpCategory::kEager:
      info.role = Role::kEager;
      return info;
    case OpCategory::kReduction:
    case OpCategory::kNormalization:
      break;
  }
  const int64_t rank = node.input(0)->rank();
  info.role = Role::kEager;
  if (rank == 0) {
    info.reason = "rank-0 input";
    return info;
  }
  switch (node.kind()) {
    case OpKind::kSum:
    case OpKind::kMean:
    case OpKind::kAmax:
    case OpKind::kAmin: {
      std::vector<int64_t> dims = reductionDims(node, rank);
      const auto k = static_cast<int64_t>(dims.size());
      for (int64_t i = 0; i < k; ++i) {
        if (dims[static_cast<size_t>(i)] != rank - k + i) {
          info.reason = "reduces dims that are not the innermost";
          return info;
        }
      }
      info.role = Role::kRow;
      info.rowDims = static_cast<int>(k);
      info.keepRank = node.output()->rank() == rank;
      return info;
    }
    case OpKind::kSoftmax:
    case OpKind::kLogSoftmax: {
      int64_t dim = node.attrs().getInt("dim");
      if (dim < 0) dim += rank;
      if (dim != rank - 1) {
        info.reason = "normalizes a dim that is not the last";
        return info;
      }
      info.role = Role::kRow;
      info.rowDims = 1;
      return info;
    }
    case OpKind::kLayerNorm: {
      const int64_t k = node.attrs().getInt("normalized_ndim");
      if (k < 1 || k > rank) {
        info.reason = "normalized_ndim out of range";
        return info;
      }
      info.role = Role::kRow;
      info.rowDims = static_cast<int>(k);
      return info;
    }
    default:
      KILN_CHECK(false, "unhandled reduction/normalization {}", ir::toString(node.kind()));
  }
  return info;
}

// numpy broadcasting of two shapes; nullopt when they do not broadcast (no exception: callers
// use it to reject a merge, which is not an error).
std::optional<Shape> tryBroadcast(const Shape& a, const Shape& b) {
  const Shape& longer = a.size() >= b.size() ? a : b;
  const Shape& shorter = a.size() >= b.size() ? b : a;
  Shape out = longer;
  const size_t offset = longer.size() - shorter.size();
  for (size_t i = 0; i < shorter.size(); ++i) {
    const SymDim& l = longer[offset + i];
    const SymDim& s = shorter[i];
    if (l == s || s.isOne()) continue;
    if (l.isOne()) {
      out[offset + i] = s;
      continue;
    }
    return std::nullopt;
  }
  return out;
}

// True if `from` broadcasts to exactly `to`.
bool fitsIn(const Shape& from, const Shape& to) {
  if (from.size() > to.size()) return false;
  const size_t offset = to.size() - from.size();
  for (size_t i = 0; i < from.size(); ++i) {
    if (!(from[i] == to[offset + i] || from[i].isOne())) return false;
  }
  return true;
}

bool isGemm(OpKind kind) {
  switch (kind) {
    case OpKind::kMatMul:
    case OpKind::kLinear:
    case OpKind::kAddmm:
    case OpKind::kBmm:
    case OpKind::kBaddbmm:
      return true;
    default:
      return false;
  }
}

// What a candidate set of nodes would be as one group.
struct ClusterShape {
  GroupKind kind = GroupKind::kPointwise;
  Shape domain;
  int rowDims = 0;
  const Node* rowNode = nullptr;
};

class Partitioner {
 public:
  Partitioner(const ir::Graph& graph, const PartitionOptions& options,
              const std::vector<NodeInfo>& infos, const std::vector<char>& pinned)
      : graph_(graph), options_(options), infos_(infos), pinned_(pinned) {}

  // Runs Note [Greedy clustering]; returns clusters (each sorted in graph order), indexed by id.
  std::vector<std::vector<const Node*>> run() {
    const auto& nodes = graph_.nodes();
    clusterOf_.assign(nodes.size(), -1);
    for (const auto& owned : nodes) {
      const Node* node = owned.get();
      const NodeInfo& info = infos_[idx(node)];
      if (info.role == Role::kBoundary) continue;
      const int self = newCluster(node);
      if (node->kind() == OpKind::kCat) mergeCatOperands(node);
      if (!fusible(info.role)) continue;
      int current = self;
      for (const Value* in : node->inputs()) {
        const Node* producer = in->producer();
        if (!fusible(infos_[idx(producer)].role)) continue;
        const int other = clusterOf_[idx(producer)];
        if (other == current) continue;
        if (!tryMerge(current, other, node->index())) continue;
        current = clusterOf_[idx(node)];
      }
    }
    std::vector<std::vector<const Node*>> out;
    for (auto& members : clusters_) {
      if (members.empty()) continue;
      std::sort(members.begin(), members.end(),
                [](const Node* a, const Node* b) { return a->index() < b->index(); });
      out.push_back(members);
    }
    return out;
  }

  // Legal-group analysis for a candidate member set (Note [What fuses]); nullopt when illegal.
  std::optional<ClusterShape> analyze(const std::vector<const Node*>& members) const {
    ClusterShape shape;
    std::unordered_set<const Node*> inSet(members.begin(), members.end());
    for (const Node* n : members) {
      if (infos_[idx(n)].role != Role::kRow) continue;
      if (shape.rowNode != nullptr) return std::nullopt;  // one row op per group
      shape.rowNode = n;
    }
    if (shape.rowNode != nullptr) {
      if (!options_.fuseReductions && members.size() > 1) return std::nullopt;
      shape.kind = GroupKind::kRow;
      shape.domain = shape.rowNode->input(0)->shape();
      shape.rowDims = infos_[idx(shape.rowNode)].rowDims;
      for (const Node* n : members) {
        if (n == shape.rowNode) continue;
        if (!fitsIn(n->output()->shape(), shape.domain)) return std::nullopt;
        // A reduction without keepdim yields outer-dims-only values that no longer line up
        // with the domain (trailing alignment would pair them with the row dims).
        for (const Value* in : n->inputs()) {
          if (in->producer() == shape.rowNode && !infos_[idx(shape.rowNode)].keepRank)
            return std::nullopt;
        }
      }
    } else {
      shape.kind = GroupKind::kPointwise;
      for (const Node* n : members) {
        auto merged = tryBroadcast(shape.domain, n->output()->shape());
        if (!merged) return std::nullopt;
        shape.domain = std::move(*merged);
      }
    }
    for (const Node* n : members) {
      if (pinned_[idx(n)] && !legalOutputShape(shape, n, n->output()->shape())) return std::nullopt;
      if (n->category() == OpCategory::kGather && !gatherFits(n, inSet)) return std::nullopt;
      // Note [Aranges in kernels]: row kernels have no per-element coordinates to count with.
      if (n->kind() == OpKind::kArange && shape.kind == GroupKind::kRow) return std::nullopt;
    }
    if (members.size() > 1) {
      std::set<int> inputs;
      for (const Node* n : members) {
        for (const Value* in : n->inputs()) {
          if (in->producer()->kind() == OpKind::kConstant) continue;
          if (inSet.count(in->producer()) != 0) continue;
          inputs.insert(in->id());
        }
      }
      if (static_cast<int>(inputs.size()) > options_.maxGroupInputs) return std::nullopt;
    }
    return shape;
  }

  // Note [Embeddings in kernels] in codegen/emit_cuda.cpp: the kernel reads an embedding's table
  // and ids straight from memory, so both come from outside the group, and no other member reads
  // the table (it is a group input of its own).
  static bool gatherFits(const Node* n, const std::unordered_set<const Node*>& inSet) {
    const Value* table = n->input(0);
    if (inSet.count(table->producer()) != 0 || inSet.count(n->input(1)->producer()) != 0)
      return false;
    for (const ir::Use& use : table->uses())
      if (use.user != n && inSet.count(use.user) != 0) return false;
    return true;
  }

  // Note [Group output shapes].
  bool legalOutputShape(const ClusterShape& shape, const Node* producer, const Shape& s) const {
    if (s == shape.domain) return true;
    if (shape.kind == GroupKind::kPointwise) return false;
    const size_t outer = shape.domain.size() - static_cast<size_t>(shape.rowDims);
    Shape perRow(shape.domain.begin(), shape.domain.begin() + static_cast<std::ptrdiff_t>(outer));
    if (producer == shape.rowNode && s == perRow) return true;
    perRow.resize(shape.domain.size(), SymDim(1));
    return s == perRow;
  }

 private:
  static bool fusible(Role role) { return role == Role::kPointwise || role == Role::kRow; }
  static size_t idx(const Node* n) { return static_cast<size_t>(n->index()); }

  // Note [Cat operands in one group]: the groups computing a cat's operands, when those have one
  // shape, become one group with several outputs (one kernel; each output is written into its
  // place in the cat's buffer: Note [Cats written in place] in jit/runtime/program.h). A rotary
  // embedding's two halves (Note [Pointwise ops through cat]) are one kernel this way. The usual
  // checks hold (a legal group, no cycle): halves that depend on each other stay apart.
  void mergeCatOperands(const Node* cat) {
    int current = -1;
    for (const Value* in : cat->inputs()) {
      const Node* producer = in->producer();
      if (!fusible(infos_[idx(producer)].role) || in->shape() != cat->input(0)->shape()) continue;
      const int other = clusterOf_[idx(producer)];
      if (current < 0 || other == current) {
        current = other;
        continue;
      }
      if (tryMerge(current, other, cat->index())) current = clusterOf_[idx(producer)];
    }
  }

  int newCluster(const Node* node) {
    const int id = static_cast<int>(clusters_.size());
    clusters_.push_back({node});
    clusterOf_[idx(node)] = id;
    return id;
  }

  bool tryMerge(int a, int b, int limit) {
    std::vector<const Node*> members = clusters_[static_cast<size_t>(a)];
    const auto& other = clusters_[static_cast<size_t>(b)];
    members.insert(members.end(), other.begin(), other.end());
    if (!analyze(members)) return false;
    if (createsCycle(a, b, limit)) return false;
    // Keep the lower id; ids only matter for determinism.
    const int keep = std::min(a, b);
    const int drop = std::max(a, b);
    for (const Node* n : clusters_[static_cast<size_t>(drop)]) clusterOf_[idx(n)] = keep;
    clusters_[static_cast<size_t>(keep)] = std::move(members);
    clusters_[static_cast<size_t>(drop)].clear();
    return true;
  }

  // Is there a path a|b -> X -> ... -> a|b through clusters X other than a and b?
  bool createsCycle(int a, int b, int limit) const {
    std::vector<char> seen(clusters_.size(), 0);
    std::vector<int> stack;
    auto visitUsers = [&](const Node* n, bool fromInside) {
      for (const Value* v : n->outputs()) {
        for (const ir::Use& use : v->uses()) {
          if (use.user->index() > limit) continue;  // not clustered yet; cannot lead back
          const int c = clusterOf_[idx(use.user)];
          if (c == a || c == b) {
            if (!fromInside) return true;
            continue;
          }
          if (!seen[static_cast<size_t>(c)]) {
            seen[static_cast<size_t>(c)] = 1;
            stack.push_back(c);
          }
        }
      }
      return false;
    };
    for (int c : {a, b}) {
      for (const Node* n : clusters_[static_cast<size_t>(c)]) visitUsers(n, /*fromInside=*/true);
    }
    while (!stack.empty()) {
      const int c = stack.back();
      stack.pop_back();
      for (const Node* n : clusters_[static_cast<size_t>(c)]) {
        if (visitUsers(n, /*fromInside=*/false)) return true;
      }
    }
    return false;
  }

  const ir::Graph& graph_;
  const PartitionOptions& options_;
  const std::vector<NodeInfo>& infos_;
  const std::vector<char>& pinned_;
  std::vector<std::vector<const Node*>> clusters_;
  std::vector<int> clusterOf_;
};

bool usedOutside(const ir::Graph& graph, const Value* v,
                 const std::unordered_set<const Node*>& members) {
  if (graph.isGraphOutput(v)) return true;
  for (const ir::Use& use : v->uses()) {
    if (members.count(use.user) == 0) return true;
  }
  return false;
}

FusionGroup makeGroup(const ir::Graph& graph, const std::vector<const Node*>& members,
                      const ClusterShape& shape) {
  FusionGroup group;
  group.kind = shape.kind;
  group.domain = shape.domain;
  group.rowDims = shape.rowDims;
  group.nodes = members;
  std::unordered_set<const Node*> inSet(members.begin(), members.end());
  std::unordered_set<const Value*> seenInputs;
  for (const Node* n : members) {
    for (const Value* in : n->inputs()) {
      if (in->producer()->kind() == OpKind::kConstant) continue;
      if (inSet.count(in->producer()) != 0) continue;
      if (seenInputs.insert(in).second) group.inputs.push_back(in);
    }
    for (const Value* out : n->outputs()) {
      if (usedOutside(graph, out, inSet)) group.outputs.push_back(out);
    }
  }
  return group;
}

// Orders clusters topologically, earliest first node first among the ready ones.
std::vector<size_t> orderClusters(const ir::Graph& graph,
                                  const std::vector<std::vector<const Node*>>& clusters) {
  std::vector<int> clusterOf(graph.nodes().size(), -1);
  for (size_t c = 0; c < clusters.size(); ++c) {
    for (const Node* n : clusters[c])
      clusterOf[static_cast<size_t>(n->index())] = static_cast<int>(c);
  }
  std::vector<std::set<size_t>> succs(clusters.size());
  std::vector<int> indegree(clusters.size(), 0);
  for (size_t c = 0; c < clusters.size(); ++c) {
    for (const Node* n : clusters[c]) {
      for (const Value* in : n->inputs()) {
        const int p = clusterOf[static_cast<size_t>(in->producer()->index())];
        if (p < 0 || static_cast<size_t>(p) == c) continue;
        if (succs[static_cast<size_t>(p)].insert(c).second) ++indegree[c];
      }
    }
  }
  using Item = std::pair<int, size_t>;  // (first node index, cluster)
  std::priority_queue<Item, std::vector<Item>, std::greater<>> ready;
  for (size_t c = 0; c < clusters.size(); ++c) {
    if (indegree[c] == 0) ready.emplace(clusters[c].front()->index(), c);
  }
  std::vector<size_t> order;
  while (!ready.empty()) {
    const size_t c = ready.top().second;
    ready.pop();
    order.push_back(c);
    for (size_t s : succs[c]) {
      if (--indegree[s] == 0) ready.emplace(clusters[s].front()->index(), s);
    }
  }
  KILN_CHECK(order.size() == clusters.size(), "partition: cycle between steps ({} of {} ordered)",
             order.size(), clusters.size());
  return order;
}

// Every value a step reads is produced by a boundary node or an earlier step.
void checkTopological(const Partition& partition) {
  std::unordered_set<const Value*> available;
  auto read = [&](const Value* v, size_t step) {
    KILN_CHECK(v->producer()->category() == OpCategory::kBoundary || available.count(v) != 0,
               "partition: step {} reads %{} before it is produced", step, v->id());
  };
  for (size_t i = 0; i < partition.steps.size(); ++i) {
    const Step& step = partition.steps[i];
    if (step.kind == StepKind::kFusion) {
      for (const Value* v : step.group.inputs) read(v, i);
      for (const Node* n : step.group.nodes) {
        for (const Value* out : n->outputs()) available.insert(out);
      }
    } else {
      for (const Value* v : step.node->inputs()) read(v, i);
      for (const Value* out : step.node->outputs()) available.insert(out);
    }
  }
}

}  // namespace

int Partition::numFusionGroups() const {
  return static_cast<int>(std::count_if(steps.begin(), steps.end(),
                                        [](const Step& s) { return s.kind == StepKind::kFusion; }));
}

std::vector<const ir::Node*> Partition::eagerNodes() const {
  std::vector<const ir::Node*> out;
  for (const Step& s : steps) {
    if (s.kind == StepKind::kEager) out.push_back(s.node);
  }
  return out;
}

Partition partitionGraph(const ir::Graph& graph, const PartitionOptions& options) {
  KILN_USER_CHECK(options.maxGroupInputs >= 1,
                  "PartitionOptions::maxGroupInputs: expected >= 1, got {}",
                  options.maxGroupInputs);
  const auto& nodes = graph.nodes();
  std::vector<NodeInfo> infos;
  infos.reserve(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    KILN_CHECK(nodes[i]->index() == static_cast<int>(i), "node index {} at position {}",
               nodes[i]->index(), i);
    infos.push_back(classify(*nodes[i]));
  }

  // Note [Group output shapes]: partition, pin members that escape with an illegal shape, repeat.
  std::vector<char> pinned(nodes.size(), 0);
  std::vector<std::vector<const Node*>> clusters;
  std::vector<ClusterShape> shapes;
  for (;;) {
    Partitioner partitioner(graph, options, infos, pinned);
    clusters = partitioner.run();
    shapes.assign(clusters.size(), ClusterShape{});
    bool repinned = false;
    for (size_t c = 0; c < clusters.size(); ++c) {
      const Role role = infos[static_cast<size_t>(clusters[c].front()->index())].role;
      if (role != Role::kPointwise && role != Role::kRow) continue;
      auto shape = partitioner.analyze(clusters[c]);
      KILN_CHECK(shape.has_value(), "partition: accepted cluster fails analysis");
      shapes[c] = *shape;
      if (clusters[c].size() == 1) continue;
      std::unordered_set<const Node*> inSet(clusters[c].begin(), clusters[c].end());
      for (const Node* n : clusters[c]) {
        if (pinned[static_cast<size_t>(n->index())]) continue;
        for (const Value* out : n->outputs()) {
          if (usedOutside(graph, out, inSet) &&
              !partitioner.legalOutputShape(*shape, n, out->shape())) {
            pinned[static_cast<size_t>(n->index())] = 1;
            repinned = true;
          }
        }
      }
    }
    if (!repinned) break;
  }

  Partition partition;
  std::vector<int> stepOfNode(nodes.size(), -1);
  int nextGroupId = 0;
  for (size_t c : orderClusters(graph, clusters)) {
    const std::vector<const Node*>& members = clusters[c];
    const NodeInfo& info = infos[static_cast<size_t>(members.front()->index())];
    Step step;
    switch (info.role) {
      case Role::kPointwise:
      case Role::kRow:
        step.kind = StepKind::kFusion;
        step.group = makeGroup(graph, members, shapes[c]);
        step.group.id = nextGroupId++;
        break;
      case Role::kView:
        step.kind = StepKind::kView;
        break;
      case Role::kLibrary:
        step.kind = StepKind::kLibrary;
        break;
      case Role::kEager:
        step.kind = StepKind::kEager;
        step.reason = info.reason;
        break;
      case Role::kBoundary:
        KILN_CHECK(false, "boundary node in a cluster");
    }
    if (step.kind != StepKind::kFusion) {
      KILN_CHECK(members.size() == 1, "non-fusible cluster of {} nodes", members.size());
      step.node = members.front();
    }
    for (const Node* n : members) {
      stepOfNode[static_cast<size_t>(n->index())] = static_cast<int>(partition.steps.size());
    }
    partition.steps.push_back(std::move(step));
  }

  // Epilogues: a group reading a GEMM result that nothing else reads.
  for (Step& step : partition.steps) {
    if (step.kind != StepKind::kFusion) continue;
    std::unordered_set<const Node*> inSet(step.group.nodes.begin(), step.group.nodes.end());
    for (const Value* in : step.group.inputs) {
      const Node* producer = in->producer();
      if (!isGemm(producer->kind()) || usedOutside(graph, in, inSet)) continue;
      step.epilogueOf = stepOfNode[static_cast<size_t>(producer->index())];
      break;
    }
  }

  checkTopological(partition);
  return partition;
}

}  // namespace kiln::partition

#include "src/passes/fuse_attention.h"

#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "src/support/error.h"

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Value;

namespace {

const Node* producer(const Value* v, OpKind kind) {
  const Node* n = v->producer();
  return n != nullptr && n->kind() == kind ? n : nullptr;
}

// Used by exactly one node and not a graph output: safe to fold into the fused op.
bool singleUse(const ir::Graph& g, const Value* v) {
  return v->uses().size() == 1 && !g.isGraphOutput(v);
}

std::optional<double> scalarConstant(const Value* v) {
  const Node* n = producer(v, OpKind::kConstant);
  if (n == nullptr || v->rank() != 0) return std::nullopt;
  return n->attrs().getDouble("value");
}

bool isFloat(ir::DType d) {
  return d == ir::DType::kFloat16 || d == ir::DType::kBFloat16 || d == ir::DType::kFloat32;
}

// A permute that swaps the last two dims and keeps the others.
bool swapsLastTwo(const Node* permute) {
  const std::vector<int64_t> perm = permute->attrs().getInts("perm");
  const size_t r = perm.size();
  if (r < 2) return false;
  for (size_t i = 0; i + 2 < r; ++i)
    if (perm[i] != static_cast<int64_t>(i)) return false;
  return perm[r - 2] == static_cast<int64_t>(r - 1) && perm[r - 1] == static_cast<int64_t>(r - 2);
}

struct Match {
  Value* q = nullptr;
  Value* k = nullptr;
  Value* v = nullptr;
  Value* mask = nullptr;
  double scale = 1.0;
};

// `scores` is QK (maybe scaled); fills q, k and the scale.
bool matchScores(const ir::Graph& g, Value* scores, Match& m) {
  Value* qk = scores;
  if (const Node* s = producer(scores, OpKind::kMul); s != nullptr && singleUse(g, scores)) {
    if (auto c = scalarConstant(s->input(1))) {
      qk = s->input(0);
      m.scale = *c;
    }
  } else if (const Node* d = producer(scores, OpKind::kDiv); d != nullptr && singleUse(g, scores)) {
    if (auto c = scalarConstant(d->input(1)); c && *c != 0.0) {
      qk = d->input(0);
      m.scale = 1.0 / *c;
    }
  }
  const Node* mm = producer(qk, OpKind::kMatMul);
  if (mm == nullptr || !singleUse(g, qk)) return false;
  Value* q = mm->input(0);
  const Node* kt = producer(mm->input(1), OpKind::kPermute);
  if (kt == nullptr || !swapsLastTwo(kt)) return false;
  if (const Node* qs = producer(q, OpKind::kMul);
      qs != nullptr && singleUse(g, q) && m.scale == 1.0) {
    if (auto c = scalarConstant(qs->input(1))) {
      q = qs->input(0);
      m.scale = *c;
    }
  }
  m.q = q;
  m.k = kt->input(0);
  return true;
}

bool shapesFit(const Match& m) {
  const ir::DType dt = m.q->dtype();
  if (!isFloat(dt) || m.k->dtype() != dt || m.v->dtype() != dt) return false;
  const int64_t r = m.q->rank();
  if (r < 3 || m.k->rank() != r || m.v->rank() != r) return false;
  if (m.mask != nullptr && m.mask->dtype() != dt) return false;
  return true;
}

}  // namespace

bool fuseAttention(ir::Graph& graph) {
  bool changed = false;
  std::vector<Node*> candidates;
  for (const auto& n : graph.nodes())
    if (n->kind() == OpKind::kMatMul) candidates.push_back(n.get());
  for (Node* out : candidates) {
    Value* probs = out->input(0);
    const Node* sm = producer(probs, OpKind::kSoftmax);
    if (sm == nullptr || !singleUse(graph, probs)) continue;
    if (sm->attrs().getInt("dim") != probs->rank() - 1) continue;
    Match m;
    m.v = out->input(1);
    Value* s = sm->input(0);
    if (!singleUse(graph, s)) continue;
    bool ok = matchScores(graph, s, m);
    if (!ok) {
      const Node* add = producer(s, OpKind::kAdd);
      if (add == nullptr) continue;
      for (int side = 0; side < 2 && !ok; ++side) {
        Match t = m;
        if (matchScores(graph, add->input(side), t) && singleUse(graph, add->input(side))) {
          t.mask = add->input(1 - side);
          if (add->output()->shape() == add->input(side)->shape()) {  // the mask only broadcasts
            m = t;
            ok = true;
          }
        }
      }
    }
    if (!ok || !shapesFit(m) || sm->output()->dtype() != m.q->dtype()) continue;
    std::vector<Value*> ins{m.q, m.k, m.v};
    if (m.mask != nullptr) ins.push_back(m.mask);
    try {
      Node* sdpa = graph.insertBefore(out, OpKind::kSdpa, ins,
                                      ir::Attrs{{"is_causal", false}, {"scale", m.scale}});
      if (sdpa->output()->type() != out->output()->type()) {
        graph.erase(sdpa);
        continue;
      }
      graph.replaceAllUsesWith(out->output(), sdpa->output());
      changed = true;
    } catch (const UserError&) {
      // Shapes SDPA does not take (e.g. a mask that does not broadcast): leave the pattern.
    }
  }
  return changed;
}

bool additiveAttentionMasks(ir::Graph& graph) {
  // One converted mask per boolean mask and query dtype.
  std::map<std::pair<const Value*, ir::DType>, Value*> converted;
  std::vector<Node*> sdpas;
  for (const auto& n : graph.nodes())
    if (n->kind() == OpKind::kSdpa && n->inputs().size() == 4 &&
        n->input(3)->dtype() == ir::DType::kBool && isFloat(n->input(0)->dtype()) &&
        !(n->attrs().has("is_causal") && n->attrs().getBool("is_causal")))
      sdpas.push_back(n.get());
  for (Node* sdpa : sdpas) {
    Value* mask = sdpa->input(3);
    const ir::DType dtype = sdpa->input(0)->dtype();
    Value*& additive = converted[{mask, dtype}];
    if (additive == nullptr) {
      Value* keep = graph.addConstant(0.0, dtype);
      Value* drop = graph.addConstant(-std::numeric_limits<double>::infinity(), dtype);
      additive = graph
                     .insertBefore(sdpa, OpKind::kWhere, {mask, keep, drop}, {},
                                   ir::TensorType{dtype, mask->shape()})
                     ->output();
    }
    sdpa->replaceInput(3, additive);
  }
  return !sdpas.empty();
}

}  // namespace kiln::passes

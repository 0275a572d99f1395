#include "src/passes/layout_views.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "src/support/error.h"

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::TensorType;
using ir::Value;

namespace {

// The common refinement of two shapes with the same number of elements: factors, outer to inner,
// such that every dim of a and of b other than 1s is a run of consecutive factors (row-major
// reshape splits a dim into an outer and an inner part, so sizes alone decide it). nullopt when
// the shapes have none (e.g. [6] and [4, ...]) or a size is 0.
struct Refinement {
  std::vector<SymDim> factors;
  std::vector<int> ownerA;  // the dim of a each factor belongs to
  std::vector<int> ownerB;  // the dim of b
};

std::optional<Refinement> refine(const Shape& a, const Shape& b) {
  for (const Shape* s : {&a, &b})
    for (const SymDim& d : *s)
      if (d.isConstant() && d.constant() <= 0) return std::nullopt;
  Refinement r;
  int i = static_cast<int>(a.size()) - 1;
  int j = static_cast<int>(b.size()) - 1;
  auto skipOnes = [](const Shape& s, int& k) {
    while (k >= 0 && s[static_cast<size_t>(k)].isOne()) --k;
  };
  skipOnes(a, i);
  skipOnes(b, j);
  SymDim ra = i >= 0 ? a[static_cast<size_t>(i)] : SymDim(1);
  SymDim rb = j >= 0 ? b[static_cast<size_t>(j)] : SymDim(1);
  auto push = [&](const SymDim& f) {
    r.factors.push_back(f);
    r.ownerA.push_back(i);
    r.ownerB.push_back(j);
  };
  auto nextA = [&] {
    --i;
    skipOnes(a, i);
    if (i >= 0) ra = a[static_cast<size_t>(i)];
  };
  auto nextB = [&] {
    --j;
    skipOnes(b, j);
    if (j >= 0) rb = b[static_cast<size_t>(j)];
  };
  while (i >= 0 && j >= 0) {
    if (ra == rb) {
      push(ra);
      nextA();
      nextB();
    } else if (std::optional<SymDim> q = ra.divExact(rb); q && !q->isOne()) {
      push(rb);  // b's dim is the inner part of a's
      ra = *q;
      nextB();
    } else if (std::optional<SymDim> q2 = rb.divExact(ra); q2 && !q2->isOne()) {
      push(ra);
      rb = *q2;
      nextA();
    } else {
      return std::nullopt;
    }
  }
  if (i >= 0 || j >= 0) return std::nullopt;
  std::reverse(r.factors.begin(), r.factors.end());
  std::reverse(r.ownerA.begin(), r.ownerA.end());
  std::reverse(r.ownerB.begin(), r.ownerB.end());
  return r;
}

std::vector<int64_t> normalizedPerm(const Node* permute) {
  std::vector<int64_t> perm = permute->attrs().getInts("perm");
  for (int64_t& d : perm)
    if (d < 0) d += permute->input(0)->rank();
  return perm;
}

// reshape(x, shape) before `before`, or x itself when it has that shape already.
Value* reshapeTo(ir::Graph& graph, Node* before, Value* x, const Shape& shape) {
  if (x->shape() == shape) return x;
  return graph.insertBefore(before, OpKind::kReshape, {x}, {}, TensorType{x->dtype(), shape})
      ->output();
}

// permute(x, perm) before `before`, or x itself for the identity.
Value* permuteBy(ir::Graph& graph, Node* before, Value* x, const std::vector<int64_t>& perm) {
  bool identity = true;
  for (size_t k = 0; k < perm.size(); ++k) identity &= perm[k] == static_cast<int64_t>(k);
  if (identity) return x;
  return graph.insertBefore(before, OpKind::kPermute, {x}, ir::Attrs{{"perm", perm}})->output();
}

Shape sizesOf(const Refinement& r, const std::vector<int>& factors) {
  Shape s;
  for (int f : factors) s.push_back(r.factors[static_cast<size_t>(f)]);
  return s;
}

// Note [Split before merge]: r2 = reshape(permute(reshape(x))).
bool splitBeforeMerge(ir::Graph& graph, Node* r2) {
  Node* p = r2->input(0)->producer();
  if (p == nullptr || p->kind() != OpKind::kPermute) return false;
  Node* r1 = p->input(0)->producer();
  if (r1 == nullptr || r1->kind() != OpKind::kReshape) return false;
  Value* x = r1->input(0);
  std::optional<Refinement> f1 = refine(x->shape(), r1->output()->shape());
  if (!f1) return false;
  const int numFactors = static_cast<int>(f1->factors.size());
  bool merges = false;
  for (int f = 1; f < numFactors; ++f) merges |= f1->ownerB[f] == f1->ownerB[f - 1];
  if (!merges) return false;
  // The factors in permuted order: dim k of the permute is dim perm[k] of r1.
  const std::vector<int64_t> perm = normalizedPerm(p);
  std::vector<int> order;
  for (int64_t d : perm)
    for (int f = 0; f < numFactors; ++f)
      if (f1->ownerB[static_cast<size_t>(f)] == d) order.push_back(f);
  std::optional<Refinement> f2 = refine(sizesOf(*f1, order), r2->output()->shape());
  if (!f2) return false;
  // r2 may split a factor further; the split applies to it in x's order as well.
  std::vector<std::vector<SymDim>> parts(static_cast<size_t>(numFactors));
  for (size_t t = 0; t < f2->factors.size(); ++t)
    parts[static_cast<size_t>(order[static_cast<size_t>(f2->ownerA[t])])].push_back(f2->factors[t]);
  Shape split;
  std::vector<int64_t> start(static_cast<size_t>(numFactors));
  for (int f = 0; f < numFactors; ++f) {
    start[static_cast<size_t>(f)] = static_cast<int64_t>(split.size());
    for (const SymDim& d : parts[static_cast<size_t>(f)]) split.push_back(d);
  }
  std::vector<int64_t> splitPerm;
  for (int f : order)
    for (size_t k = 0; k < parts[static_cast<size_t>(f)].size(); ++k)
      splitPerm.push_back(start[static_cast<size_t>(f)] + static_cast<int64_t>(k));
  Value* v = reshapeTo(graph, r2, x, split);
  v = permuteBy(graph, r2, v, splitPerm);
  v = reshapeTo(graph, r2, v, r2->output()->shape());
  graph.replaceAllUsesWith(r2->output(), v);
  return true;
}

// The order of a's dims in memory, outermost first, as far as the IR can tell: attention's
// fused kernels write [b, s, h, d] and return the [b, h, s, d] view of it; anything else is
// taken to be laid out in its logical order.
std::vector<int> memoryOrder(const Value* a) {
  std::vector<int> order;
  for (int d = 0; d < static_cast<int>(a->rank()); ++d) order.push_back(d);
  if (a->producer() != nullptr && a->producer()->kind() == OpKind::kSdpa && a->rank() == 4)
    order = {0, 2, 1, 3};
  return order;
}

// Note [Linear rows in source order]: linear(reshape?(permute(a))).
bool linearRowsInSourceOrder(ir::Graph& graph, Node* linear) {
  Value* in = linear->input(0);
  if (in->rank() < 2) return false;
  Value* z = in;
  if (in->producer() != nullptr && in->producer()->kind() == OpKind::kReshape)
    z = in->producer()->input(0);
  Node* p = z->producer();
  if (p == nullptr || p->kind() != OpKind::kPermute) return false;
  Value* a = p->input(0);
  std::optional<Refinement> r = refine(z->shape(), in->shape());
  if (!r) return false;
  const int numFactors = static_cast<int>(r->factors.size());
  const int lastDim = static_cast<int>(in->rank()) - 1;
  const std::vector<int64_t> perm = normalizedPerm(p);
  // The factors in a's order: dim d of a is dim k of z where perm[k] == d.
  std::vector<int> sourceOrder;
  for (int64_t d = 0; d < a->rank(); ++d)
    for (size_t k = 0; k < perm.size(); ++k)
      if (perm[k] == d)
        for (int f = 0; f < numFactors; ++f)
          if (r->ownerA[static_cast<size_t>(f)] == static_cast<int>(k)) sourceOrder.push_back(f);
  std::vector<int> rowsSource, rowsNow, cols;
  for (int f : sourceOrder)
    if (r->ownerB[static_cast<size_t>(f)] != lastDim) rowsSource.push_back(f);
  for (int f = 0; f < numFactors; ++f)
    (r->ownerB[static_cast<size_t>(f)] != lastDim ? rowsNow : cols).push_back(f);
  auto positionIn = [](const std::vector<int>& list, int f) {
    return static_cast<int64_t>(std::find(list.begin(), list.end(), f) - list.begin());
  };
  if (rowsSource == rowsNow || cols.empty()) return false;
  // Only when the new input reads a in its memory order (then it is a view of a contiguous a):
  // moving a copy elsewhere, to a tensor of another size, is no gain.
  std::vector<int64_t> rank(static_cast<size_t>(a->rank()));
  const std::vector<int> order = memoryOrder(a);
  for (size_t k = 0; k < order.size(); ++k)
    rank[static_cast<size_t>(order[k])] = static_cast<int64_t>(k);
  int64_t last = -1;
  for (const std::vector<int>* part : {&rowsSource, &cols})
    for (int f : *part) {
      // Memory rank of the factor's dim of a, then its place within that dim.
      const int64_t key =
          rank[static_cast<size_t>(perm[static_cast<size_t>(r->ownerA[static_cast<size_t>(f)])])] *
              (numFactors + 1) +
          positionIn(sourceOrder, f);
      if (key < last) return false;
      last = key;
    }
  std::vector<int64_t> toRowsFirst;
  for (int f : rowsSource) toRowsFirst.push_back(positionIn(sourceOrder, f));
  for (int f : cols) toRowsFirst.push_back(positionIn(sourceOrder, f));
  Shape gemmIn = sizesOf(*r, rowsSource);
  gemmIn.push_back(in->shape().back());
  try {
    Value* x = reshapeTo(graph, linear, a, sizesOf(*r, sourceOrder));
    x = permuteBy(graph, linear, x, toRowsFirst);
    x = reshapeTo(graph, linear, x, gemmIn);
    std::vector<Value*> ins = linear->inputs();
    ins[0] = x;
    Value* y = graph.insertBefore(linear, OpKind::kLinear, ins, linear->attrs())->output();
    std::vector<int64_t> back;
    for (int f : rowsNow) back.push_back(positionIn(rowsSource, f));
    back.push_back(static_cast<int64_t>(rowsSource.size()));
    y = permuteBy(graph, linear, y, back);
    y = reshapeTo(graph, linear, y, linear->output()->shape());
    KILN_CHECK(y->type() == linear->output()->type(), "linear rows rewrite changed the type");
    graph.replaceAllUsesWith(linear->output(), y);
  } catch (const UserError&) {
    return false;  // shapes the rewritten linear does not take: nodes made are dead, left for DCE
  }
  return true;
}

}  // namespace

bool rewriteLayoutViews(ir::Graph& graph) {
  bool changed = false;
  std::vector<Node*> candidates;
  for (const auto& n : graph.nodes())
    if (n->kind() == OpKind::kReshape || n->kind() == OpKind::kLinear)
      candidates.push_back(n.get());
  for (Node* n : candidates) {
    if (n->output()->uses().empty() && !graph.isGraphOutput(n->output())) continue;  // dead
    changed |= n->kind() == OpKind::kReshape ? splitBeforeMerge(graph, n)
                                             : linearRowsInSourceOrder(graph, n);
  }
  return changed;
}

}  // namespace kiln::passes

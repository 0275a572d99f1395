#include "src/passes/split_at_cat.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::Value;

namespace {

bool isPointwise(const Node* n) {
  return n->category() == ir::OpCategory::kPointwise;
}

int64_t catDim(const Node* cat) {
  const int64_t d = cat->attrs().getInt("dim");
  return d < 0 ? d + cat->output()->rank() : d;
}

// A slice with step 1: its dim and start.
std::optional<std::pair<int64_t, int64_t>> unitSlice(const Node* n) {
  if (n->kind() != OpKind::kSlice || n->attrs().getInt("step") != 1) return std::nullopt;
  return std::pair{n->attrs().getInt("dim"), n->attrs().getInt("start")};
}

// Where operand y of a pointwise op with result shape `out` meets the result's dim d (numpy
// broadcasting aligns shapes on the right): y's dim that spans d, -1 when y broadcasts along d
// (no such dim, or size 1 where the result is larger), nullopt otherwise.
std::optional<int64_t> spanDim(const Value* y, const Shape& out, int64_t d) {
  const int64_t yd = d - (static_cast<int64_t>(out.size()) - y->rank());
  if (yd < 0) return -1;
  const SymDim& s = y->shape()[static_cast<size_t>(yd)];
  if (s == out[static_cast<size_t>(d)]) return yd;
  if (s.isOne()) return -1;
  return std::nullopt;
}

// The operands' spanning dims, or nullopt if one neither spans nor broadcasts along d.
std::optional<std::vector<int64_t>> spanDims(const Node* op, int64_t d) {
  std::vector<int64_t> dims;
  for (const Value* y : op->inputs()) {
    std::optional<int64_t> yd = spanDim(y, op->output()->shape(), d);
    if (!yd) return std::nullopt;
    dims.push_back(*yd);
  }
  return dims;
}

// y's elements [start, start + length) along its dim yd (y itself when yd < 0: it broadcasts).
Value* restrictTo(ir::Graph& g, Node* before, Value* y, int64_t yd, int64_t start,
                  const SymDim& length) {
  if (yd < 0) return y;
  ir::TensorType t = y->type();
  t.shape[static_cast<size_t>(yd)] = length;
  return g
      .insertBefore(before, OpKind::kSlice, {y},
                    {{"dim", yd}, {"start", start}, {"step", int64_t{1}}}, std::move(t))
      ->output();
}

// `op` again on the parts of its operands that make [start, start + length) of its result's dim d
// (dims: spanDims(op, d)); `keep` replaces operand `keepIndex` as it is (a cat's part).
Value* restrictOp(ir::Graph& g, Node* before, const Node* op, const std::vector<int64_t>& dims,
                  int64_t d, int64_t start, const SymDim& length, int keepIndex = -1,
                  Value* keep = nullptr) {
  std::vector<Value*> operands;
  for (size_t j = 0; j < op->inputs().size(); ++j) {
    Value* y = op->input(static_cast<int>(j));
    operands.push_back(keep != nullptr && y == op->input(keepIndex)
                           ? keep
                           : restrictTo(g, before, y, dims[j], start, length));
  }
  ir::TensorType t = op->output()->type();
  t.shape[static_cast<size_t>(d)] = length;
  return g.insertBefore(before, op->kind(), std::move(operands), op->attrs(), std::move(t))
      ->output();
}

// R1: op(cat(a_1..a_n, d), y..) -> cat(op(a_1, y[part 1]..), ..).
bool pushIntoCat(ir::Graph& g, Node* n) {
  if (!isPointwise(n)) return false;
  for (int ci = 0; ci < static_cast<int>(n->inputs().size()); ++ci) {
    Value* c = n->input(ci);
    const Node* cat = c->producer();
    if (cat->kind() != OpKind::kCat || g.isGraphOutput(c) || c->shape() != n->output()->shape())
      continue;
    if (!std::all_of(c->uses().begin(), c->uses().end(),
                     [&](const ir::Use& u) { return u.user == n; }))
      continue;
    const std::vector<Value*>& parts = cat->inputs();
    if (parts.size() < 2 || parts.size() > static_cast<size_t>(kMaxCatParts)) continue;
    const int64_t d = catDim(cat);
    // Parts of one shape, so that their results can be one kernel (Note [Cat operands in one
    // group]); otherwise each part would be a kernel of its own.
    if (!std::all_of(parts.begin(), parts.end(), [&](const Value* p) {
          return p->shape() == parts.front()->shape() &&
                 p->shape()[static_cast<size_t>(d)].isConstant();
        }))
      continue;
    const std::optional<std::vector<int64_t>> dims = spanDims(n, d);
    if (!dims) continue;
    std::vector<Value*> results;
    int64_t offset = 0;
    for (Value* part : parts) {
      const SymDim length = part->shape()[static_cast<size_t>(d)];
      results.push_back(restrictOp(g, n, n, *dims, d, offset, length, ci, part));
      offset += length.constant();
    }
    Value* joined =
        g.insertBefore(n, OpKind::kCat, std::move(results), {{"dim", d}}, n->output()->type())
            ->output();
    g.replaceAllUsesWith(n->output(), joined);
    return true;
  }
  return false;
}

// R2: slice(op(x, y..)) -> op(slice(x), slice(y)..), when op's result is read only by disjoint
// unit-step slices along one dim.
bool pullSliceThrough(ir::Graph& g, Node* s) {
  const std::optional<std::pair<int64_t, int64_t>> at = unitSlice(s);
  if (!at) return false;
  Value* p = s->input(0);
  const Node* op = p->producer();
  if (!isPointwise(op) || g.isGraphOutput(p)) return false;
  const int64_t d = at->first;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const ir::Use& u : p->uses()) {
    const std::optional<std::pair<int64_t, int64_t>> other = unitSlice(u.user);
    const SymDim& length = u.user->output()->shape()[static_cast<size_t>(d)];
    if (!other || other->first != d || !length.isConstant()) return false;
    ranges.emplace_back(other->second, other->second + length.constant());
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) return false;  // would compute twice
  const std::optional<std::vector<int64_t>> dims = spanDims(op, d);
  if (!dims) return false;
  Value* r =
      restrictOp(g, s, op, *dims, d, at->second, s->output()->shape()[static_cast<size_t>(d)]);
  g.replaceAllUsesWith(s->output(), r);
  return true;
}

// R3: slice(cat(a_1..a_n, d), d, o, l) -> a_k when [o, o + l) is exactly part k.
bool sliceOfCatPart(ir::Graph& g, Node* s) {
  const std::optional<std::pair<int64_t, int64_t>> at = unitSlice(s);
  if (!at) return false;
  const Node* cat = s->input(0)->producer();
  if (cat->kind() != OpKind::kCat || catDim(cat) != at->first) return false;
  const size_t d = static_cast<size_t>(at->first);
  int64_t offset = 0;
  for (Value* part : cat->inputs()) {
    if (offset == at->second && part->type() == s->output()->type()) {
      g.replaceAllUsesWith(s->output(), part);
      return true;
    }
    if (!part->shape()[d].isConstant()) return false;
    offset += part->shape()[d].constant();
    if (offset > at->second) return false;
  }
  return false;
}

}  // namespace

bool splitAtCat(ir::Graph& graph) {
  bool changed = false;
  for (size_t i = 0; i < graph.nodes().size(); ++i) {
    Node* n = graph.nodes()[i].get();
    if (n->outputs().size() != 1) continue;
    if (n->output()->uses().empty() && !graph.isGraphOutput(n->output())) continue;
    changed = (sliceOfCatPart(graph, n) || pullSliceThrough(graph, n) || pushIntoCat(graph, n)) ||
              changed;
  }
  return changed;
}

}  // namespace kiln::passes

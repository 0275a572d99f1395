// Lowering rules for indexing and creation ops whose operands the trace built from sizes (Note
// [Lowering table] in lower_rules.h).
//
// Note [Indexing by aranges]
// Hugging Face's attention masks (sdpa_mask in transformers 5.x: BERT, GPT-2, Llama, Mistral, ...)
// read the padding mask as mask[arange(B)[:, None, None, None], arange(S)[None, None, None, :]],
// and GPT-2's positions are wpe(arange(S)). Each became an eager aten::index or aten::embedding
// step behind two or three eager aranges. A rewrite at plan build (index_views.cpp, before these
// rules) missed the batch-1 guard family, where every index shape is all ones, and there the eager
// index cost 31-39 ms of BERT's warm first call on an H100 (bench/RESULTS.md, 2026-12-07). Neither
// reads anything the sizes do not give:
//   - x[i_0, ..., i_k] where every i_j is arange(x.size(j)) shaped so that its values vary along
//     one dim d_j of their common rank (any dim when its length is 1), the d_j distinct, is x with
//     dims 0..k permuted into the order of the d_j and reshaped to the indices' broadcast shape,
//     followed by x's unindexed dims: views (the reshape copies only a permuted x);
//   - embedding(W, i) where i is arange(s, s + n) in memory order (any shape) is W[s : s + n]
//     reshaped to i's shape + [W.size(1)], a view; s + n <= W.size(0) is a size assumption (Note
//     [Size assumptions] in capture.h), so a call past the table runs eagerly, and raises as the
//     module does.
// An index value counts as an arange when the trace made it from aten::arange, or from an integer
// param known to hold one (Note [Buffers with known contents] in capture.h), through ops that keep
// the order of its elements (unsqueeze, view/reshape, slices that keep a run of them, adding an
// int), which arangeOf() follows; and an embedding of a fill (fillOf()) is one row of the table.
// An embedding by any other ids (token ids) is an IR gather (Note [Embeddings in kernels] in
// codegen/emit_cuda.cpp); other indexing by data-dependent indices still runs in ATen, with the
// reason in explain(). The aranges the rewrite no longer reads are removed as dead code.
//
// Note [Fills]
// Tensors whose every element is one value the trace knows, of a shape the sizes give, are an
// IR kFill (no operands, attr value): in a fused kernel a literal, as a step of its own a kernel
// that writes it, and in ATen at::full on the call's device. Two kinds of traced op become one:
//   - ones/zeros/full and their new_ and _like forms, with every size known (a literal only where
//     the trace records sizes as nodes), a constant value, and a result on the inputs' device;
//   - a comparison of an arange with a number that every element answers the same way. The
//     encoders' masks in transformers 5.x (BERT, ALBERT, RoBERTa, DistilBERT, T5, ViT, ...) AND
//     the padding mask with arange(S)[:, None] >= 0, which only gives the mask its query dim; the
//     arange was the last eager step of BERT's mask at every batch. The decision uses the
//     arange's first element (a constant) and, for an upper bound, its last (a constant length);
//     a symbolic length bounds nothing from above.
// Rank-0 results keep their old forms (a bool literal, Note [Indexing by aranges]; else ATen).
//
// Note [Aranges in kernels]
// The aranges left after the rules above feed arithmetic: a decoder's causal mask compares
// arange(S)[None, :] with its cache positions arange(S)[:, None], rotary and relative positions
// are built from them. Each was an eager aten::arange (an ATen kernel, and one more kernel load
// on a first call) whose result a fused kernel then read. An integer arange(start, end[, step])
// with a constant start and a step of 1 or -1 is an IR kArange (no operands; attrs start, step,
// dim; out[i] = start + step * i[dim]). canonicalize turns views of it (unsqueeze, view, expand
// into pointwise ops, slices, permutes) and integer casts into aranges of their own (Note [Views of
// generators] in src/passes/canonicalize.cpp), so a mask's two aranges are each a few
// instructions inside the mask kernel, counting along their dims. Pointwise kernels only: the
// partitioner keeps aranges out of row kernels, where one becomes a kernel of its own. In ATen an
// arange is at::arange on the call's device. Floating aranges, a symbolic start, and other steps
// stay in ATen, with the reason in explain().
#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <string_view>
#include <vector>

#include "jit/capture/lower_rules.h"
#include "jit/capture/lowerer.h"
#include "src/ir/shape_inference.h"

namespace kiln::jit {
namespace {

namespace tj = torch::jit;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::TensorType;

// The input of `n` that its schema names `name`; null when it has no schema, no such argument, or
// the trace left it out.
const tj::Value* namedInput(const tj::Node* n, const char* name) {
  const c10::FunctionSchema* schema = n->maybeSchema();
  if (schema == nullptr) return nullptr;
  auto i = schema->argumentIndexWithName(name);
  if (!i || static_cast<size_t>(*i) >= n->inputs().size()) return nullptr;
  return n->input(static_cast<size_t>(*i));
}

// The elements of an arange in memory order: start, start + step, ..., `length` of them.
// `param`: the integer param whose known content it is read from (Note [Buffers with known
// contents] in capture.h), which a rule that uses it must assume; null for aten::arange.
struct Arange {
  SymDim start;
  int64_t step = 1;
  SymDim length;
  const tj::Value* param = nullptr;
};

std::optional<Arange> arangeNode(const Lowerer& l, const tj::Node* p) {
  if (p->maybeSchema() == nullptr) return std::nullopt;
  auto arg = [&](const char* name) { return namedInput(p, name); };
  const tj::Value* endArg = arg("end");
  if (endArg == nullptr) return std::nullopt;
  std::optional<SymDim> end = l.symIntOf(endArg);
  std::optional<SymDim> start = SymDim(0);
  if (const tj::Value* s = arg("start")) start = l.symIntOf(s);
  if (const tj::Value* s = arg("step")) {
    auto iv = l.constIValue(s);
    if (!iv || !iv->isInt() || iv->toInt() != 1) return std::nullopt;
  }
  if (!end || !start) return std::nullopt;
  return Arange{*start, 1, *end - *start};
}

// Note [Indexing by aranges]: what `v` holds when the trace made it from an arange (or an integer
// param known to hold one) through ops that keep its elements' order; nullopt otherwise.
std::optional<Arange> arangeOf(const Lowerer& l, const tj::Value* v) {
  SymDim shift(0);
  std::optional<SymDim> length;  // set by the outermost slice that drops elements
  auto finish = [&](Arange a) {
    a.start = a.start + shift;
    if (length) a.length = *length;
    return a;
  };
  for (int hops = 0; hops < 32; ++hops) {
    const tj::Node* p = v->node();
    if (p->kind() == c10::prim::Param) {
      auto c = l.paramContent(v);
      if (!c || c->kind != ContentAssumption::Kind::kArange) return std::nullopt;
      return finish(Arange{SymDim(c->first), 1, SymDim(c->numel), v});
    }
    const std::string_view kind = p->kind().toQualString();
    if (kind == "aten::arange") {
      auto a = arangeNode(l, p);
      if (!a) return std::nullopt;
      return finish(*a);
    }
    if (kind == "aten::unsqueeze" || kind == "aten::view" || kind == "aten::reshape" ||
        kind == "aten::_unsafe_view" || kind == "aten::flatten" || kind == "aten::squeeze" ||
        kind == "aten::contiguous" || kind == "aten::clone") {
      v = p->input(0);
      continue;
    }
    if (kind == "aten::slice") {
      const ir::Value* in = l.lowered(p->input(0));
      const ir::Value* out = l.lowered(p->output());
      if (in == nullptr || out == nullptr) return std::nullopt;
      if (ir::numel(in->shape()) != ir::numel(out->shape())) {
        // A run of elements: a slice with step 1 along the one dim longer than 1, from a known
        // start (transformers' position_ids[:, :seq]). It keeps the elements' order.
        int64_t dim = 0;
        try {
          dim = normDim(l.intArg(p->input(1)), in->rank());
        } catch (const NotLowerable&) {
          return std::nullopt;
        }
        for (int64_t d = 0; d < in->rank(); ++d)
          if (d != dim && !in->shape()[static_cast<size_t>(d)].isOne()) return std::nullopt;
        std::optional<SymDim> start =
            l.isNone(p->input(2)) ? std::optional<SymDim>(SymDim(0)) : l.symIntOf(p->input(2));
        auto step = l.constIValue(p->input(4));
        if (!start || (start->isConstant() && start->constant() < 0) || !step || !step->isInt() ||
            step->toInt() != 1)
          return std::nullopt;
        shift = shift + *start;
        if (!length) length = out->shape()[static_cast<size_t>(dim)];
      }
      v = p->input(0);
      continue;
    }
    if ((kind == "aten::add" || kind == "aten::add_") && p->inputs().size() == 3) {
      // arange + c (transformers' kv_arange += kv_offset), alpha 1.
      auto alpha = l.constIValue(p->input(2));
      auto c = l.symIntOf(p->input(1));
      if (!alpha || !alpha->isInt() || alpha->toInt() != 1 || !c) return std::nullopt;
      shift = shift + *c;
      v = p->input(0);
      continue;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

// Note [Buffers with known contents]: the value every element of `v` holds when the trace made it
// from an integer param known to be a fill, through views and gathers of it; nullopt otherwise.
// A gather by anything but an arange is not followed (its indices could be out of range, which
// eager raises), and one by an arange adds the size assumption that keeps them in range.
struct Fill {
  int64_t value = 0;
  std::vector<const tj::Value*> params;  // the params whose contents it relies on
  std::vector<SizeAssumption> sizes;
};

std::optional<Fill> fillOf(const Lowerer& l, const tj::Value* v) {
  Fill f;
  for (int hops = 0; hops < 32; ++hops) {
    const tj::Node* p = v->node();
    if (p->kind() == c10::prim::Param) {
      auto c = l.paramContent(v);
      if (!c || c->kind != ContentAssumption::Kind::kFill) return std::nullopt;
      f.value = c->first;
      f.params.push_back(v);
      return f;
    }
    const std::string_view kind = p->kind().toQualString();
    if (kind == "aten::expand" || kind == "aten::expand_as" || kind == "aten::slice" ||
        kind == "aten::unsqueeze" || kind == "aten::view" || kind == "aten::reshape" ||
        kind == "aten::_unsafe_view" || kind == "aten::flatten" || kind == "aten::squeeze" ||
        kind == "aten::contiguous" || kind == "aten::clone" || kind == "aten::permute") {
      v = p->input(0);
      continue;
    }
    if (kind == "aten::gather") {
      // gather(src, dim, index): index's shape, src's values; all in range for an arange index
      // from 0 or more that ends within src's dim.
      const ir::Value* src = l.lowered(p->input(0));
      std::optional<Arange> a = arangeOf(l, p->input(2));
      if (src == nullptr || !a || !a->start.isConstant() || a->start.constant() < 0)
        return std::nullopt;
      int64_t dim = 0;
      try {
        dim = normDim(l.intArg(p->input(1)), src->rank());
      } catch (const NotLowerable&) {
        return std::nullopt;
      }
      // Eager also raises where the index is longer than src in another dim: follow only what
      // is shorter by construction.
      const ir::Value* index = l.lowered(p->input(2));
      if (index == nullptr || index->rank() != src->rank()) return std::nullopt;
      for (int64_t d = 0; d < src->rank(); ++d) {
        const SymDim& i = index->shape()[static_cast<size_t>(d)];
        const SymDim& s = src->shape()[static_cast<size_t>(d)];
        if (d != dim && !i.isOne() && i != s &&
            !(i.isConstant() && s.isConstant() && i.constant() <= s.constant()))
          return std::nullopt;
      }
      f.sizes.push_back({a->start + a->length, src->shape()[static_cast<size_t>(dim)],
                         "gather: positions within the gathered dim"});
      if (a->param != nullptr) f.params.push_back(a->param);
      v = p->input(0);
      continue;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

bool integral(ir::DType d) {
  return d == ir::DType::kInt64 || d == ir::DType::kInt32;
}

// aten::index(x, [i_0, ..., i_k]) where every i_j is arange(x.size(j)): x, its indexed dims
// permuted into the order the indices place them in, reshaped.
ir::Value* indexByAranges(Lowerer& l, const tj::Node* n) {
  ir::Value* x = l.operand(n, 0);
  const tj::Node* list = n->input(1)->node();
  if (list->kind() != c10::prim::ListConstruct)
    throw NotLowerable{"indices in a list the trace did not build"};
  const auto indices = list->inputs();
  const size_t k = indices.size();
  if (k == 0 || k > static_cast<size_t>(x->rank())) throw NotLowerable{"more indices than dims"};
  Shape out;
  std::vector<int> position(k, -1);  // where index j's values vary; -1: length 1, anywhere
  std::vector<const tj::Value*> contentParams;  // Note [Buffers with known contents]
  for (size_t j = 0; j < k; ++j) {
    if (l.isNone(indices[j])) throw NotLowerable{"a full slice (None) among the indices"};
    const ir::Value* iv = l.operand(list, j);
    if (!integral(iv->dtype())) throw NotLowerable{"a boolean mask or a non-integer index"};
    auto a = arangeOf(l, indices[j]);
    if (!a) throw NotLowerable{"indices read from a tensor (advanced indexing runs in ATen)"};
    if (a->param != nullptr) contentParams.push_back(a->param);
    if (a->start != SymDim(0) || a->length != x->shape()[j])
      throw NotLowerable{"an arange index that does not span its dim from 0"};
    if (j == 0) out.assign(static_cast<size_t>(iv->rank()), SymDim(1));
    if (iv->rank() != static_cast<int64_t>(out.size()))
      throw NotLowerable{"index tensors of different ranks"};
    for (int d = 0; d < static_cast<int>(iv->rank()); ++d) {
      if (iv->shape()[static_cast<size_t>(d)].isOne()) continue;
      if (position[j] >= 0 || !out[static_cast<size_t>(d)].isOne() ||
          iv->shape()[static_cast<size_t>(d)] != a->length)
        throw NotLowerable{"arange indices that share or spread over dims"};
      position[j] = d;
      out[static_cast<size_t>(d)] = a->length;
    }
  }
  for (const tj::Value* p : contentParams) l.assumeContent(p);
  for (size_t d = k; d < static_cast<size_t>(x->rank()); ++d) out.push_back(x->shape()[d]);
  // x's dims in the order the output holds them; the unindexed ones stay last.
  std::vector<int64_t> perm(static_cast<size_t>(x->rank()));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(k),
                   [&](int64_t a, int64_t b) {
                     return position[static_cast<size_t>(a)] < position[static_cast<size_t>(b)];
                   });
  if (!std::is_sorted(perm.begin(), perm.end()))
    x = l.emit(OpKind::kPermute, {x}, {{"perm", perm}});
  return l.reshape(x, std::move(out));
}

// Note [Embeddings in kernels] in codegen/emit_cuda.cpp: W's rows picked by ids read from a
// tensor (token ids), as an IR kEmbedding of the ids reshaped to end in a dim of 1 (a view).
ir::Value* gatherRows(Lowerer& l, ir::Value* w, ir::Value* idx) {
  if (w->rank() != 2) throw NotLowerable{"an embedding table that is not 2-d"};
  if (!integral(idx->dtype())) throw NotLowerable{"indices that are not integers"};
  if (idx->rank() == 0) throw NotLowerable{"one row picked by a 0-d index (runs in ATen)"};
  Shape shape = idx->shape();
  shape.push_back(SymDim(1));
  return l.emit(OpKind::kEmbedding, {w, l.reshape(idx, std::move(shape))});
}

// aten::embedding(W, arange(s, s + n)): rows s to s + n of W, a view. aten::embedding(W, a fill
// of c): row c of W, expanded to the indices' shape (Note [Buffers with known contents]). Other
// ids: gatherRows.
ir::Value* embeddingRule(Lowerer& l, const tj::Node* n) {
  ir::Value* w = l.operand(n, 0);
  ir::Value* idx = l.operand(n, 1);
  if (w->rank() != 2) throw NotLowerable{"an embedding table that is not 2-d"};
  if (!integral(idx->dtype())) throw NotLowerable{"indices that are not integers"};
  Shape shape = idx->shape();
  shape.push_back(w->shape()[1]);
  if (std::optional<Fill> f = fillOf(l, n->input(1))) {
    if (!w->shape()[0].isConstant() || f->value < 0 || f->value >= w->shape()[0].constant())
      throw NotLowerable{"a row index outside the table (runs in ATen, which raises)"};
    for (const tj::Value* p : f->params) l.assumeContent(p);
    for (SizeAssumption& a : f->sizes) l.assume(a.lhs, a.rhs, std::move(a.what));
    ir::Value* row = l.slice(w, 0, f->value, 1, SymDim(1));
    Shape ones(shape.size(), SymDim(1));
    ones.back() = w->shape()[1];
    row = l.reshape(row, ones);
    if (ones == shape) return row;
    return l.emitTyped(OpKind::kExpand, {row}, {}, TensorType{w->dtype(), shape});
  }
  auto a = arangeOf(l, n->input(1));
  if (!a || !a->start.isConstant() || a->start.constant() < 0) return gatherRows(l, w, idx);
  const int64_t start = a->start.constant();
  if (a->param != nullptr) l.assumeContent(a->param);
  l.assume(a->start + a->length, w->shape()[0], "embedding: positions within the table");
  return l.reshape(l.slice(w, 0, start, 1, a->length), std::move(shape));
}

// index_select(W, 0, ids) of a 2-d W and 1-d ids (an embedding written by hand): gatherRows.
ir::Value* indexSelectRows(Lowerer& l, const tj::Node* n) {
  ir::Value* w = l.operand(n, 0);
  auto dim = l.constIValue(n->input(1));
  if (w->rank() != 2 || !dim || !dim->isInt() || (dim->toInt() != 0 && dim->toInt() != -2))
    throw NotLowerable{"index_select of a table that is not 2-d, or along its columns"};
  ir::Value* idx = l.operand(n, 2);
  if (idx->rank() != 1) throw NotLowerable{"index_select by an index that is not 1-d"};
  return gatherRows(l, w, idx);
}

// new_ones/new_zeros/ones/zeros of size [] and dtype bool (transformers' mask functions start
// from torch.ones((), dtype=torch.bool)): a literal. Other dtypes keep the 0-dim tensor's own
// type promotion, which a literal would not (Note [Constants are Python scalars] in aten_eval.h).
LoweringRule boolScalar(double value) {
  return [value](Lowerer& l, const tj::Node* n) -> ir::Value* {
    const tj::Value* out = n->outputs()[0];
    if (!l.tracedSizes(out).empty() || l.tracedDType(out) != ir::DType::kBool) return nullptr;
    const tj::Value* size = namedInput(n, "size");
    if (size == nullptr || !l.symIntsArg(size).empty()) return nullptr;
    return l.graph().addConstant(value, ir::DType::kBool);
  };
}

// Note [Fills]: ones/zeros/full(size, v) and new_ones/new_zeros/new_full(x, size, v) with every
// size known, ones_like/zeros_like/full_like(x, v) of any x: a kFill of the traced dtype.
// `value`: the fill, or nullopt for the schema's fill_value argument.
LoweringRule fillOp(std::optional<double> value, bool like) {
  return [value, like](Lowerer& l, const tj::Node* n) -> ir::Value* {
    const tj::Value* out = n->outputs()[0];
    const size_t rank = l.tracedSizes(out).size();
    if (rank == 0) {  // rank 0: a bool literal or ATen, as before
      if (!value) return nullptr;
      return boolScalar(*value)(l, n);
    }
    if (n->maybeSchema() == nullptr) return nullptr;
    auto arg = [&](const char* name) { return namedInput(n, name); };
    if (const tj::Value* layout = arg("layout"); layout != nullptr && !l.isNone(layout)) {
      auto iv = l.constIValue(layout);
      if (!iv || !iv->isInt() || static_cast<c10::Layout>(iv->toInt()) != c10::kStrided)
        throw NotLowerable{"a layout other than strided"};
    }
    if (!l.onInputsDevice(out)) throw NotLowerable{"a result on another device than the inputs"};
    double v = 0;
    if (value) {
      v = *value;
    } else {
      const tj::Value* f = arg("fill_value");
      auto iv = f != nullptr ? l.constIValue(f) : std::nullopt;
      if (!iv || !(iv->isInt() || iv->isDouble() || iv->isBool()))
        throw NotLowerable{"a fill value the trace does not know"};
      v = iv->isInt()
              ? static_cast<double>(iv->toInt())
              : (iv->isBool() ? (iv->toBool() ? 1.0 : 0.0) : l.retypedNumber(iv->toDouble()));
    }
    Shape shape;
    if (like) {
      shape = l.operand(n, 0)->shape();
    } else {
      const tj::Value* size = arg("size");
      if (size == nullptr) return nullptr;
      for (const std::optional<SymDim>& d : l.symIntsArg(size)) {
        if (!d) throw NotLowerable{"a size the trace may have baked in"};
        shape.push_back(*d);
      }
    }
    if (shape.size() != rank) throw NotLowerable{"a size list of another rank than the result"};
    const ir::DType dtype = l.tracedDType(out);
    return l.emitTyped(OpKind::kFill, {}, {{"value", v}}, TensorType{dtype, shape});
  };
}

// Note [Aranges in kernels]: an integer arange with a constant start and a step of 1 or -1.
ir::Value* arangeOp(Lowerer& l, const tj::Node* n) {
  const tj::Value* out = n->outputs()[0];
  const ir::DType dtype = l.tracedDType(out);
  if (!integral(dtype)) throw NotLowerable{"a floating-point arange (runs in ATen)"};
  if (!l.onInputsDevice(out)) throw NotLowerable{"a result on another device than the inputs"};
  if (n->maybeSchema() == nullptr) return nullptr;
  auto arg = [&](const char* name) { return namedInput(n, name); };
  const tj::Value* endArg = arg("end");
  if (endArg == nullptr) return nullptr;
  const std::optional<SymDim> end = l.symIntOf(endArg);
  std::optional<SymDim> start = SymDim(0);
  if (const tj::Value* s = arg("start")) start = l.symIntOf(s);
  int64_t step = 1;
  if (const tj::Value* s = arg("step")) {
    auto iv = l.constIValue(s);
    if (!iv || !iv->isInt() || (iv->toInt() != 1 && iv->toInt() != -1))
      throw NotLowerable{"an arange step other than 1 or -1"};
    step = iv->toInt();
  }
  if (!end || !start) throw NotLowerable{"an arange bound the trace does not know"};
  if (!start->isConstant()) throw NotLowerable{"an arange from a symbolic start"};
  const SymDim length = step == 1 ? *end - *start : *start - *end;
  return l.emitTyped(OpKind::kArange, {},
                     {{"start", start->constant()}, {"step", step}, {"dim", int64_t{0}}},
                     TensorType{dtype, {length}});
}

}  // namespace

// Note [Fills]: x op c, or c op x, where x is an arange and every element gives the same answer;
// nullptr when it is not decided.
ir::Value* comparisonOfArange(Lowerer& l, const tj::Node* n, OpKind kind) {
  if (n->inputs().size() != 2) return nullptr;
  bool flipped = false;
  std::optional<Arange> a = arangeOf(l, n->input(0));
  const tj::Value* other = n->input(1);
  if (!a) {
    a = arangeOf(l, n->input(1));
    other = n->input(0);
    flipped = true;
  }
  if (!a || !a->start.isConstant()) return nullptr;
  std::optional<double> c;
  if (auto iv = l.constIValue(other); iv && (iv->isInt() || iv->isDouble())) {
    c = iv->isInt() ? static_cast<double>(iv->toInt()) : iv->toDouble();
  } else if (auto s = l.symIntOf(other); s && s->isConstant()) {
    c = static_cast<double>(s->constant());
  }
  if (!c) return nullptr;
  if (flipped) {  // c op x is x op' c
    switch (kind) {
      case OpKind::kLt:
        kind = OpKind::kGt;
        break;
      case OpKind::kLe:
        kind = OpKind::kGe;
        break;
      case OpKind::kGt:
        kind = OpKind::kLt;
        break;
      case OpKind::kGe:
        kind = OpKind::kLe;
        break;
      default:
        break;
    }
  }
  const auto lo = static_cast<double>(a->start.constant());
  std::optional<double> hi;  // the last element, when the length is known
  if (a->length.isConstant()) hi = lo + static_cast<double>(a->length.constant() - 1);
  const bool whole = std::floor(*c) == *c;
  std::optional<bool> all;
  switch (kind) {
    case OpKind::kGe:
      if (lo >= *c)
        all = true;
      else if (hi && *hi < *c)
        all = false;
      break;
    case OpKind::kGt:
      if (lo > *c)
        all = true;
      else if (hi && *hi <= *c)
        all = false;
      break;
    case OpKind::kLe:
      if (hi && *hi <= *c)
        all = true;
      else if (lo > *c)
        all = false;
      break;
    case OpKind::kLt:
      if (hi && *hi < *c)
        all = true;
      else if (lo >= *c)
        all = false;
      break;
    case OpKind::kEq:
    case OpKind::kNe:
      if (!whole || *c < lo || (hi && *c > *hi)) all = kind == OpKind::kNe;
      break;
    default:
      break;
  }
  if (!all) return nullptr;
  if (a->param != nullptr) l.assumeContent(a->param);
  const TensorType type = ir::inferType(kind, {l.operand(n, 0), l.operand(n, 1)}, {});
  return l.emitTyped(OpKind::kFill, {}, {{"value", *all ? 1.0 : 0.0}}, type);
}

void addIndexingRules(LoweringTable& table) {
  table.add("aten::index", indexByAranges);
  table.add("aten::embedding", embeddingRule);
  table.add("aten::arange", arangeOp);
  table.add("aten::index_select", indexSelectRows);
  table.add("aten::ones", fillOp(1.0, /*like=*/false));
  table.add("aten::zeros", fillOp(0.0, /*like=*/false));
  table.add("aten::full", fillOp(std::nullopt, /*like=*/false));
  table.add("aten::new_ones", fillOp(1.0, /*like=*/false));
  table.add("aten::new_zeros", fillOp(0.0, /*like=*/false));
  table.add("aten::new_full", fillOp(std::nullopt, /*like=*/false));
  table.add("aten::ones_like", fillOp(1.0, /*like=*/true));
  table.add("aten::zeros_like", fillOp(0.0, /*like=*/true));
  table.add("aten::full_like", fillOp(std::nullopt, /*like=*/true));
}

}  // namespace kiln::jit

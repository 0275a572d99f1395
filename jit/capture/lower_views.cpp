// Lowering rules for views and data movement (Note [Lowering table] in lower_rules.h).
#include <algorithm>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "jit/capture/lower_rules.h"
#include "jit/capture/lowerer.h"
#include "jit/capture/sym_resolve.h"

namespace kiln::jit {
namespace {

namespace tj = torch::jit;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::TensorType;

// _unsafe_view, flatten, unflatten, squeeze, unsqueeze: the traced output's sizes, over the
// graph's symbols.
ir::Value* reshape(Lowerer& l, const tj::Node* n) {
  return l.reshapeTo(l.operand(n, 0), n->outputs()[0]);
}

// view/reshape(x, sizes): sizes the graph computed (aten::size) pin their dims.
ir::Value* viewSizes(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  std::vector<std::optional<SymDim>> known;
  if (in.size() == 2) {
    try {
      known = l.symIntsArg(in[1]);
    } catch (const NotLowerable&) {
      known.clear();
    }
  }
  return l.reshapeTo(l.operand(n, 0), n->outputs()[0], known);
}

// view_as/reshape_as(x, other): other's shape, when it is lowered and has x's size.
ir::Value* viewAs(Lowerer& l, const tj::Node* n) {
  if (const ir::Value* other = l.lowered(n->inputs()[1])) {
    ir::Value* x = l.operand(n, 0);
    const Shape& target = other->shape();
    if (ir::numel(target) == ir::numel(x->shape())) return l.reshape(x, target);
  }
  return l.reshapeTo(l.operand(n, 0), n->outputs()[0]);
}

ir::Value* permute(Lowerer& l, const tj::Node* n) {
  ir::Value* x = l.operand(n, 0);
  auto perm = l.intsArg(n->inputs()[1]);
  for (int64_t& p : perm) p = normDim(p, x->rank());
  bool identity = true;
  for (size_t i = 0; i < perm.size(); ++i)
    identity = identity && perm[i] == static_cast<int64_t>(i);
  if (identity) return x;
  return l.emit(OpKind::kPermute, {x}, {{"perm", perm}});
}

// transpose/swapaxes(x, a, b), and t(x) (`matrix`): dims 0 and 1, the input itself below rank 2.
LoweringRule transpose(bool matrix) {
  return [matrix](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    ir::Value* x = l.operand(n, 0);
    int64_t rank = x->rank();
    if (matrix && rank < 2) return x;
    int64_t a = matrix ? 0 : normDim(l.intArg(in[1]), rank);
    int64_t b = matrix ? 1 : normDim(l.intArg(in[2]), rank);
    if (a == b) return x;
    std::vector<int64_t> perm(static_cast<size_t>(rank));
    for (int64_t i = 0; i < rank; ++i) perm[static_cast<size_t>(i)] = i;
    std::swap(perm[static_cast<size_t>(a)], perm[static_cast<size_t>(b)]);
    return l.emit(OpKind::kPermute, {x}, {{"perm", perm}});
  };
}

// expand/broadcast_to(x, sizes), and expand_as(x, other) (`asTensor`).
LoweringRule expand(bool asTensor) {
  return [asTensor](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    const tj::Value* out = n->outputs()[0];
    ir::Value* x = l.operand(n, 0);
    Shape target;
    std::vector<std::optional<SymDim>> known;
    if (!asTensor) {
      try {
        known = l.symIntsArg(in[1]);
      } catch (const NotLowerable&) {
        known.clear();
      }
    }
    const ir::Value* other = asTensor ? l.lowered(in[1]) : nullptr;
    if (other != nullptr) {
      target = other->shape();
    } else if (!known.empty() && known.size() >= static_cast<size_t>(x->rank())) {
      // Sizes the graph computed or wrote as constants; -1 keeps the input's dim, and a literal
      // the C++ tracer recorded is matched against the symbols seen (resolveExpand).
      bool ambiguous = false;
      Shape guess = resolveExpand(x->shape(), l.tracedSizes(out), l.ctx(), &ambiguous);
      const size_t offset = known.size() - static_cast<size_t>(x->rank());
      for (size_t j = 0; j < known.size(); ++j) {
        if (known[j]) {
          target.push_back(*known[j]);
        } else if (j >= offset && l.ctx().eval(x->shape()[j - offset]) == l.tracedSizes(out)[j]) {
          target.push_back(x->shape()[j - offset]);  // -1, or the input's own size
        } else {
          target.push_back(guess[j]);
        }
      }
    } else {
      bool ambiguous = false;
      target = resolveExpand(x->shape(), l.tracedSizes(out), l.ctx(), &ambiguous);
    }
    if (target == x->shape()) return x;
    return l.emitTyped(OpKind::kExpand, {x}, {}, TensorType{x->dtype(), target});
  };
}

// The dim that slice, narrow and select index (their arguments 0 and 1).
struct IndexedDim {
  ir::Value* x;
  int64_t dim;
  SymDim size;
  int64_t sizeVal;  // in the example
};

IndexedDim indexedDim(Lowerer& l, const tj::Node* n) {
  ir::Value* x = l.operand(n, 0);
  int64_t dim = normDim(l.intArg(n->inputs()[1]), x->rank());
  const SymDim size = x->shape()[static_cast<size_t>(dim)];
  return IndexedDim{x, dim, size, l.ctx().eval(size)};
}

ir::Value* select(Lowerer& l, const tj::Node* n) {
  auto [x, dim, size, sizeVal] = indexedDim(l, n);
  int64_t start = l.intArg(n->inputs()[2]);
  if (start < 0) {
    if (!size.isConstant()) throw NotLowerable{"negative index into a symbolic dim"};
    start += sizeVal;
  }
  ir::Value* s = l.slice(x, dim, start, 1, SymDim(1));
  return l.reshapeTo(s, n->outputs()[0]);
}

ir::Value* narrow(Lowerer& l, const tj::Node* n) {
  auto [x, dim, size, sizeVal] = indexedDim(l, n);
  int64_t start = l.intArg(n->inputs()[2]);
  if (start < 0) throw NotLowerable{"narrow with negative start"};
  return l.slice(x, dim, start, 1, SymDim(l.intArg(n->inputs()[3])));
}

// slice(x, dim, start, end, step).
ir::Value* sliceRule(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  auto [x, dim, size, sizeVal] = indexedDim(l, n);
  int64_t start = l.isNone(in[2]) ? 0 : l.intArg(in[2]);
  // An end computed from sizes (x[:, :seq]) is symbolic (Note [Run-time scalars] in lower.h).
  std::optional<SymDim> endSym;
  if (auto s = l.sizeInt(in[3]); s && !s->isConstant()) endSym = *s;
  const int64_t end = l.isNone(in[3]) || endSym ? std::numeric_limits<int64_t>::max()  // to the end
                                                : l.intArg(in[3]);
  int64_t step = l.intArg(in[4]);
  if (endSym) {
    if (step != 1) throw NotLowerable{"slice with step != 1"};
    if (start < 0) throw NotLowerable{"negative start with a symbolic end"};
    if (*endSym == size) return l.slice(x, dim, start, 1, size - SymDim(start));
    // Eager clamps an end past the size; kiln's slice does not, so the plan assumes it
    // (Note [Size assumptions] in capture.h).
    if (l.ctx().eval(*endSym) > sizeVal || l.ctx().eval(*endSym) < start)
      throw NotLowerable{"slice end outside the dim in the example"};
    l.assume(*endSym, size,
             fmt::format("slice end {} <= size {} of dim {} in {}", endSym->toString(),
                         size.toString(), dim, traced(n)));
    l.assume(SymDim(start), *endSym,
             fmt::format("slice start {} <= end {} in {}", start, endSym->toString(), traced(n)));
    return l.slice(x, dim, start, 1, *endSym - SymDim(start));
  }
  if (step < 1) throw NotLowerable{"slice with step < 1"};
  if (step != 1) {
    // x[..., ::2] (GPT-J's rotary pairs, Swin's patch merging): the length needs a rounding
    // division, which symbolic sizes do not have.
    if (!size.isConstant()) throw NotLowerable{"a strided slice of a dim whose size varies"};
    const int64_t from = std::clamp<int64_t>(start < 0 ? start + sizeVal : start, 0, sizeVal);
    const int64_t to = std::clamp<int64_t>(end < 0 ? end + sizeVal : end, 0, sizeVal);
    if (to <= from) throw NotLowerable{"an empty strided slice"};
    return l.slice(x, dim, from, step, SymDim((to - from + step - 1) / step));
  }
  if (start < 0) {
    if (!size.isConstant()) throw NotLowerable{"negative start on a symbolic dim"};
    start = std::max<int64_t>(start + sizeVal, 0);
  }
  start = std::min(start, sizeVal);
  SymDim length(0);
  if (end >= sizeVal) {
    length = size - SymDim(start);  // to the end (also a literal equal to the size)
  } else if (end < 0) {
    length = size + SymDim(end) - SymDim(start);
  } else if (size.isConstant()) {
    // x[:T] of a static buffer, T a dynamic size (Note [Symbolic dims in captured graphs]).
    auto m = l.ctx().matchLiteral(end);
    length = m ? *m - SymDim(start) : SymDim(end - start);
  } else {
    length = SymDim(end - start);
  }
  return l.slice(x, dim, start, step, length);
}

// x.T (numpy_T): every dim reversed.
ir::Value* reversedDims(Lowerer& l, const tj::Node* n) {
  ir::Value* x = l.operand(n, 0);
  if (x->rank() < 2) return x;
  std::vector<int64_t> perm(static_cast<size_t>(x->rank()));
  for (int64_t i = 0; i < x->rank(); ++i) perm[static_cast<size_t>(i)] = x->rank() - 1 - i;
  return l.emit(OpKind::kPermute, {x}, {{"perm", perm}});
}

// roll(x, shifts, dims) over static dims (Swin's shifted windows): per dim, the last `shift`
// elements, then the others, as one cat of two slices.
ir::Value* roll(Lowerer& l, const tj::Node* n) {
  ir::Value* x = l.operand(n, 0);
  const std::vector<int64_t> shifts = l.intsArg(n->inputs()[1]);
  const std::vector<int64_t> dims = l.intsArg(n->inputs()[2]);
  if (dims.empty() || dims.size() != shifts.size())
    throw NotLowerable{"roll of the flattened tensor"};
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = normDim(dims[i], x->rank());
    const SymDim& size = x->shape()[static_cast<size_t>(d)];
    if (!size.isConstant()) throw NotLowerable{"roll along a dim whose size varies"};
    const int64_t len = size.constant();
    if (len == 0) continue;
    const int64_t s = ((shifts[i] % len) + len) % len;
    if (s == 0) continue;
    ir::Value* tail = l.slice(x, d, len - s, 1, SymDim(s));
    ir::Value* head = l.slice(x, d, 0, 1, SymDim(len - s));
    x = l.emit(OpKind::kCat, {tail, head}, {{"dim", d}});
  }
  return x;
}

// x with a dim of size 1 inserted at `dim` (0..rank).
ir::Value* unsqueezed(Lowerer& l, ir::Value* x, int64_t dim) {
  Shape shape = x->shape();
  shape.insert(shape.begin() + dim, SymDim(1));
  return l.reshape(x, std::move(shape));
}

// stack(tensors, dim) (GPT-J's rotate_every_two): each unsqueezed at dim, then one cat.
ir::Value* stack(Lowerer& l, const tj::Node* n) {
  const tj::Node* list = n->inputs()[0]->node();
  if (list->kind() != c10::prim::ListConstruct) throw NotLowerable{"stack of a non-literal list"};
  std::vector<ir::Value*> parts;
  for (const tj::Value* v : list->inputs()) parts.push_back(l.tensor(v));
  if (parts.empty()) throw NotLowerable{"stack of no tensors"};
  const int64_t dim = normDim(l.intArg(n->inputs()[1]), parts[0]->rank() + 1);
  const Shape shape = parts[0]->shape();
  for (const ir::Value* p : parts)
    if (p->shape() != shape) throw NotLowerable{"stack of tensors of other shapes"};
  for (ir::Value*& p : parts) p = unsqueezed(l, p, dim);
  if (parts.size() == 1) return parts[0];
  return l.emit(OpKind::kCat, std::move(parts), {{"dim", dim}});
}

// x repeated `times` along a new dim inserted at `at` (an expand), then that dim merged into
// dim `at` of the result: the copies follow each other (repeat) when `at` comes before the
// repeated dim, each element is repeated in place (repeat_interleave) when after.
ir::Value* repeatInto(Lowerer& l, ir::Value* x, int64_t at, int64_t times, int64_t merged) {
  ir::Value* u = unsqueezed(l, x, at);
  Shape wide = u->shape();
  wide[static_cast<size_t>(at)] = SymDim(times);
  ir::Value* e = l.emitTyped(OpKind::kExpand, {u}, {}, TensorType{x->dtype(), wide});
  Shape out = x->shape();
  out[static_cast<size_t>(merged)] = out[static_cast<size_t>(merged)] * SymDim(times);
  return l.reshape(e, std::move(out));
}

// repeat_interleave(x, repeats: int, dim) (GPT-J's rotary sin/cos): each element `repeats` times.
ir::Value* repeatInterleave(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  if (in.size() < 3 || isTensorValue(in[1])) throw NotLowerable{"repeat counts read from a tensor"};
  if (l.isNone(in[2])) throw NotLowerable{"repeat_interleave of the flattened tensor"};
  ir::Value* x = l.operand(n, 0);
  const int64_t dim = normDim(l.intArg(in[2]), x->rank());
  const int64_t times = l.intArg(in[1]);
  if (times < 1) throw NotLowerable{"repeat_interleave with fewer than one repeat"};
  if (times == 1) return x;
  return repeatInto(l, x, dim + 1, times, dim);
}

// repeat(x, sizes): x tiled `sizes[i]` times along dim i (leading sizes add dims).
ir::Value* repeat(Lowerer& l, const tj::Node* n) {
  ir::Value* x = l.operand(n, 0);
  const std::vector<int64_t> times = l.intsArg(n->inputs()[1]);
  if (times.size() < static_cast<size_t>(x->rank()))
    throw NotLowerable{"repeat with fewer sizes than dims"};
  for (int64_t t : times)
    if (t < 1) throw NotLowerable{"repeat with a size below 1"};
  while (static_cast<size_t>(x->rank()) < times.size()) x = unsqueezed(l, x, 0);
  for (size_t d = 0; d < times.size(); ++d)
    if (times[d] != 1)
      x = repeatInto(l, x, static_cast<int64_t>(d), times[d], static_cast<int64_t>(d));
  return x;
}

// pad(x, pads, "constant"[, value]) and constant_pad_nd(x, pads, value): with every pad 0
// (torchvision Swin pads its windows by (w - W % w) % w, 0 at 224x224) x itself; else, per padded
// dim, a cat of x between fills of the value (Note [Fills] in lower_indexing.cpp; MobileBERT pads
// its shifted embeddings by one row of zeros). Negative pads (crops) run in ATen.
ir::Value* constantPad(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  const bool isPad = n->kind().toQualString() == std::string_view("aten::pad");
  if (isPad && in.size() > 2 && !l.isNone(in[2])) {
    auto mode = l.constIValue(in[2]);
    if (!mode || !mode->isString() || mode->toStringRef() != "constant")
      throw NotLowerable{"a reflect, replicate or circular pad"};
  }
  const std::vector<int64_t> pads = l.intsArg(in[1]);
  ir::Value* x = l.operand(n, 0);
  if (std::all_of(pads.begin(), pads.end(), [](int64_t p) { return p == 0; })) return x;
  if (pads.size() % 2 != 0 || pads.size() / 2 > static_cast<size_t>(x->rank()))
    throw NotLowerable{"a pad list that is not pairs of the last dims"};
  if (std::any_of(pads.begin(), pads.end(), [](int64_t p) { return p < 0; }))
    throw NotLowerable{"a negative pad (a crop)"};
  double value = 0;
  const size_t valueArg =
      3 - (isPad ? 0 : 1);  // pad(x, pads, mode, value), constant_pad_nd(x, pads, value)
  if (in.size() > valueArg && !l.isNone(in[valueArg])) {
    auto iv = l.constIValue(in[valueArg]);
    if (!iv || !(iv->isInt() || iv->isDouble()))
      throw NotLowerable{"a pad value the trace does not know"};
    value = iv->isInt() ? static_cast<double>(iv->toInt()) : l.retypedNumber(iv->toDouble());
  }
  for (size_t k = 0; k < pads.size() / 2; ++k) {
    const int64_t dim = x->rank() - 1 - static_cast<int64_t>(k);
    std::vector<ir::Value*> parts;
    auto fill = [&](int64_t width) {
      ir::Shape shape = x->shape();
      shape[static_cast<size_t>(dim)] = SymDim(width);
      parts.push_back(l.emitTyped(OpKind::kFill, {}, {{"value", value}}, {x->dtype(), shape}));
    };
    if (pads[2 * k] > 0) fill(pads[2 * k]);
    parts.push_back(x);
    if (pads[2 * k + 1] > 0) fill(pads[2 * k + 1]);
    if (parts.size() > 1) x = l.emit(OpKind::kCat, std::move(parts), {{"dim", dim}});
  }
  return x;
}

ir::Value* cat(Lowerer& l, const tj::Node* n) {
  const tj::Node* list = n->inputs()[0]->node();
  if (list->kind() != c10::prim::ListConstruct) throw NotLowerable{"cat of a non-literal list"};
  std::vector<ir::Value*> parts;
  for (const tj::Value* v : list->inputs()) {
    ir::Value* part = l.tensor(v);
    // ATen skips 1-d empty operands of any dim (legacy behaviour): HF's DynamicCache starts as
    // torch.tensor([]) and is concatenated with [b, h, s, d] keys along dim -2.
    if (part->rank() == 1 && part->shape()[0].isConstant() && part->shape()[0].constant() == 0)
      continue;
    parts.push_back(part);
  }
  if (parts.empty()) throw NotLowerable{"empty cat"};
  int64_t dim = normDim(l.intArg(n->inputs()[1]), parts[0]->rank());
  if (parts.size() == 1) return parts[0];
  return l.emit(OpKind::kCat, std::move(parts), {{"dim", dim}});
}

// Ops with a tensor-list output unpacked by the trace (chunk/split, and unbind, whose pieces
// lose the dim): one slice each, sized as the trace's pieces.
MultiLoweringRule split(bool unbind) {
  return [unbind](Lowerer& l, const tj::Node* n) {
    if (n->outputs().size() != 1 || n->output()->uses().size() != 1) return false;
    const tj::Node* unpack = n->output()->uses()[0].user;
    if (unpack->kind() != c10::prim::ListUnpack) return false;
    ir::Value* x = l.tensor(n->input(0));
    int64_t dim = normDim(l.intArg(n->input(unbind ? 1 : 2)), x->rank());
    const SymDim size = x->shape()[static_cast<size_t>(dim)];
    if (!size.isConstant()) throw NotLowerable{"split along a symbolic dim"};
    int64_t start = 0;
    std::vector<std::pair<const tj::Value*, ir::Value*>> results;
    for (const tj::Value* o : unpack->outputs()) {
      std::vector<int64_t> sizes = l.tracedSizes(o);
      if (unbind) {
        ir::Value* s = l.slice(x, dim, start, 1, SymDim(1));
        results.emplace_back(o, l.reshapeTo(s, o));
        start += 1;
      } else {
        int64_t len = sizes.at(static_cast<size_t>(dim));
        results.emplace_back(o, l.slice(x, dim, start, 1, SymDim(len)));
        start += len;
      }
    }
    for (auto& [o, v] : results) l.bind(o, v);
    return true;
  };
}

}  // namespace

void addViewRules(LoweringTable& table) {
  for (const char* name : {"aten::_unsafe_view", "aten::flatten", "aten::unflatten",
                           "aten::squeeze", "aten::unsqueeze"})
    table.add(name, reshape);
  table.add("aten::view", viewSizes);
  table.add("aten::reshape", viewSizes);
  table.add("aten::view_as", viewAs);
  table.add("aten::reshape_as", viewAs);
  table.add("aten::permute", permute);
  table.add("aten::transpose", transpose(/*matrix=*/false));
  table.add("aten::swapaxes", transpose(/*matrix=*/false));
  table.add("aten::t", transpose(/*matrix=*/true));
  table.add("aten::numpy_T", reversedDims);
  table.add("aten::roll", roll);
  table.add("aten::stack", stack);
  table.add("aten::pad", constantPad);
  table.add("aten::constant_pad_nd", constantPad);
  table.add("aten::repeat", repeat);
  table.add("aten::repeat_interleave", repeatInterleave);
  table.add("aten::expand", expand(/*asTensor=*/false));
  table.add("aten::broadcast_to", expand(/*asTensor=*/false));
  table.add("aten::expand_as", expand(/*asTensor=*/true));
  table.add("aten::select", select);
  table.add("aten::narrow", narrow);
  table.add("aten::slice", sliceRule);
  for (const char* name : {"aten::cat", "aten::concat", "aten::concatenate"}) table.add(name, cat);
  for (const char* name : {"aten::chunk", "aten::split", "aten::split_with_sizes",
                           "aten::unsafe_chunk", "aten::unsafe_split"})
    table.addMulti(name, split(/*unbind=*/false));
  table.addMulti("aten::unbind", split(/*unbind=*/true));
}

}  // namespace kiln::jit

// Lowering rules for ops kiln runs as library calls: GEMMs, attention, convolution; and eval
// batch_norm, decomposed (Note [Lowering table] in lower_rules.h).
#include <algorithm>
#include <cctype>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "jit/capture/lower_rules.h"
#include "jit/capture/lowerer.h"

namespace kiln::jit {
namespace {

namespace tj = torch::jit;
using ir::Attrs;
using ir::DType;
using ir::OpKind;
using ir::Shape;
using ir::TensorType;

ir::Value* linear(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  std::vector<ir::Value*> ops{l.operand(n, 0), l.operand(n, 1)};
  if (in.size() >= 3 && !l.isNone(in[2])) ops.push_back(l.operand(n, 2));
  return l.emit(OpKind::kLinear, std::move(ops));
}

ir::Value* matmul(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  if (in[1]->node()->kind() == c10::aten::t && l.tensor(in[1]->node()->input(0))->rank() == 2 &&
      l.operand(n, 0)->rank() >= 2) {
    // Note [Linear from addmm], for inputs of rank > 2 (x @ w.t(); the bias add stays an add).
    return l.emit(OpKind::kLinear, {l.operand(n, 0), l.tensor(in[1]->node()->input(0))});
  }
  return l.emit(OpKind::kMatMul, {l.operand(n, 0), l.operand(n, 1)});
}

ir::Value* mm(Lowerer& l, const tj::Node* n) {
  return l.emit(OpKind::kMatMul, {l.operand(n, 0), l.operand(n, 1)});
}

ir::Value* bmm(Lowerer& l, const tj::Node* n) {
  return l.emit(OpKind::kBmm, {l.operand(n, 0), l.operand(n, 1)});
}

// addmm/baddbmm(input, a, b, beta, alpha).
ir::Value* addmmLike(Lowerer& l, const tj::Node* n, OpKind kind) {
  const auto in = n->inputs();
  const size_t nin = in.size();
  return l.emit(kind, {l.operand(n, 0), l.operand(n, 1), l.operand(n, 2)},
                {{"beta", nin > 3 ? l.doubleArg(in[3]) : 1.0},
                 {"alpha", nin > 4 ? l.doubleArg(in[4]) : 1.0}});
}

ir::Value* addmm(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  if (in[2]->node()->kind() == c10::aten::t && in.size() > 4 && l.doubleArg(in[3]) == 1.0 &&
      l.doubleArg(in[4]) == 1.0 && l.operand(n, 0)->rank() == 1) {
    // Note [Linear from addmm]: the tracer records nn::Linear decomposed (t + addmm); kLinear
    // keeps the weight in its [out, in] layout and the bias as an epilogue. The t is left dead.
    return l.emit(OpKind::kLinear,
                  {l.operand(n, 1), l.tensor(in[2]->node()->input(0)), l.operand(n, 0)});
  }
  return addmmLike(l, n, OpKind::kAddmm);
}

ir::Value* sdpa(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  const size_t nin = in.size();
  if (nin > 4 && l.doubleArg(in[4]) != 0.0) throw NotLowerable{"sdpa with dropout"};
  if (nin > 7 && l.boolArg(in[7])) throw NotLowerable{"sdpa with enable_gqa"};
  std::vector<ir::Value*> ops{l.operand(n, 0), l.operand(n, 1), l.operand(n, 2)};
  if (nin > 3 && !l.isNone(in[3])) ops.push_back(l.operand(n, 3));
  Attrs attrs{{"is_causal", nin > 5 ? l.boolArg(in[5]) : false}};
  if (nin > 6 && !l.isNone(in[6])) attrs.set("scale", l.doubleArg(in[6]));
  return l.emit(OpKind::kSdpa, std::move(ops), std::move(attrs));
}

// Note [Einsum as GEMMs]
// torch.einsum (XLNet's attention and projections: 19 of its eager steps in the breadth sweep,
// bench/RESULTS.md) with one or two operands, an explicit output ("->"), no ellipsis and no label
// twice in one operand is views, sums, a broadcast multiply and at most one matmul:
//   - a label in one operand only and not in the output is summed out first;
//   - one operand: a permute into the output's order;
//   - two operands, no label contracted (in both and not in the output): each operand permuted
//     into the output's order with size-1 dims for the labels it lacks, then multiplied;
//   - otherwise A as [batch, A's own, contracted] and B as [batch, contracted, B's own] (batch:
//     in both and in the output), reshaped to rank 3 (2 without batch labels), one matmul, and
//     the result reshaped to [batch, A's own, B's own] and permuted into the output's order.
// A label must have one size in both operands (einsum's broadcasting of size-1 dims runs in
// ATen). The matmul is ATen's (cuBLAS) like any other; the views around it are kiln's.

// `x`, whose dims carry `labels`, permuted into the order `order` (a permutation of labels).
ir::Value* permuteLabels(Lowerer& l, ir::Value* x, const std::string& labels,
                         const std::string& order) {
  std::vector<int64_t> perm;
  for (char c : order) perm.push_back(static_cast<int64_t>(labels.find(c)));
  if (std::is_sorted(perm.begin(), perm.end())) return x;
  return l.emit(OpKind::kPermute, {x}, {{"perm", perm}});
}

ir::Value* einsum(Lowerer& l, const tj::Node* n) {
  auto eqArg = l.constIValue(n->input(0));
  if (!eqArg || !eqArg->isString()) throw NotLowerable{"an equation not known when tracing"};
  std::string eq;
  for (char c : eqArg->toStringRef())
    if (c != ' ') eq += c;
  if (eq.find("...") != std::string::npos) throw NotLowerable{"an ellipsis in the equation"};
  const size_t arrow = eq.find("->");
  if (arrow == std::string::npos) throw NotLowerable{"no explicit output (->)"};
  const std::string out = eq.substr(arrow + 2);
  std::vector<std::string> terms{""};
  for (char c : eq.substr(0, arrow)) {
    if (c == ',')
      terms.emplace_back();
    else
      terms.back() += c;
  }
  const tj::Node* list = n->input(1)->node();
  if (list->kind() != c10::prim::ListConstruct || list->inputs().size() != terms.size() ||
      terms.size() > 2)
    throw NotLowerable{"other than one or two operands"};
  auto letters = [](const std::string& t) {
    for (size_t i = 0; i < t.size(); ++i)
      if (!std::isalpha(static_cast<unsigned char>(t[i])) ||
          t.find(t[i], i + 1) != std::string::npos)
        return false;
    return true;
  };
  if (!letters(out)) throw NotLowerable{"a repeated label in the output"};
  std::vector<ir::Value*> xs;
  std::map<char, ir::SymDim> size;
  for (size_t k = 0; k < terms.size(); ++k) {
    ir::Value* x = l.operand(list, k);
    if (!letters(terms[k])) throw NotLowerable{"a label twice in one operand (a diagonal)"};
    if (static_cast<size_t>(x->rank()) != terms[k].size())
      throw NotLowerable{"an operand whose rank is not its term's length"};
    if (!ir::isFloating(x->dtype()) || (k > 0 && x->dtype() != xs[0]->dtype()))
      throw NotLowerable{"operands that are not floating point of one dtype"};
    for (size_t d = 0; d < terms[k].size(); ++d) {
      auto [it, fresh] = size.emplace(terms[k][d], x->shape()[d]);
      if (!fresh && it->second != x->shape()[d])
        throw NotLowerable{"a label with two sizes (broadcast in ATen)"};
    }
    xs.push_back(x);
  }
  for (char c : out)
    if (!size.count(c)) throw NotLowerable{"an output label no operand has"};
  auto in = [](const std::string& t, char c) { return t.find(c) != std::string::npos; };
  // Labels in one operand only and not in the output: summed out.
  for (size_t k = 0; k < terms.size(); ++k) {
    std::vector<int64_t> dims;
    std::string kept;
    for (size_t d = 0; d < terms[k].size(); ++d) {
      const char c = terms[k][d];
      const bool elsewhere = terms.size() == 2 && in(terms[1 - k], c);
      if (!in(out, c) && !elsewhere)
        dims.push_back(static_cast<int64_t>(d));
      else
        kept += c;
    }
    if (dims.empty()) continue;
    xs[k] = l.emit(OpKind::kSum, {xs[k]}, {{"dims", dims}, {"keepdim", false}});
    terms[k] = kept;
  }
  if (terms.size() == 1) return permuteLabels(l, xs[0], terms[0], out);
  const std::string& a = terms[0];
  const std::string& b = terms[1];
  std::string batch, contracted, own0, own1;
  for (char c : out) {
    if (in(a, c) && in(b, c))
      batch += c;
    else if (in(a, c))
      own0 += c;
    else
      own1 += c;
  }
  for (char c : a)
    if (in(b, c) && !in(out, c)) contracted += c;
  auto labelShape = [&](const std::string& labels) {
    Shape s;
    for (char c : labels) s.push_back(size.at(c));
    return s;
  };
  auto product = [&](const std::string& labels) {
    ir::SymDim p(1);
    for (char c : labels) p = p * size.at(c);
    return p;
  };
  if (contracted.empty()) {
    // A broadcast multiply: each operand in the output's order, size 1 where it lacks a label.
    std::vector<ir::Value*> ys;
    for (size_t k = 0; k < 2; ++k) {
      std::string order;
      Shape shape;
      for (char c : out) {
        if (in(terms[k], c)) order += c;
        shape.push_back(in(terms[k], c) ? size.at(c) : ir::SymDim(1));
      }
      ys.push_back(l.reshape(permuteLabels(l, xs[k], terms[k], order), shape));
    }
    return l.emit(OpKind::kMul, {ys[0], ys[1]});
  }
  auto asMatrix = [&](ir::Value* x, const std::string& labels, const std::string& rows,
                      const std::string& cols) {
    Shape shape;
    if (!batch.empty()) shape.push_back(product(batch));
    shape.push_back(product(rows));
    shape.push_back(product(cols));
    return l.reshape(permuteLabels(l, x, labels, batch + rows + cols), shape);
  };
  ir::Value* y = l.emit(OpKind::kMatMul, {asMatrix(xs[0], a, own0, contracted),
                                          asMatrix(xs[1], b, contracted, own1)});
  y = l.reshape(y, labelShape(batch + own0 + own1));
  return permuteLabels(l, y, batch + own0 + own1, out);
}

// _convolution/convolution(x, w, b, stride, padding, dilation, transposed, output_padding,
// groups, ...).
ir::Value* convolution(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  if (l.boolArg(in[6])) throw NotLowerable{"transposed convolution"};
  if (l.operand(n, 0)->rank() != 4) throw NotLowerable{"convolution that is not 2-d"};
  std::vector<ir::Value*> ops{l.operand(n, 0), l.operand(n, 1)};
  if (!l.isNone(in[2])) ops.push_back(l.operand(n, 2));
  return l.emit(OpKind::kConv2d, std::move(ops),
                {{"stride", l.intsArg(in[3])},
                 {"padding", l.intsArg(in[4])},
                 {"dilation", l.intsArg(in[5])},
                 {"groups", l.intArg(in[8])}});
}

// conv2d(x, w, b, stride, padding, dilation, groups): one-element lists mean both dims.
ir::Value* conv2d(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  auto padIv = l.constIValue(in[4]);
  if (!padIv || !padIv->isIntList()) throw NotLowerable{"conv2d with string padding"};
  auto pair = [](std::vector<int64_t> v) {
    if (v.size() == 1) v.push_back(v[0]);
    return v;
  };
  std::vector<ir::Value*> ops{l.operand(n, 0), l.operand(n, 1)};
  if (!l.isNone(in[2])) ops.push_back(l.operand(n, 2));
  return l.emit(OpKind::kConv2d, std::move(ops),
                {{"stride", pair(l.intsArg(in[3]))},
                 {"padding", pair(l.intsArg(in[4]))},
                 {"dilation", pair(l.intsArg(in[5]))},
                 {"groups", l.intArg(in[6])}});
}

// batch_norm(x, w, b, mean, var, training, momentum, eps, ...);
// _native_batch_norm_legit_no_training has no `training` (`noTrainingArg`).
LoweringRule batchNorm(bool noTrainingArg) {
  return [noTrainingArg](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    // Note [Eval batch_norm decomposition]
    // Eval-mode batch_norm is pointwise: (x - mean) * rsqrt(var + eps) * w + b with the
    // per-channel params reshaped to [C, 1, ...]. Decomposing it lets the partitioner fuse it with
    // the conv's epilogue (relu) instead of leaving a library call; running stats stay params by
    // reference, so updated statistics are seen. Training mode (batch statistics) stays eager.
    if (!noTrainingArg && l.boolArg(in[5])) throw NotLowerable{"batch_norm in training mode"};
    if (l.isNone(in[3]) || l.isNone(in[4])) throw NotLowerable{"batch_norm without running stats"};
    ir::Value* x = l.operand(n, 0);
    if (x->rank() < 2) throw NotLowerable{"batch_norm of rank < 2"};
    Shape chan{x->shape()[1]};
    for (int64_t d = 2; d < x->rank(); ++d) chan.emplace_back(1);
    auto perChannel = [&](ir::Value* p) { return l.reshape(p, chan); };
    ir::Value* mean = perChannel(l.operand(n, 3));
    ir::Value* var = perChannel(l.operand(n, 4));
    ir::Value* eps = l.graph().addConstant(l.doubleArg(in[noTrainingArg ? 6 : 7]), DType::kFloat32);
    ir::Value* inv = l.emit(OpKind::kRsqrt, {l.emit(OpKind::kAdd, {var, eps})});
    ir::Value* y = l.emit(OpKind::kMul, {l.emit(OpKind::kSub, {x, mean}), inv});
    if (!l.isNone(in[1])) y = l.emit(OpKind::kMul, {y, perChannel(l.operand(n, 1))});
    if (!l.isNone(in[2])) y = l.emit(OpKind::kAdd, {y, perChannel(l.operand(n, 2))});
    return l.castTo(y, l.tracedDType(n->outputs()[0]));
  };
}

}  // namespace

void addLibraryRules(LoweringTable& table) {
  table.add("aten::linear", linear);
  table.add("aten::matmul", matmul);
  table.add("aten::mm", mm);
  table.add("aten::bmm", bmm);
  table.add("aten::einsum", einsum);
  table.add("aten::addmm", addmm);
  table.add("aten::baddbmm",
            [](Lowerer& l, const tj::Node* n) { return addmmLike(l, n, OpKind::kBaddbmm); });
  table.add("aten::scaled_dot_product_attention", sdpa);
  table.add("aten::_convolution", convolution);
  table.add("aten::convolution", convolution);
  table.add("aten::conv2d", conv2d);
  for (const char* name :
       {"aten::batch_norm", "aten::_batch_norm_impl_index", "aten::native_batch_norm"})
    table.add(name, batchNorm(/*noTrainingArg=*/false));
  table.add("aten::_native_batch_norm_legit_no_training", batchNorm(/*noTrainingArg=*/true));
}

}  // namespace kiln::jit

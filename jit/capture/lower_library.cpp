// Lowering rules for ops kiln runs as library calls: GEMMs, attention, convolution; and eval
// batch_norm, decomposed (Note [Lowering table] in lower_rules.h).
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
    auto perChannel = [&](ir::Value* p) {
      return l.emitTyped(OpKind::kReshape, {p}, {}, TensorType{p->dtype(), chan});
    };
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

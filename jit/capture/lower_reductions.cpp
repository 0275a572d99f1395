// Lowering rules for the reductions kiln fuses (Note [Lowering table] in lower_rules.h).
#include <algorithm>
#include <utility>
#include <vector>

#include "jit/capture/lower_rules.h"
#include "jit/capture/lowerer.h"

namespace kiln::jit {
namespace {

namespace tj = torch::jit;
using ir::DType;
using ir::OpKind;

// softmax(x, dim, dtype), _softmax(x, dim, half_to_float), and the log_ forms.
LoweringRule softmax(OpKind kind) {
  return [kind](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    const size_t nin = in.size();
    const tj::Value* out = n->outputs()[0];
    ir::Value* x = l.operand(n, 0);
    if (nin >= 3 && !l.isNone(in[2]) && !l.constIValue(in[2])->isBool()) {
      x = l.castTo(x, l.tracedDType(out));
    } else if (nin >= 3 && l.constIValue(in[2])->isBool() && l.boolArg(in[2])) {
      x = l.castTo(x, l.tracedDType(out));  // _softmax(half_to_float=true)
    }
    return l.emit(kind, {x}, {{"dim", normDim(l.intArg(in[1]), x->rank())}});
  };
}

ir::Value* layerNorm(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  ir::Value* x = l.operand(n, 0);
  auto normalized = l.intsArg(in[1]);
  bool hasW = !l.isNone(in[2]);
  bool hasB = !l.isNone(in[3]);
  if (hasW != hasB) throw NotLowerable{"layer_norm with only one of weight/bias"};
  std::vector<ir::Value*> ops{x};
  if (hasW) {
    ops.push_back(l.operand(n, 2));
    ops.push_back(l.operand(n, 3));
  }
  return l.emit(
      OpKind::kLayerNorm, std::move(ops),
      {{"normalized_ndim", static_cast<int64_t>(normalized.size())}, {"eps", l.doubleArg(in[4])}});
}

// sum/mean(x, dims, keepdim, dtype), sum(x, dtype), amax/amin(x, dims, keepdim).
LoweringRule reduce(OpKind kind) {
  return [kind](Lowerer& l, const tj::Node* n) {
    const auto in = n->inputs();
    const size_t nin = in.size();
    ir::Value* x = l.operand(n, 0);
    std::vector<int64_t> dims;
    bool keepdim = false;
    const tj::Value* dtypeArg = nullptr;
    if (kind == OpKind::kAmax || kind == OpKind::kAmin) {
      dims = l.intsArg(in[1]);
      keepdim = l.boolArg(in[2]);
    } else if (nin == 2) {  // sum(self, dtype)
      dtypeArg = in[1];
    } else {
      if (!l.isNone(in[1])) dims = l.intsArg(in[1]);
      keepdim = l.boolArg(in[2]);
      if (nin >= 4) dtypeArg = in[3];
    }
    if (dtypeArg && !l.isNone(dtypeArg)) x = l.castTo(x, l.tracedDType(n->outputs()[0]));
    if (kind == OpKind::kSum && !ir::isFloating(x->dtype())) x = l.castTo(x, DType::kInt64);
    if (dims.empty())
      for (int64_t d = 0; d < x->rank(); ++d) dims.push_back(d);
    for (int64_t& d : dims) d = normDim(d, x->rank());
    std::sort(dims.begin(), dims.end());
    dims.erase(std::unique(dims.begin(), dims.end()), dims.end());
    return l.emit(kind, {x}, {{"dims", dims}, {"keepdim", keepdim}});
  };
}

// adaptive_avg_pool2d(x, [1, 1]): the mean over the last two dims, kept (the global pooling of
// ResNet-style heads and squeeze-and-excitation blocks: EfficientNet, MobileNetV3, RegNet). Other
// output sizes pool windows and stay eager.
ir::Value* globalAvgPool(Lowerer& l, const tj::Node* n) {
  const auto in = n->inputs();
  ir::Value* x = l.operand(n, 0);
  const std::vector<int64_t> size = l.intsArg(in[1]);
  if (size != std::vector<int64_t>{1, 1} || x->rank() < 3)
    throw NotLowerable{"adaptive_avg_pool2d to an output other than 1x1"};
  if (!ir::isFloating(x->dtype())) throw NotLowerable{"adaptive_avg_pool2d of integers"};
  return l.emit(OpKind::kMean, {x},
                {{"dims", std::vector<int64_t>{x->rank() - 2, x->rank() - 1}}, {"keepdim", true}});
}

}  // namespace

void addReductionRules(LoweringTable& table) {
  table.add("aten::softmax", softmax(OpKind::kSoftmax));
  table.add("aten::_softmax", softmax(OpKind::kSoftmax));
  table.add("aten::log_softmax", softmax(OpKind::kLogSoftmax));
  table.add("aten::_log_softmax", softmax(OpKind::kLogSoftmax));
  table.add("aten::layer_norm", layerNorm);
  table.add("aten::native_layer_norm", layerNorm);
  table.add("aten::sum", reduce(OpKind::kSum));
  table.add("aten::mean", reduce(OpKind::kMean));
  table.add("aten::amax", reduce(OpKind::kAmax));
  table.add("aten::amin", reduce(OpKind::kAmin));
  table.add("aten::adaptive_avg_pool2d", globalAvgPool);
}

}  // namespace kiln::jit

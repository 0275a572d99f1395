// evalNode: one ATen call (or a few) per IR op, with PyTorch eager semantics.
#include <algorithm>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "jit/eval/aten_eval.h"
#include "jit/eval/attention.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

std::vector<int64_t> partialShape(const ir::Shape& shape, const std::vector<int64_t>& symbols) {
  std::vector<int64_t> out;
  out.reserve(shape.size());
  for (const ir::SymDim& dim : shape) {
    bool bound = true;
    for (int id : dim.symbols()) {
      if (static_cast<size_t>(id) >= symbols.size() ||
          symbols[static_cast<size_t>(id)] == kUnboundSymbol)
        bound = false;
    }
    out.push_back(bound ? dim.evaluate(symbols) : kUnboundSymbol);
  }
  return out;
}

namespace {

using ir::OpKind;

std::string describe(const ir::Node& node) {
  return fmt::format("node {} (%{} = {})", node.index(),
                     node.outputs().empty() ? -1 : node.output()->id(), ir::toString(node.kind()));
}


// A numeric attr as an at::Scalar of the attr's own kind: an int attr (clamp(x, min=0) on an int
// tensor) must not promote the result to float the way a double would.
std::optional<at::Scalar> scalarAttr(const ir::Attrs& attrs, std::string_view name) {
  const ir::AttrValue* v = attrs.find(name);
  if (v == nullptr) return std::nullopt;
  if (const auto* i = std::get_if<int64_t>(v)) return at::Scalar(*i);
  if (const auto* d = std::get_if<double>(v)) return at::Scalar(*d);
  if (const auto* b = std::get_if<bool>(v)) return at::Scalar(*b);
  KILN_CHECK(false, "attr {} is not numeric", name);
  return std::nullopt;
}

at::Scalar scalarAttrOr(const ir::Attrs& attrs, std::string_view name, int64_t fallback) {
  std::optional<at::Scalar> s = scalarAttr(attrs, name);
  return s ? *s : at::Scalar(fallback);
}

std::vector<int64_t> intsAttrOr(const ir::Attrs& attrs, std::string_view name,
                                std::vector<int64_t> fallback) {
  return attrs.has(name) ? attrs.getInts(name) : std::move(fallback);
}

std::optional<at::Tensor> optionalInput(const std::vector<at::Tensor>& in, size_t i) {
  if (i < in.size()) return in[i];
  return std::nullopt;
}

// Note [Library epilogues]
// linear {activation = relu | gelu_tanh} (src/passes/library_epilogues.h) on CUDA is one
// cuBLASLt GEMM whose epilogue adds the bias and applies the activation to the fp32 accumulator
// before the single rounding to the output dtype: at::_addmm_activation, which falls back to
// addmm plus the activation by itself where cuBLASLt cannot take the operands. Eager rounds the
// GEMM's result first and rounds again after the activation: relu gives the same bits either
// way (rounding is monotonic and keeps the sign), tanh-gelu differs by at most one rounding. On
// the CPU it is exactly eager's two ops. cuBLASLt's GELU epilogue is the tanh form, so erf gelu
// (nn.GELU's default) is fused only where kiln's own GEMM runs it (Note [Kiln GEMM] in
// codegen/emit_gemm.h; the plan calls it); here, where that GEMM cannot serve a call, it is
// eager's two ops.
at::Tensor linearWithActivation(const std::vector<at::Tensor>& in, const std::string& activation) {
  const at::Tensor& x = in.at(0);
  const at::Tensor& w = in.at(1);
  const at::Tensor& b = in.at(2);
  if (activation == "gelu") return at::gelu(at::linear(x, w, b));
  const bool gelu = activation == "gelu_tanh";
  if (x.is_cuda() && x.numel() > 0 && w.dim() == 2 && b.dim() == 1) {
    std::vector<int64_t> sizes = x.sizes().vec();
    sizes.back() = w.size(0);
    return at::_addmm_activation(b, x.reshape({-1, x.size(-1)}), w.t(), 1, 1, gelu).view(sizes);
  }
  at::Tensor y = at::linear(x, w, b);
  return gelu ? at::gelu(y, "tanh") : at::relu(y);
}

// conv2d {activation = relu} (Note [Library epilogues]): relu(conv(x, w) + b [+ z]) as one cuDNN
// call with the bias, the residual and the relu in its epilogue (at::cudnn_convolution_relu /
// _add_relu, the ops PyTorch's own inference fusions use). On the CPU, or where cuDNN declines
// the operands, the same ops one by one.
at::Tensor convWithRelu(const std::vector<at::Tensor>& in, const std::vector<int64_t>& stride,
                        const std::vector<int64_t>& padding, const std::vector<int64_t>& dilation,
                        int64_t groups) {
  const at::Tensor& x = in.at(0);
  const at::Tensor& w = in.at(1);
  const std::optional<at::Tensor> b = optionalInput(in, 2);
  const std::optional<at::Tensor> z = optionalInput(in, 3);
  const auto dt = x.scalar_type();
  if (x.is_cuda() && at::globalContext().userEnabledCuDNN() &&
      (dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat)) {
    try {
      if (z)
        return at::cudnn_convolution_add_relu(x, w, *z, 1, b, stride, padding, dilation, groups);
      return at::cudnn_convolution_relu(x, w, b, stride, padding, dilation, groups);
    } catch (const c10::Error& e) {
      logOnce(LogLevel::kInfo, "conv.epilogue",
              fmt::format("kiln: cuDNN declined a fused conv+relu ({}); running it op by op",
                          e.what_without_backtrace()));
    }
  }
  at::Tensor y = at::conv2d(x, w, b, stride, padding, dilation, groups);
  if (z) y = y + *z;
  return at::relu(y);
}

at::Tensor wrapScalar(const at::Scalar& s, ir::DType dtype) {
  if (dtype == ir::DType::kBool) return makeScalarOperand(s.toBool() ? 1.0 : 0.0, dtype);
  if (ir::isFloating(dtype)) return makeScalarOperand(s.toDouble(), dtype);
  at::Tensor t = at::scalar_tensor(s.toLong(), at::TensorOptions().dtype(at::kLong));
  t.unsafeGetTensorImpl()->set_wrapped_number(true);
  return t;
}

at::Tensor evalPointwise(const ir::Node& node, const std::vector<at::Tensor>& in) {
  const ir::Attrs& attrs = node.attrs();
  switch (node.kind()) {
    case OpKind::kNeg:
      return at::neg(in[0]);
    case OpKind::kAbs:
      return at::abs(in[0]);
    case OpKind::kExp:
      return at::exp(in[0]);
    case OpKind::kLog:
      return at::log(in[0]);
    case OpKind::kSqrt:
      return at::sqrt(in[0]);
    case OpKind::kRsqrt:
      return at::rsqrt(in[0]);
    case OpKind::kTanh:
      return at::tanh(in[0]);
    case OpKind::kSigmoid:
      return at::sigmoid(in[0]);
    case OpKind::kRelu:
      return at::relu(in[0]);
    case OpKind::kGelu:
      return at::gelu(in[0], "none");
    case OpKind::kGeluTanh:
      return at::gelu(in[0], "tanh");
    case OpKind::kSilu:
      return at::silu(in[0]);
    case OpKind::kErf:
      return at::erf(in[0]);
    case OpKind::kSin:
      return at::sin(in[0]);
    case OpKind::kCos:
      return at::cos(in[0]);
    case OpKind::kClamp: {
      std::optional<at::Scalar> lo = scalarAttr(attrs, "min");
      std::optional<at::Scalar> hi = scalarAttr(attrs, "max");
      if (!lo && !hi) return in[0];  // at::clamp rejects this; it is the identity
      return at::clamp(in[0], lo, hi);
    }
    case OpKind::kPowScalar: {
      std::optional<at::Scalar> e = scalarAttr(attrs, "exponent");
      KILN_CHECK(e.has_value(), "{}: missing attr exponent", describe(node));
      return at::pow(in[0], *e);
    }
    case OpKind::kCast:
      return in[0].to(toAtenDType(node.output()->dtype()));
    // Binary ops take a constant as a wrapped-number tensor, exactly what Python's `x + 0.5`
    // passes to aten::add (Note [Constants are Python scalars]).
    case OpKind::kAdd:
      return at::add(in[0], in[1]);
    case OpKind::kSub:
      return at::sub(in[0], in[1]);
    case OpKind::kMul:
      return at::mul(in[0], in[1]);
    case OpKind::kDiv:
      return at::div(in[0], in[1]);
    case OpKind::kMaximum:
      return at::maximum(in[0], in[1]);
    case OpKind::kMinimum:
      return at::minimum(in[0], in[1]);
    case OpKind::kPow:
      // `x ** 2` and `2 ** x` reach ATen as the Scalar overloads, whose fast paths (x*x for 2)
      // round differently from the tensor-tensor kernel.
      if (isScalarOperand(in[1]) && !isScalarOperand(in[0])) return at::pow(in[0], in[1].item());
      if (isScalarOperand(in[0]) && !isScalarOperand(in[1])) return at::pow(in[0].item(), in[1]);
      return at::pow(in[0], in[1]);
    case OpKind::kEq:
      return at::eq(in[0], in[1]);
    case OpKind::kNe:
      return at::ne(in[0], in[1]);
    case OpKind::kLt:
      return at::lt(in[0], in[1]);
    case OpKind::kLe:
      return at::le(in[0], in[1]);
    case OpKind::kGt:
      return at::gt(in[0], in[1]);
    case OpKind::kGe:
      return at::ge(in[0], in[1]);
    case OpKind::kWhere: {
      // With both branches scalar constants (wrapped numbers), ATen gives the default dtype; the
      // IR's dtype is the one the graph asked for (Note [Additive attention masks] makes one).
      at::Tensor r = at::where(in[0], in[1], in[2]);
      const at::ScalarType want = toAtenDType(node.output()->dtype());
      return r.scalar_type() == want ? r : r.to(want);
    }
    default:
      break;
  }
  KILN_CHECK(false, "{}: not a pointwise op", describe(node));
  return {};
}

at::Tensor evalOther(const ir::Node& node, const std::vector<at::Tensor>& in,
                     const std::vector<int64_t>& symbols) {
  const ir::Attrs& attrs = node.attrs();
  switch (node.kind()) {
    case OpKind::kSum:
      return at::sum(in[0], attrs.getInts("dims"), attrs.getBool("keepdim"));
    case OpKind::kMean:
      return at::mean(in[0], attrs.getInts("dims"), attrs.getBool("keepdim"));
    case OpKind::kAmax:
      return at::amax(in[0], attrs.getInts("dims"), attrs.getBool("keepdim"));
    case OpKind::kAmin:
      return at::amin(in[0], attrs.getInts("dims"), attrs.getBool("keepdim"));
    case OpKind::kSoftmax:
      return at::softmax(in[0], attrs.getInt("dim"));
    case OpKind::kLogSoftmax:
      return at::log_softmax(in[0], attrs.getInt("dim"));
    case OpKind::kLayerNorm: {
      int64_t n = attrs.getInt("normalized_ndim");
      KILN_CHECK(n >= 1 && n <= in[0].dim(), "{}: normalized_ndim {} for rank {}", describe(node),
                 n, in[0].dim());
      at::IntArrayRef normalized = in[0].sizes().slice(static_cast<size_t>(in[0].dim() - n));
      return at::layer_norm(in[0], normalized, optionalInput(in, 1), optionalInput(in, 2),
                            attrs.getDouble("eps"));
    }

    case OpKind::kReshape: {
      std::vector<int64_t> shape = partialShape(node.output()->shape(), symbols);
      // One dim a data-dependent symbol still works, as -1; reshape checks the rest.
      KILN_CHECK(std::count(shape.begin(), shape.end(), kUnboundSymbol) <= 1,
                 "{}: output shape {} has several unbound symbols", describe(node),
                 ir::toString(node.output()->shape()));
      return at::reshape(in[0], shape);
    }
    case OpKind::kPermute:
      return in[0].permute(attrs.getInts("perm"));
    case OpKind::kExpand:
      return in[0].expand(concreteShape(node.output()->shape(), symbols));
    case OpKind::kSlice: {
      int64_t dim = attrs.getInt("dim");
      if (dim < 0) dim += in[0].dim();
      KILN_CHECK(dim >= 0 && dim < in[0].dim(), "{}: slice dim {} of rank {}", describe(node), dim,
                 in[0].dim());
      int64_t size = in[0].size(dim);
      int64_t start = attrs.getInt("start");
      if (start < 0) start += size;
      int64_t step = attrs.has("step") ? attrs.getInt("step") : 1;
      KILN_CHECK(step >= 1, "{}: slice step {}", describe(node), step);
      // The length comes from the output type (Note [Symbolic dims]: an end can be symbolic).
      int64_t length =
          concreteShape({node.output()->shape().at(static_cast<size_t>(dim))}, symbols)[0];
      int64_t end = length == 0 ? start : start + (length - 1) * step + 1;
      KILN_CHECK(start >= 0 && end <= size, "{}: slice [{}:{}:{}] of a dim of size {}",
                 describe(node), start, end, step, size);
      return at::slice(in[0], dim, start, end, step);
    }
    case OpKind::kCat:
      return at::cat(in, attrs.getInt("dim"));

    case OpKind::kMatMul:
      return at::matmul(in[0], in[1]);
    case OpKind::kLinear:
      if (attrs.has("activation")) return linearWithActivation(in, attrs.getString("activation"));
      return at::linear(in[0], in[1], optionalInput(in, 2));
    case OpKind::kAddmm:
      return at::addmm(in[0], in[1], in[2], scalarAttrOr(attrs, "beta", 1),
                       scalarAttrOr(attrs, "alpha", 1));
    case OpKind::kBmm:
      return at::bmm(in[0], in[1]);
    case OpKind::kBaddbmm:
      return at::baddbmm(in[0], in[1], in[2], scalarAttrOr(attrs, "beta", 1),
                         scalarAttrOr(attrs, "alpha", 1));
    case OpKind::kSdpa: {
      bool causal = attrs.has("is_causal") && attrs.getBool("is_causal");
      return attention(in[0], in[1], in[2], optionalInput(in, 3), causal,
                       attrs.getDoubleOpt("scale"));
    }
    case OpKind::kConv2d: {
      const std::vector<int64_t> stride = intsAttrOr(attrs, "stride", {1, 1});
      const std::vector<int64_t> padding = intsAttrOr(attrs, "padding", {0, 0});
      const std::vector<int64_t> dilation = intsAttrOr(attrs, "dilation", {1, 1});
      const int64_t groups = attrs.has("groups") ? attrs.getInt("groups") : 1;
      if (attrs.has("activation")) return convWithRelu(in, stride, padding, dilation, groups);
      return at::conv2d(in[0], in[1], optionalInput(in, 2), stride, padding, dilation, groups);
    }
    default:
      break;
  }
  KILN_CHECK(false, "{}: no ATen evaluation", describe(node));
  return {};
}

// The IR and ATen must agree on what each node produces; a disagreement is a kiln bug (capture or
// type inference), and the tensor must not flow on as if it were the declared one.
void checkResult(const ir::Node& node, size_t o, const at::Tensor& t,
                 const std::vector<int64_t>& symbols) {
  const ir::Value* v = node.output(static_cast<int>(o));
  KILN_CHECK(t.defined(), "{}: output {} is undefined", describe(node), o);
  if (isScalarOperand(t)) return;  // a Python scalar; its dtype is double/int64/bool by design
  KILN_CHECK(t.scalar_type() == toAtenDType(v->dtype()), "{}: output {}: IR says {}, ATen gave {}",
             describe(node), o, v->type().toString(), c10::toString(t.scalar_type()));
  std::vector<int64_t> expected = partialShape(v->shape(), symbols);
  bool same = t.dim() == static_cast<int64_t>(expected.size());
  for (size_t d = 0; same && d < expected.size(); ++d)
    same = expected[d] == kUnboundSymbol || expected[d] == t.size(static_cast<int64_t>(d));
  KILN_CHECK(same, "{}: output {}: IR says {} = [{}], ATen gave [{}]", describe(node), o,
             v->type().toString(), fmt::join(expected, ", "), fmt::join(t.sizes(), ", "));
}

}  // namespace

std::vector<at::Tensor> evalNode(const ir::Node& node, const std::vector<at::Tensor>& inputs,
                                 const std::vector<int64_t>& symbols, const EagerRunner& runEager,
                                 at::Device device) {
  KILN_CHECK(inputs.size() == node.inputs().size(), "{}: {} operands for {} inputs", describe(node),
             inputs.size(), node.inputs().size());
  switch (node.kind()) {
    case OpKind::kInput:
    case OpKind::kParam:
      KILN_CHECK(false, "{}: graph boundary values are bound by the caller", describe(node));
      break;
    case OpKind::kConstant:
      return {makeScalarOperand(node.attrs().getDouble("value"), node.output()->dtype())};
    case OpKind::kFill: {  // Note [Fills]
      const ir::DType dtype = node.output()->dtype();
      const double value = node.attrs().getDouble("value");
      const at::Scalar fill = ir::isFloating(dtype)       ? at::Scalar(value)
                              : dtype == ir::DType::kBool ? at::Scalar(value != 0)
                                                          : at::Scalar(static_cast<int64_t>(value));
      at::Tensor t = at::full(concreteShape(node.output()->shape(), symbols), fill,
                              at::TensorOptions().dtype(toAtenDType(dtype)).device(device));
      checkResult(node, 0, t, symbols);
      return {std::move(t)};
    }
    case OpKind::kArange: {  // Note [Aranges in kernels] in jit/capture/lower_indexing.cpp
      const std::vector<int64_t> shape = concreteShape(node.output()->shape(), symbols);
      const auto dim = static_cast<size_t>(node.attrs().getInt("dim"));
      const int64_t start = node.attrs().getInt("start");
      const int64_t step = node.attrs().getInt("step");
      std::vector<int64_t> along(shape.size(), 1);
      along[dim] = shape[dim];
      const auto options = at::TensorOptions().dtype(at::kLong).device(device);
      at::Tensor t = (at::arange(shape[dim], options) * step + start)
                         .to(toAtenDType(node.output()->dtype()))
                         .view(along)
                         .expand(shape);
      checkResult(node, 0, t, symbols);
      return {std::move(t)};
    }
    case OpKind::kEmbedding: {  // Note [Embeddings in kernels] in codegen/emit_cuda.cpp
      at::Tensor t = at::embedding(inputs[0], inputs[1].squeeze(-1));
      checkResult(node, 0, t, symbols);
      return {std::move(t)};
    }
    case OpKind::kEager: {
      KILN_CHECK(static_cast<bool>(runEager), "{} ({}) needs an EagerRunner", describe(node),
                 node.attrs().has("schema") ? node.attrs().getString("schema") : "?");
      std::vector<at::Tensor> out = runEager(node, inputs, symbols);
      KILN_CHECK(out.size() == node.outputs().size(), "{}: eager runner gave {} outputs, IR has {}",
                 describe(node), out.size(), node.outputs().size());
      for (size_t o = 0; o < out.size(); ++o) checkResult(node, o, out[o], symbols);
      return out;
    }
    default:
      break;
  }

  // Note [Constants are Python scalars]: constants stay wrapped numbers only where they meet a
  // tensor in a pointwise op; elsewhere they become real 0-dim tensors of their IR dtype.
  bool pointwise = node.category() == ir::OpCategory::kPointwise;
  const at::Tensor* firstTensor = nullptr;
  for (const at::Tensor& t : inputs) {
    if (!isScalarOperand(t)) {
      firstTensor = &t;
      break;
    }
  }
  bool constantOnly = firstTensor == nullptr && !inputs.empty();
  at::Tensor result;
  if (pointwise && !constantOnly) {
    result = evalPointwise(node, inputs);
  } else {
    std::vector<at::Tensor> args = inputs;
    at::Device device = firstTensor != nullptr ? firstTensor->device() : at::Device(at::kCPU);
    for (size_t i = 0; i < args.size(); ++i) {
      if (isScalarOperand(args[i]))
        args[i] = args[i].to(at::TensorOptions()
                                 .dtype(toAtenDType(node.input(static_cast<int>(i))->dtype()))
                                 .device(device),
                             /*non_blocking=*/false, /*copy=*/true);
    }
    result = pointwise ? evalPointwise(node, args) : evalOther(node, args, symbols);
    // A pointwise op on constants only is a constant expression, which Python would have
    // computed as a Python number: keep it one, in the declared dtype's category.
    if (pointwise) {
      ir::DType declared = node.output()->dtype();
      result = wrapScalar(result.to(toAtenDType(declared)).item(), declared);
    }
  }
  checkResult(node, 0, result, symbols);
  return {std::move(result)};
}

}  // namespace kiln::jit

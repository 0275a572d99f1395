#pragma once
// The closed set of operations kiln's IR knows. Capture lowers ATen ops onto these; anything else
// becomes kEager (an opaque node that LibTorch runs). The table in op_kind.cpp gives each kind its
// text name, category and arity.
#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln::ir {

// One line per group of kinds.
// clang-format off
enum class OpKind : uint16_t {
  // Graph boundary and literals.
  kInput,     // a runtime input tensor; attr name (string), index (int)
  kParam,     // a parameter/buffer bound by reference; attr name (string)
  kConstant,  // a rank-0 literal; attr value (double)

  // Pointwise unary (one input).
  kNeg, kAbs, kExp, kLog, kSqrt, kRsqrt, kTanh, kSigmoid, kRelu,
  kGelu,      // erf form
  kGeluTanh,  // tanh approximation
  kSilu, kErf, kSin, kCos,
  kClamp,     // attrs min, max (double, each optional)
  kPowScalar, // attr exponent (double)
  kCast,      // output dtype from the node's type
  kFill,      // no operands; attr value (double); output type from the node's type (Note [Fills]
              // in jit/capture/lower_indexing.cpp)
  kArange,    // no operands; attrs start, step, dim (ints); integer output type from the node's
              // type; out[i] = start + step * i[dim] (Note [Aranges in kernels] in
              // jit/capture/lower_indexing.cpp)
  // Pointwise binary (broadcasting).
  kAdd, kSub, kMul, kDiv, kMaximum, kMinimum, kPow,
  kEq, kNe, kLt, kLe, kGt, kGe,  // output bool
  // Pointwise ternary.
  kWhere,  // (cond, a, b)
  // Gathers (Note [Embeddings in kernels] in codegen/emit_cuda.cpp).
  kEmbedding,  // (table [V, H], ids [..., 1] int32/int64) -> [..., H]:
              // out[..., h] = table[ids[..., 0], h]

  // Reductions; attrs dims (ints, normalized non-negative), keepdim (bool).
  kSum, kMean, kAmax, kAmin,
  // Normalizations kept as composite ops (Note [Composite normalizations]).
  kSoftmax,     // attr dim
  kLogSoftmax,  // attr dim
  kLayerNorm,   // (x, [weight, bias]); attrs normalized_ndim (int), eps (double)

  // Views and layout. Values are logical tensors; layout is chosen by the runtime.
  kReshape,  // output shape from the node's type
  kPermute,  // attr perm (ints)
  kExpand,   // output shape from the node's type
  kSlice,    // attrs dim, start, step (ints); length from the node's type
  kCat,      // attr dim

  // Library ops (ATen: cuBLAS, cuDNN, SDPA).
  kMatMul,   // (a, b) torch.matmul semantics
  kLinear,   // (x, w, [b]); y = x w^T + b; attr activation (string, optional, needs b): "relu"
             // or "gelu_tanh" applied in the GEMM's epilogue (Note [Library epilogues]); "gelu"
             // (erf) in kiln's GEMM (Note [Kiln GEMM])
  kAddmm,    // (bias, a, b); attrs beta, alpha
  kBmm,      // (a, b)
  kBaddbmm,  // (bias, a, b); attrs beta, alpha
  kSdpa,     // (q, k, v, [mask]); attrs scale (double, optional), is_causal (bool)
  kConv2d,   // (x, w, [b, [z]]); attrs stride, padding, dilation (ints), groups (int); activation
             // (string, optional): "relu" of conv + b (+ z, the output's shape) in cuDNN's epilogue

  // Anything else; attrs schema (string, e.g. "aten::cumsum"), eager_id (int, capture's handle).
  kEager,
};
// clang-format on

enum class OpCategory : uint8_t {
  kBoundary,  // input, param, constant
  kPointwise,
  kReduction,      // sum/mean/amax/amin
  kNormalization,  // softmax, log_softmax, layer_norm: reductions over the innermost dims
  kView,
  kLibrary,
  kEager,
  kGather,  // embedding: fuses like a pointwise op, but its table does not broadcast
};

std::string_view toString(OpKind kind);  // "add", "layer_norm", ...
std::optional<OpKind> parseOpKind(std::string_view name);
OpCategory categoryOf(OpKind kind);
// Operand count accepted by a kind: [min, max]; max == -1 means variadic (cat, eager).
struct Arity {
  int min;
  int max;
};
Arity arityOf(OpKind kind);
// Number of OpKind values (kEager is the last).
constexpr int kNumOpKinds = static_cast<int>(OpKind::kEager) + 1;
// Binary pointwise ops whose operands may be swapped without changing the result bitwise
// (add, mul, eq, ne; not maximum/minimum, whose signed-zero ties depend on operand order).
bool isCommutative(OpKind kind);
// Pointwise comparison ops (output bool).
bool isComparison(OpKind kind);

// Note [Composite normalizations]
// softmax, log_softmax and layer_norm stay single IR ops instead of being decomposed into
// max/sub/exp/sum/div. Codegen has hand-written, numerically careful row kernels for them (one
// pass over the row in registers or shared memory, max-subtract, welford), which a decomposed form
// would have to rediscover by pattern matching. The partitioner treats them as row reductions over
// the innermost dim(s) whose output has the input's shape, so pointwise prologues and epilogues
// still fuse around them.

}  // namespace kiln::ir

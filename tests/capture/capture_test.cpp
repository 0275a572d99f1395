// Capture of real modules (torch::nn frontend and TorchScript) into kiln IR. Where the IR is
// evaluated with ATen (jit/eval), results are compared with the module itself, which checks the
// lowering, including symbolic shapes at sizes other than the example.
#include <gtest/gtest.h>
#include <torch/csrc/jit/codegen/fuser/interface.h>
#include <torch/csrc/jit/passes/tensorexpr_fuser.h>
#include <torch/csrc/jit/tensorexpr/kernel.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "jit/capture/capture.h"
#include "jit/capture/lower_rules.h"
#include "jit/capture/sym_resolve.h"
#include "jit/eval/aten_eval.h"
#include "src/ir/printer.h"
#include "src/support/error.h"

namespace kiln::jit {
namespace {

using ir::Shape;
using ir::SymDim;

// ---------------------------------------------------------------------------------------------
// Symbolic size recovery (no LibTorch involved)

TEST(SymResolve, MergeAndSplit) {
  SymDim s0 = SymDim::symbol(0);
  SymDim s1 = SymDim::symbol(1);
  SymContext ctx({3, 7});
  ctx.noteShape({s0, s1, 64});
  // [s0, s1, 64] -> [s0*s1, 64]
  auto merged = resolveReshape({s0, s1, 64}, {21, 64}, {}, ctx);
  ASSERT_TRUE(merged);
  EXPECT_EQ(ir::toString(*merged), ir::toString(Shape{s0 * s1, 64}));
  // [s0*s1, 64] -> [s0, s1, 4, 16]
  auto split = resolveReshape({s0 * s1, 64}, {3, 7, 4, 16}, {}, ctx);
  ASSERT_TRUE(split);
  EXPECT_EQ(*split, (Shape{s0, s1, 4, 16}));
  // [s0, s1, 64] -> [s0, s1, 4, 16] keeps the leading dims.
  auto heads = resolveReshape({s0, s1, 64}, {3, 7, 4, 16}, {}, ctx);
  ASSERT_TRUE(heads);
  EXPECT_EQ(*heads, (Shape{s0, s1, 4, 16}));
  // Inserting and removing 1s.
  auto unsq = resolveReshape({s0, s1}, {3, 1, 7}, {}, ctx);
  ASSERT_TRUE(unsq);
  EXPECT_EQ(*unsq, (Shape{s0, 1, s1}));
  // A known (traced) dim wins over the heuristic.
  auto known = resolveReshape({s0 * s1, 64}, {3, 7, 64}, {s0, std::nullopt, std::nullopt}, ctx);
  ASSERT_TRUE(known);
  EXPECT_EQ(*known, (Shape{s0, s1, 64}));
  // Not a view of the input: no symbolic form.
  EXPECT_FALSE(resolveReshape({s0, s1}, {5, 5}, {}, ctx));
}

TEST(SymResolve, ExpandMatchesSeenDims) {
  SymDim s0 = SymDim::symbol(0);
  SymDim s1 = SymDim::symbol(1);
  SymContext ctx({3, 7});
  ctx.noteShape({s0, s1});
  Shape e = resolveExpand({1, 1, s1}, {3, 4, 7}, ctx);
  EXPECT_EQ(e, (Shape{s0, 4, s1}));
}

// ---------------------------------------------------------------------------------------------
// Helpers

std::string printed(const CapturedGraph& c) {
  return ir::print(*c.graph);
}

std::vector<at::Tensor> evalCaptured(const CapturedGraph& c, const std::vector<at::Tensor>& in) {
  EagerRunner runner = [&c](const ir::Node& n, const std::vector<at::Tensor>& ops,
                            const std::vector<int64_t>& symbols) {
    return runEagerNode(c, n, ops, symbols);
  };
  return evalGraph(*c.graph, in, c.params, runner);
}

void expectClose(const at::Tensor& got, const at::Tensor& want, double tol = 1e-4) {
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(at::allclose(got, want, tol, tol))
      << "max abs diff " << (got - want).abs().max().item<double>();
}

int countOps(const CapturedGraph& c, ir::OpKind kind) {
  int n = 0;
  for (const auto& node : c.graph->nodes()) n += node->kind() == kind ? 1 : 0;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Modules

struct MlpImpl : torch::nn::Module {
  MlpImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(64, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 32));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc2->forward(torch::gelu(fc1->forward(x)));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

// Pre-norm transformer encoder block; attention written out, or through SDPA.
struct BlockImpl : torch::nn::Module {
  static constexpr int64_t kDim = 64;
  static constexpr int64_t kHeads = 4;
  explicit BlockImpl(bool sdpa) : sdpa(sdpa) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({kDim})));
    qkv = register_module("qkv", torch::nn::Linear(kDim, 3 * kDim));
    proj = register_module("proj", torch::nn::Linear(kDim, kDim));
    fc1 = register_module("fc1", torch::nn::Linear(kDim, 4 * kDim));
    fc2 = register_module("fc2", torch::nn::Linear(4 * kDim, kDim));
    drop = register_module("drop", torch::nn::Dropout(0.1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), t = x.size(1), hd = kDim / kHeads;
    auto parts = qkv->forward(ln1->forward(x)).chunk(3, -1);
    auto heads = [&](const torch::Tensor& y) { return y.view({b, t, kHeads, hd}).transpose(1, 2); };
    auto q = heads(parts[0]), k = heads(parts[1]), v = heads(parts[2]);
    torch::Tensor a;
    if (sdpa) {
      a = at::scaled_dot_product_attention(q, k, v);
    } else {
      auto scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(hd)));
      a = torch::matmul(torch::softmax(scores, -1), v);
    }
    a = a.transpose(1, 2).contiguous().view({b, t, kDim});
    auto h = x + drop->forward(proj->forward(a));
    return h + fc2->forward(torch::gelu(fc1->forward(ln2->forward(h)), "tanh"));
  }
  bool sdpa;
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr}, fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
};
TORCH_MODULE(Block);

struct CnnImpl : torch::nn::Module {
  CnnImpl() {
    c1 = register_module("c1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    b1 = register_module("b1", torch::nn::BatchNorm2d(8));
    c2 = register_module("c2", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 16, 3).stride(2)));
    b2 = register_module("b2", torch::nn::BatchNorm2d(16));
    fc = register_module("fc", torch::nn::Linear(16, 10));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = torch::relu(b1->forward(c1->forward(x)));
    y = torch::relu(b2->forward(c2->forward(y)));
    return fc->forward(y.mean({2, 3}));
  }
  torch::nn::Conv2d c1{nullptr}, c2{nullptr};
  torch::nn::BatchNorm2d b1{nullptr}, b2{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(Cnn);

template <typename M>
ForwardFn forwardOf(M& m) {
  return [m](const std::vector<c10::IValue>& in) mutable -> c10::IValue {
    return m->forward(in.at(0).toTensor());
  };
}

CaptureOptions batchSeq() {
  CaptureOptions o;
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "s0"}, {"x", 1, "s1"}};
  return o;
}

// ---------------------------------------------------------------------------------------------
// Tests

TEST(Capture, MlpLowersAndBindsParamsByReference) {
  torch::manual_seed(0);
  Mlp mlp;
  mlp->eval();
  CaptureOptions o;
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "batch"}};
  auto x = torch::randn({3, 64});
  CapturedGraph c = capture(mlp.ptr(), forwardOf(mlp), {x}, o);
  std::string text = printed(c);
  EXPECT_NE(text.find("%x: f32[batch, 64]"), std::string::npos) << text;
  EXPECT_NE(text.find("f32[batch, 128] = gelu("), std::string::npos) << text;
  EXPECT_NE(text.find("f32[batch, 32] = linear("), std::string::npos) << text;
  EXPECT_EQ(countOps(c, ir::OpKind::kLinear), 2);
  EXPECT_TRUE(c.unsupportedOps.empty()) << c.report();
  EXPECT_EQ(c.outputs.kind, OutputStructure::Kind::kTensor);

  // Params are the module's tensors: same TensorImpl, same storage.
  ASSERT_EQ(c.params.size(), 4u);
  auto named = mlp->named_parameters();
  for (size_t i = 0; i < c.params.size(); ++i) {
    const at::Tensor& mine = named[c.paramNames[i]];
    EXPECT_TRUE(c.params[i].is_same(mine)) << c.paramNames[i];
    EXPECT_EQ(c.params[i].data_ptr(), mine.data_ptr());
  }

  // Same results at the example size and at another batch size.
  torch::NoGradGuard ng;
  for (int64_t batch : {3, 5}) {
    auto in = torch::randn({batch, 64});
    expectClose(evalCaptured(c, {in}).at(0), mlp->forward(in));
  }
  // Updating the weights in place is seen without re-capturing.
  mlp->fc2->weight.mul_(2.0);
  auto in = torch::randn({2, 64});
  expectClose(evalCaptured(c, {in}).at(0), mlp->forward(in));
}

TEST(Capture, TransformerBlockWithExplicitAttention) {
  torch::manual_seed(1);
  Block block(false);
  block->eval();
  CapturedGraph c = capture(block.ptr(), forwardOf(block), {torch::randn({3, 7, 64})}, batchSeq());
  std::string text = printed(c);
  EXPECT_NE(text.find("f32[s0, 4, s1, s1] = softmax("), std::string::npos) << text;
  EXPECT_NE(text.find("layer_norm("), std::string::npos) << text;
  EXPECT_NE(text.find("gelu_tanh("), std::string::npos) << text;
  EXPECT_NE(text.find("f32[s0, s1, 4, 16] = reshape("), std::string::npos) << text;
  EXPECT_NE(text.find("f32[s0, s1, 64] = reshape("), std::string::npos) << text;
  EXPECT_EQ(countOps(c, ir::OpKind::kMatMul), 2) << text;
  EXPECT_TRUE(c.unsupportedOps.empty()) << c.report();
  EXPECT_EQ(ir::printType(*c.graph, c.graph->outputs().at(0)->type()), "f32[s0, s1, 64]")
      << "(symbol ids 0 and 1)";
  torch::NoGradGuard ng;
  for (auto [b, t] : {std::pair{3, 7}, std::pair{2, 5}}) {
    auto in = torch::randn({b, t, 64});
    expectClose(evalCaptured(c, {in}).at(0), block->forward(in));
  }
}

TEST(Capture, TransformerBlockWithSdpa) {
  torch::manual_seed(2);
  Block block(true);
  block->eval();
  CapturedGraph c = capture(block.ptr(), forwardOf(block), {torch::randn({3, 7, 64})}, batchSeq());
  std::string text = printed(c);
  EXPECT_NE(text.find("f32[s0, 4, s1, 16] = sdpa("), std::string::npos) << text;
  EXPECT_EQ(countOps(c, ir::OpKind::kSoftmax), 0);
  EXPECT_TRUE(c.unsupportedOps.empty()) << c.report();
  torch::NoGradGuard ng;
  auto in = torch::randn({2, 9, 64});
  expectClose(evalCaptured(c, {in}).at(0), block->forward(in));
}

TEST(Capture, CnnWithBatchNormDecomposes) {
  torch::manual_seed(3);
  Cnn cnn;
  // Non-trivial running statistics, so the decomposition is actually exercised.
  {
    torch::NoGradGuard ng;
    for (auto* bn : {&cnn->b1, &cnn->b2}) {
      (*bn)->running_mean.uniform_(-0.5, 0.5);
      (*bn)->running_var.uniform_(0.5, 2.0);
      (*bn)->weight.uniform_(0.5, 1.5);
      (*bn)->bias.uniform_(-0.5, 0.5);
    }
  }
  cnn->eval();
  CaptureOptions o;
  o.inputNames = {"img"};
  o.dynamicDims = {{"img", 0, ""}};
  CapturedGraph c = capture(cnn.ptr(), forwardOf(cnn), {torch::randn({3, 3, 16, 16})}, o);
  std::string text = printed(c);
  EXPECT_NE(text.find("f32[s0, 8, 16, 16] = conv2d("), std::string::npos) << text;
  EXPECT_NE(text.find("f32[s0, 16, 7, 7] = conv2d("), std::string::npos) << text;
  EXPECT_NE(text.find("f32[8, 1, 1] = reshape("), std::string::npos) << text;
  EXPECT_EQ(countOps(c, ir::OpKind::kRsqrt), 2);
  EXPECT_EQ(countOps(c, ir::OpKind::kRelu), 2);
  EXPECT_NE(text.find("f32[s0, 16] = mean("), std::string::npos) << text;
  EXPECT_TRUE(c.unsupportedOps.empty()) << c.report();
  // Running stats are buffers bound by reference.
  bool sawRunningVar = false;
  for (size_t i = 0; i < c.params.size(); ++i) {
    if (c.paramNames[i] == "b1.running_var") {
      sawRunningVar = true;
      EXPECT_TRUE(c.params[i].is_same(cnn->b1->running_var));
    }
  }
  EXPECT_TRUE(sawRunningVar);
  torch::NoGradGuard ng;
  auto in = torch::randn({2, 3, 16, 16});
  expectClose(evalCaptured(c, {in}).at(0), cnn->forward(in));
}

TEST(Capture, UnsupportedOpBecomesEager) {
  auto lin = torch::nn::Linear(16, 16);
  ForwardFn f = [lin](const std::vector<c10::IValue>& in) mutable -> c10::IValue {
    auto x = in[0].toTensor();
    auto y = torch::relu(lin->forward(x)).cumsum(1);
    return torch::sigmoid(y) * 2.0;
  };
  CaptureOptions o;
  o.dynamicDims = {{"input0", 0, ""}};
  CapturedGraph c = capture(lin.ptr(), f, {torch::randn({3, 16})}, o);
  ASSERT_EQ(c.unsupportedOps, std::vector<std::string>{"aten::cumsum"});
  EXPECT_NE(c.report().find("aten::cumsum x1"), std::string::npos) << c.report();
  std::string text = printed(c);
  EXPECT_NE(text.find("f32[s0, 16] = eager("), std::string::npos) << text;
  EXPECT_NE(text.find("schema = \"aten::cumsum\""), std::string::npos) << text;
  EXPECT_EQ(countOps(c, ir::OpKind::kSigmoid), 1);
  ASSERT_EQ(c.eagerNodes.size(), 1u);
  torch::NoGradGuard ng;
  auto in = torch::randn({4, 16});
  expectClose(evalCaptured(c, {in}).at(0), f({in}).toTensor());
}

TEST(Capture, TorchScriptModule) {
  torch::jit::Module m("Net");
  m.register_parameter("w", torch::randn({32, 16}), false);
  m.register_buffer("mask", torch::ones({16}));
  m.define(R"(
def forward(self, x, y):
    h = torch.matmul(x, self.w) * self.mask + 1.0
    p = torch.softmax(h, dim=-1)
    return p.sum(dim=[1], keepdim=True), torch.clamp(y, min=0.0).transpose(0, 1)
)");
  m.eval();
  CaptureOptions o;
  o.inputNames = {"x", "y"};
  o.dynamicDims = {{"x", 0, "n"}, {"y", 0, "n"}};
  std::vector<c10::IValue> ins{torch::randn({3, 32}), torch::randn({3, 5})};
  CapturedGraph c = capture(m, ins, o);
  std::string text = printed(c);
  EXPECT_NE(text.find("f32[n, 16] = softmax("), std::string::npos) << text;
  EXPECT_NE(text.find("f32[n, 1] = sum("), std::string::npos) << text;
  EXPECT_NE(text.find("f32[5, n] = permute("), std::string::npos) << text;
  EXPECT_EQ(c.outputs.kind, OutputStructure::Kind::kTuple);
  EXPECT_EQ(c.outputs.count, 2);
  EXPECT_EQ(c.graph->numSymbols(), 1);
  ASSERT_EQ(c.params.size(), 2u);
  EXPECT_TRUE(c.params[0].is_same(m.attr("w").toTensor()));
  torch::NoGradGuard ng;
  std::vector<at::Tensor> in2{torch::randn({6, 32}), torch::randn({6, 5})};
  auto want = m.forward({in2[0], in2[1]}).toTuple();
  auto got = evalCaptured(c, in2);
  ASSERT_EQ(got.size(), 2u);
  expectClose(got[0], want->elements()[0].toTensor());
  expectClose(got[1], want->elements()[1].toTensor());
}

// A TorchScript module the caller already ran eagerly holds an optimized executor plan (on a GPU,
// with NNC fusion groups) that the tracer cannot see into: a fused group's output would be baked
// into the graph as a constant, and later inputs would get stale results. Capture traces a fresh
// clone of the module instead (Note [Tracing TorchScript modules]). NNC is turned on for the CPU
// here to build that state without a GPU.
TEST(Capture, ModuleRunEagerlyBeforeIsTracedAsWritten) {
  torch::jit::overrideCanFuseOnCPU(true);
  torch::jit::tensorexpr::getTEMustUseLLVMOnCPU() = false;
  const bool wasEnabled = torch::jit::tensorExprFuserEnabled();
  torch::jit::setTensorExprFuserEnabled(true);
  torch::jit::Module m("Net");
  m.register_parameter("w", torch::randn({16}), false);
  m.define(R"(
def forward(self, x, y):
    return torch.softmax(torch.sigmoid(x * self.w + y) * 2.0 - y, -1)
)");
  m.eval();
  torch::NoGradGuard ng;
  std::vector<c10::IValue> ins{torch::randn({4, 16}), torch::randn({4, 16})};
  for (int i = 0; i < 4; ++i) m.forward(ins);  // profiled, then optimized (fused) plans
  CapturedGraph c = capture(m, ins, CaptureOptions{});
  torch::jit::overrideCanFuseOnCPU(false);
  torch::jit::tensorexpr::getTEMustUseLLVMOnCPU() = true;
  torch::jit::setTensorExprFuserEnabled(wasEnabled);
  const std::string text = printed(c);
  EXPECT_NE(text.find("sigmoid("), std::string::npos) << text;
  ASSERT_EQ(c.params.size(), 1u) << text;  // w; no tensor baked in as a constant
  std::vector<at::Tensor> in2{torch::randn({4, 16}), torch::randn({4, 16})};
  expectClose(evalCaptured(c, in2).at(0), m.forward({in2[0], in2[1]}).toTensor());
}

TEST(Capture, RetypeToHalf) {
  Mlp mlp;
  mlp->eval();
  CaptureOptions o;
  o.dynamicDims = {{"input0", 0, ""}};
  o.retypeTo = ir::DType::kFloat16;
  CapturedGraph c = capture(mlp.ptr(), forwardOf(mlp), {torch::randn({3, 64})}, o);
  std::string text = printed(c);
  EXPECT_NE(text.find("%input0: f16[s0, 64]"), std::string::npos) << text;
  EXPECT_NE(text.find("f16[s0, 32] = linear("), std::string::npos) << text;
  EXPECT_EQ(text.find("f32["), std::string::npos) << text;
}

// Note [Precision] and Note [Tracing in float32]: with casts at the boundary, float32 inputs and
// outputs stay float32 around a float16 graph; torch.finfo(float32).min becomes float16's, so a
// fully masked row stays finite (cast as a number it would be -inf, and the softmax NaN), a fill
// of it too (Note [Fills]); and an eager op's float32 dtype argument names float16.
TEST(Capture, RetypeWithCastsAtTheBoundary) {
  torch::jit::Module m("Net");
  m.register_parameter("w", torch::randn({16}), false);
  m.define(R"(
def forward(self, x, mask):
    bias = (1.0 - mask) * (-3.4028234663852886e38)
    low = torch.where(mask > 0.5, torch.zeros_like(mask), torch.full_like(mask, -3.4028234663852886e38))
    p = torch.softmax(x * self.w + bias, -1) + torch.softmax(x + low, -1)
    return p, torch.cumsum(x, dim=1, dtype=6)
)");
  m.eval();
  CaptureOptions o;
  o.inputNames = {"x", "mask"};
  o.dynamicDims = {{"x", 0, "n"}, {"mask", 0, "n"}};
  o.retypeTo = ir::DType::kFloat16;
  o.castAtBoundary = true;
  torch::NoGradGuard ng;
  CapturedGraph c = capture(m, {torch::randn({3, 16}), torch::ones({3, 16})}, o);
  const std::string text = printed(c);
  EXPECT_NE(text.find("%x: f32[n, 16]"), std::string::npos) << text;
  EXPECT_NE(text.find("f16[n, 16] = cast(%x)"), std::string::npos) << text;
  EXPECT_NE(text.find("-65504"), std::string::npos) << text;
  EXPECT_NE(text.find("= fill() {value = -65504.0}"), std::string::npos) << text;
  EXPECT_EQ(text.find("3.40282"), std::string::npos) << text;
  EXPECT_NE(text.find("%w: f16[16] param"), std::string::npos) << text;
  ASSERT_EQ(c.graph->outputs().size(), 2u);
  for (const ir::Value* out : c.graph->outputs()) EXPECT_EQ(out->dtype(), ir::DType::kFloat32);
  ASSERT_EQ(c.eagerCalls.size(), 1u) << text;  // the cumsum
  EXPECT_EQ(c.retypedTo, ir::DType::kFloat16);

  // Run it as Program::build would bind it: the param converted to float16.
  at::Tensor x = torch::randn({4, 16});
  at::Tensor mask = torch::ones({4, 16});
  mask[0].zero_();  // a fully masked row
  c.params[0] = c.params[0].to(torch::kHalf);
  std::vector<at::Tensor> got = evalCaptured(c, {x, mask});
  ASSERT_EQ(got.size(), 2u);
  auto want = m.forward({x, mask}).toTuple();
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(got[i].scalar_type(), torch::kFloat) << i;
    EXPECT_TRUE(torch::isfinite(got[i]).all().item<bool>()) << i << ": " << got[i];
  }
  EXPECT_TRUE(
      torch::allclose(got[0].slice(0, 1), want->elements()[0].toTensor().slice(0, 1), 1e-2, 1e-3));
  EXPECT_TRUE(torch::allclose(got[1], want->elements()[1].toTensor(), 1e-2, 1e-2));
}

TEST(Capture, BadDynamicDimIsAUserError) {
  Mlp mlp;
  CaptureOptions o;
  o.dynamicDims = {{"nope", 0, ""}};
  EXPECT_THROW(capture(mlp.ptr(), forwardOf(mlp), {torch::randn({3, 64})}, o), UserError);
  o.dynamicDims = {{"input0", 0, ""}};
  EXPECT_THROW(capture(mlp.ptr(), forwardOf(mlp), {torch::randn({1, 64})}, o), UserError);
}

TEST(Capture, LoweringTableHasARulePerLoweredOp) {
  // Note [Lowering table]: ops of each family file (pointwise, reductions, views, library) have a
  // rule; an op without one runs eagerly, and the report says so.
  const std::vector<std::vector<std::string>> families = {
      {"aten::relu", "aten::add", "aten::to", "aten::dropout", "aten::clamp", "aten::masked_fill",
       "aten::sin", "aten::cos", "aten::__and__", "aten::logical_or"},
      {"aten::softmax", "aten::_log_softmax", "aten::layer_norm", "aten::mean"},
      {"aten::view", "aten::permute", "aten::t", "aten::expand", "aten::slice", "aten::select",
       "aten::cat", "aten::chunk", "aten::split", "aten::unbind"},
      {"aten::linear", "aten::matmul", "aten::addmm", "aten::bmm",
       "aten::scaled_dot_product_attention", "aten::_convolution", "aten::conv2d",
       "aten::batch_norm"},
  };
  for (const auto& ops : families)
    for (const std::string& op : ops) EXPECT_TRUE(hasLoweringRule(op)) << op;
  EXPECT_FALSE(hasLoweringRule("aten::cumsum"));

  torch::jit::Module m("m");
  m.define(R"(
def forward(self, x):
    return torch.cumsum(x, 1) + 1.0
)");
  m.eval();
  CaptureOptions o;
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "n"}};
  CapturedGraph c = capture(m, {torch::randn({3, 5})}, o);
  ASSERT_EQ(c.unsupportedOps, std::vector<std::string>{"aten::cumsum"});
  EXPECT_EQ(c.unsupportedReasons, std::vector<std::string>{"kiln has no lowering for it"});
  EXPECT_EQ(c.eagerNodes.size(), 1u);
  EXPECT_EQ(countOps(c, ir::OpKind::kAdd), 1) << printed(c);
}

TEST(Capture, BoolAndOrLowerToMinimumAndMaximum) {
  // HF attention masks combine bool masks with & and |: on bools they are minimum and maximum, so
  // they fuse. The same ops on integers are bitwise, and stay eager with a reason.
  torch::jit::Module m("m");
  m.define(R"(
def forward(self, x, y):
    a = (x > 0.0) & (y > 0.0)
    b = torch.logical_or(x < -1.0, y < -1.0) | a
    return torch.where(b, x, y)
)");
  m.eval();
  CaptureOptions o;
  o.inputNames = {"x", "y"};
  o.dynamicDims = {{"x", 0, "n"}, {"y", 0, "n"}};
  const torch::Tensor x = torch::randn({4, 6}), y = torch::randn({4, 6});
  CapturedGraph c = capture(m, {x, y}, o);
  EXPECT_TRUE(c.unsupportedOps.empty()) << c.report();
  EXPECT_EQ(countOps(c, ir::OpKind::kMinimum), 1) << printed(c);
  EXPECT_EQ(countOps(c, ir::OpKind::kMaximum), 2) << printed(c);
  const std::vector<at::Tensor> got = evalCaptured(c, {x, y});
  EXPECT_TRUE(torch::equal(got.at(0), m.forward({x, y}).toTensor()));

  torch::jit::Module ints("m");
  ints.define(R"(
def forward(self, x):
    return (x & 6) + 1
)");
  ints.eval();
  CaptureOptions io;
  io.inputNames = {"x"};
  CapturedGraph ci = capture(ints, {torch::arange(8)}, io);
  EXPECT_EQ(ci.unsupportedOps, std::vector<std::string>{"aten::__and__"}) << ci.report();
}

}  // namespace
}  // namespace kiln::jit

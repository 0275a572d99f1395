// Folding eval-mode batchnorm into convolutions (Note [Folding batchnorm into convolutions] and
// Note [Folded params are snapshots] in jit/runtime/fold_conv_bn.h): the rewrite on graphs written
// as text, near misses left alone, the CNN block's plan, and results against eager on the CPU
// (plans run their steps through ATen here), including after weights change in place.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include <c10/core/InferenceMode.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

#include "tests/support/file_check.h"

#include "codegen/emit_cuda.h"
#include "jit/capture/capture.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/fold_conv_bn.h"
#include "jit/runtime/kernel_build.h"
#include "jit/runtime/plan.h"
#include "src/ir/parser.h"
#include "src/ir/printer.h"

namespace {

using kiln::testing::matchesFileCheck;

using kiln::testing::compileOnlySession;
using kiln::testing::expectClose;

// ---------------------------------------------------------------------------------------------
// The rewrite on graphs written as text

// A CapturedGraph over `text` whose params get random tensors (positive where the name says var).
kiln::jit::CapturedGraph capturedFromText(const std::string& text, uint64_t seed = 0) {
  torch::manual_seed(seed);
  kiln::jit::CapturedGraph c;
  c.graph = kiln::ir::parse(text);
  for (const kiln::ir::Value* p : c.graph->params()) {
    const std::string& name = p->producer()->attrs().getString("name");
    std::vector<int64_t> shape;
    for (const kiln::ir::SymDim& d : p->shape()) shape.push_back(d.constant());
    auto t = torch::randn(shape, torch::dtype(kiln::jit::toAtenDType(p->dtype())));
    if (name.find("var") != std::string::npos) t = t.abs() + 0.5;
    c.params.push_back(t);
    c.paramNames.push_back(name);
  }
  return c;
}

std::vector<at::Tensor> eval(const kiln::jit::CapturedGraph& c, const at::Tensor& x) {
  return kiln::jit::evalGraph(*c.graph, {x}, c.params);
}

// The decomposition capture emits for conv2d + BatchNorm2d(8) (Note [Eval batch_norm
// decomposition] in jit/capture/lower.cpp), followed by a relu.
constexpr const char* kConvBnRelu =
    R"(graph(%x: f32[s0, 4, 6, 6], %c.weight: f32[8, 4, 3, 3] param, %c.bias: f32[8] param, %bn.running_mean: f32[8] param, %bn.running_var: f32[8] param, %bn.weight: f32[8] param, %bn.bias: f32[8] param) {
  %eps: f32[] = constant() {value = 1e-05}
  %y = conv2d(%x, %c.weight, %c.bias) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]}
  %m: f32[8, 1, 1] = reshape(%bn.running_mean)
  %v: f32[8, 1, 1] = reshape(%bn.running_var)
  %a = add(%v, %eps)
  %i = rsqrt(%a)
  %s = sub(%y, %m)
  %n = mul(%s, %i)
  %w: f32[8, 1, 1] = reshape(%bn.weight)
  %n2 = mul(%n, %w)
  %b: f32[8, 1, 1] = reshape(%bn.bias)
  %o = add(%n2, %b)
  %r = relu(%o)
  return(%r)
})";

TEST(FoldConvBn, RewritesTheCapturedDecomposition) {
  torch::NoGradGuard ng;
  kiln::jit::CapturedGraph original = capturedFromText(kConvBnRelu);
  kiln::jit::CapturedGraph c = capturedFromText(kConvBnRelu);
  std::vector<at::Tensor> before;
  for (const at::Tensor& t : c.params) before.push_back(t.clone());
  auto folds = kiln::jit::foldConvBatchNorm(c);
  ASSERT_NE(folds, nullptr);
  ASSERT_EQ(folds->folds().size(), 1u);
  EXPECT_EQ(folds->folds()[0].weightName, "c.weight@bn.folded");
  EXPECT_EQ(folds->folds()[0].shiftName, "c.bias@bn.folded");
  EXPECT_FALSE(folds->stale());
  // The printer spells '@' as '_'.
  EXPECT_TRUE(matchesFileCheck(kiln::ir::print(*c.graph), R"(
CHECK: %c.weight_bn.folded: f32[8, 4, 3, 3] param, %c.bias_bn.folded: f32[8, 1, 1] param) {
CHECK-NOT: rsqrt
CHECK-NOT: sub
CHECK-NOT: reshape
CHECK: f32[s0, 8, 6, 6] = conv2d(%x, %c.weight_bn.folded) {dilation = [1, 1], groups = 1, padding = [1, 1], stride = [1, 1]}
CHECK-NEXT: = add(%{{[0-9]+}}, %c.bias_bn.folded)
CHECK-NEXT: = relu(
CHECK-NEXT: return(
)"));
  // Params: the old ones by reference and untouched, the folded ones appended.
  ASSERT_EQ(c.params.size(), before.size() + 2);
  EXPECT_EQ(c.paramNames[before.size()], "c.weight@bn.folded");
  EXPECT_EQ(c.paramNames[before.size() + 1], "c.bias@bn.folded");
  EXPECT_EQ(c.graph->params().size(), c.params.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(c.params[i].equal(before[i]));
  auto x = torch::randn({3, 4, 6, 6});
  expectClose(eval(c, x).at(0), eval(original, x).at(0), 1e-5);
}

TEST(FoldConvBn, AffineFreeBatchNormAfterADepthwiseConv) {
  torch::NoGradGuard ng;
  // BatchNorm2d(affine=false): no weight mul, no bias add. A depthwise conv scales its weight
  // along dim 0 too ([C_out, C_in / groups, kh, kw]).
  const std::string text =
      R"(graph(%x: f32[2, 8, 5, 5], %dw.weight: f32[8, 1, 3, 3] param, %bn.running_mean: f32[8] param, %bn.running_var: f32[8] param) {
  %eps: f32[] = constant() {value = 0.001}
  %y = conv2d(%x, %dw.weight) {dilation = [1, 1], groups = 8, padding = [0, 0], stride = [2, 2]}
  %m: f32[8, 1, 1] = reshape(%bn.running_mean)
  %v: f32[8, 1, 1] = reshape(%bn.running_var)
  %a = add(%v, %eps)
  %i = rsqrt(%a)
  %s = sub(%y, %m)
  %n = mul(%s, %i)
  return(%n)
})";
  kiln::jit::CapturedGraph original = capturedFromText(text, 1);
  kiln::jit::CapturedGraph c = capturedFromText(text, 1);
  ASSERT_NE(kiln::jit::foldConvBatchNorm(c), nullptr);
  EXPECT_TRUE(matchesFileCheck(kiln::ir::print(*c.graph), R"(
CHECK-NOT: rsqrt
CHECK: = conv2d(%x, %dw.weight_bn.folded) {dilation = [1, 1], groups = 8, padding = [0, 0], stride = [2, 2]}
CHECK-NEXT: = add(%{{[0-9]+}}, %dw.bias_bn.folded)
)"));
  auto x = torch::randn({2, 8, 5, 5});
  expectClose(eval(c, x).at(0), eval(original, x).at(0), 1e-5);
}

TEST(FoldConvBn, ChainEndsWhereAnIntermediateIsReadTwice) {
  torch::NoGradGuard ng;
  // The normalized value is also read by the add at the end: the fold covers the conv and the
  // normalization only, and both readers see the folded value; bn.weight stays a mul.
  const std::string text =
      R"(graph(%x: f32[2, 4, 6, 6], %c.weight: f32[8, 4, 3, 3] param, %bn.running_mean: f32[8] param, %bn.running_var: f32[8] param, %bn.weight: f32[8] param) {
  %eps: f32[] = constant() {value = 1e-05}
  %y = conv2d(%x, %c.weight) {dilation = [1, 1], groups = 1, padding = [0, 0], stride = [1, 1]}
  %m: f32[8, 1, 1] = reshape(%bn.running_mean)
  %v: f32[8, 1, 1] = reshape(%bn.running_var)
  %a = add(%v, %eps)
  %i = rsqrt(%a)
  %s = sub(%y, %m)
  %n = mul(%s, %i)
  %w: f32[8, 1, 1] = reshape(%bn.weight)
  %n2 = mul(%n, %w)
  %o = add(%n2, %n)
  return(%o)
})";
  kiln::jit::CapturedGraph original = capturedFromText(text, 2);
  kiln::jit::CapturedGraph c = capturedFromText(text, 2);
  ASSERT_NE(kiln::jit::foldConvBatchNorm(c), nullptr);
  EXPECT_TRUE(matchesFileCheck(kiln::ir::print(*c.graph), R"(
CHECK-NOT: rsqrt
CHECK: = conv2d(%x, %c.weight_bn.folded)
CHECK-NEXT: %{{[0-9]+}}: f32[2, 8, 4, 4] = add(%{{[0-9]+}}, %c.bias_bn.folded)
CHECK: %n2: f32[2, 8, 4, 4] = mul(%{{[0-9]+}}, %w)
CHECK-NEXT: = add(%n2, %{{[0-9]+}})
)"));
  auto x = torch::randn({2, 4, 6, 6});
  expectClose(eval(c, x).at(0), eval(original, x).at(0), 1e-5);
}

// Each graph is one change away from kConvBnRelu; the fold must leave it exactly as it is.
TEST(FoldConvBn, NearMissesAreLeftAlone) {
  struct Case {
    const char* what;
    std::string from, to;
  };
  const std::vector<Case> cases = {
      {"the conv output has another reader", "%r = relu(%o)",
       "%r0 = relu(%o)\n  %r = add(%r0, %y)"},
      {"the conv output is a graph output", "return(%r)", "return(%r, %y)"},
      {"an intermediate is a graph output", "return(%r)", "return(%r, %s)"},
      {"a statistic is broadcast as [1, C, 1, 1]", "%m: f32[8, 1, 1] = reshape(%bn.running_mean)",
       "%m: f32[1, 8, 1, 1] = reshape(%bn.running_mean)"},
      {"the variance is not a param", "%v: f32[8, 1, 1] = reshape(%bn.running_var)",
       "%va = abs(%bn.running_var)\n  %v: f32[8, 1, 1] = reshape(%va)"},
      {"operands in another order than capture's", "%n = mul(%s, %i)", "%n = mul(%i, %s)"},
      {"rsqrt replaced by sqrt", "%i = rsqrt(%a)", "%i = sqrt(%a)"},
      {"eps is a tensor", "%a = add(%v, %eps)", "%a = add(%v, %m)"},
      {"the conv weight is computed", "%y = conv2d(%x, %c.weight, %c.bias)",
       "%cw = neg(%c.weight)\n  %y = conv2d(%x, %cw, %c.bias)"},
  };
  for (const Case& k : cases) {
    std::string text = kConvBnRelu;
    size_t at = text.find(k.from);
    ASSERT_NE(at, std::string::npos) << k.what;
    text.replace(at, k.from.size(), k.to);
    kiln::jit::CapturedGraph c = capturedFromText(text);
    const std::string printed = kiln::ir::print(*c.graph);
    const size_t numParams = c.params.size();
    EXPECT_EQ(kiln::jit::foldConvBatchNorm(c), nullptr) << k.what;
    EXPECT_EQ(kiln::ir::print(*c.graph), printed) << k.what;
    EXPECT_EQ(c.params.size(), numParams) << k.what;
  }
  // A param tensor the fold cannot read as the IR says (integer, where the IR has f32).
  kiln::jit::CapturedGraph c = capturedFromText(kConvBnRelu);
  c.params[4] = torch::ones({8}, torch::kInt64);  // bn.running_var
  const std::string printed = kiln::ir::print(*c.graph);
  EXPECT_EQ(kiln::jit::foldConvBatchNorm(c), nullptr);
  EXPECT_EQ(kiln::ir::print(*c.graph), printed);
  // An inference tensor has no version counter, but is folded: Note [Folded params are snapshots].
  kiln::jit::CapturedGraph inf = capturedFromText(kConvBnRelu);
  {
    c10::InferenceMode im;
    inf.params[4] = torch::rand({8}) + 0.5;  // bn.running_var
  }
  EXPECT_NE(kiln::jit::foldConvBatchNorm(inf), nullptr);
}

// ---------------------------------------------------------------------------------------------
// Real modules

torch::jit::Module cnnBlock() {
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/cnn_block.pt");
  m.eval();
  return m;
}

// optimize() on the shared compile-only session, the batch dim dynamic.
kiln::jit::OptimizedModule optimizedOnCompileOnlySession(torch::jit::Module& m) {
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  opt.dynamicDims = {{"input0", 0, ""}};
  return kiln::jit::optimize(m, opt);
}

at::Tensor namedTensor(const torch::jit::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters())
    if (p.name == name) return p.value;
  for (const auto& b : m.named_buffers())
    if (b.name == name) return b.value;
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

kiln::jit::CapturedGraph captureCnnBlock(torch::jit::Module& m, torch::Dtype dtype) {
  kiln::jit::CaptureOptions o;
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "batch"}};
  return kiln::jit::capture(m, {torch::randn({3, 64, 8, 8}).to(dtype)}, o);
}

std::vector<std::vector<kiln::ir::OpKind>> groupKinds(const kiln::jit::Program& p) {
  std::vector<std::vector<kiln::ir::OpKind>> out;
  for (size_t k = 0; k < p.numKernels(); ++k) {
    out.emplace_back();
    for (const kiln::ir::Node* n : p.group(k).nodes) out.back().push_back(n->kind());
  }
  return out;
}

// After the fold, each conv's shift, the residual and the relu move into cuDNN's epilogue
// (src/passes/library_epilogues.h): the block is two fused convs, each reading its shift as a [C]
// view of the folded [C, 1, 1] param.
TEST(FoldConvBn, CnnBlockPlanIsTwoFusedConvs) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  auto program = kiln::jit::Program::build(captureCnnBlock(m, torch::kFloat), compileOnlySession());
  ASSERT_NE(program->foldedParams(), nullptr);
  EXPECT_EQ(program->foldedParams()->folds().size(), 2u);
  EXPECT_FALSE(program->foldedParamsStale());
  std::vector<const kiln::ir::Node*> convs;
  for (const auto& n : program->graph().nodes()) {
    EXPECT_NE(n->kind(), kiln::ir::OpKind::kRsqrt);
    EXPECT_NE(n->kind(), kiln::ir::OpKind::kSub);
    if (n->kind() == kiln::ir::OpKind::kConv2d) convs.push_back(n.get());
  }
  EXPECT_TRUE(groupKinds(*program).empty());
  std::vector<std::string> steps;
  for (const auto& s : program->partition().steps)
    steps.push_back(s.kind == kiln::partition::StepKind::kFusion
                        ? "fusion"
                        : std::string(kiln::ir::toString(s.node->kind())));
  EXPECT_EQ(steps, (std::vector<std::string>{"reshape", "conv2d", "reshape", "conv2d"}));
  ASSERT_EQ(convs.size(), 2u);
  for (const kiln::ir::Node* c : convs) EXPECT_EQ(c->attrs().getString("activation"), "relu");
  // conv1: x, W', shift; conv2: y, W'', shift, and the block's input as the residual.
  EXPECT_EQ(convs[0]->inputs().size(), 3u);
  ASSERT_EQ(convs[1]->inputs().size(), 4u);
  EXPECT_EQ(convs[1]->input(3), program->graph().inputs().at(0));
}

// Note [Channels-last convolutions] off the GPU: the layout choice says why it keeps NCHW, the
// input a conv reads (conv1's input, conv2's residual) is listed once for the entry conversion, and
// folded weights can be stored channels-last and stay so when a refresh rewrites them.
TEST(FoldConvBn, ConvLayoutChoiceAndChannelsLastFoldedWeights) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  auto program = kiln::jit::Program::build(captureCnnBlock(m, torch::kFloat), compileOnlySession());
  EXPECT_FALSE(program->convLayout().channelsLast);
  EXPECT_EQ(program->convLayout().reason, "NCHW (2 convs, weights not on CUDA)");
  EXPECT_EQ(kiln::jit::convEntryInputs(program->graph()),
            std::vector<int>{program->graph().inputs().at(0)->id()});
  for (kiln::ConvLayout forced : {kiln::ConvLayout::kChannelsLast, kiln::ConvLayout::kContiguous}) {
    kiln::Options o = kiln::testing::compileOnlyOptions();
    o.convLayout = forced;
    kiln::Session session(o, kiln::testing::noEnvironment());
    auto p = kiln::jit::Program::build(captureCnnBlock(m, torch::kFloat), session);
    EXPECT_FALSE(p->convLayout().channelsLast) << "channels-last is for CUDA only";
    EXPECT_EQ(p->convLayout().reason, forced == kiln::ConvLayout::kContiguous
                                          ? "NCHW (KILN_CONV_LAYOUT=contiguous)"
                                          : "NCHW (2 convs, weights not on CUDA)");
  }
  // A program without convs says nothing about layouts.
  torch::jit::Module plain("P");
  plain.define("def forward(self, x):\n    return torch.relu(x) + 1.0\n");
  kiln::jit::CaptureOptions co;
  auto relu = kiln::jit::Program::build(kiln::jit::capture(plain, {torch::randn({4, 4})}, co),
                                        compileOnlySession());
  EXPECT_EQ(relu->convLayout().reason, "");

  kiln::jit::CapturedGraph c = captureCnnBlock(m, torch::kFloat);
  auto folds = kiln::jit::foldConvBatchNorm(c, at::MemoryFormat::ChannelsLast);
  ASSERT_NE(folds, nullptr);
  for (const auto& f : folds->folds()) {
    EXPECT_TRUE(f.weight.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_FALSE(f.weight.is_contiguous());
  }
  const at::Tensor before = folds->folds()[0].weight.clone();
  namedTensor(m, "conv1.weight").mul_(2);
  EXPECT_EQ(folds->refresh(), 1);
  const at::Tensor& after = folds->folds()[0].weight;
  EXPECT_TRUE(after.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(at::allclose(after, before * 2, 1e-5, 1e-6));
  namedTensor(m, "conv1.weight").div_(2);
}

TEST(FoldConvBn, CnnBlockMatchesEager) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  const at::Tensor var = namedTensor(m, "bn1.running_var");
  const at::Tensor varBefore = var.clone();
  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  opt.inputNames = {"x"};
  opt.dynamicDims = {{"x", 0, "batch"}};
  auto fast = kiln::jit::optimize(m, opt);
  for (int64_t batch : {3, 4, 1, 6}) {
    std::vector<torch::IValue> in{torch::randn({batch, 64, 8, 8})};
    expectClose(fast.forward(in).toTensor(), m.forward(in).toTensor(), 1e-4);
  }
  const std::string explain = fast.explain();
  // The folded conv, with the shift and the relu in cuDNN's epilogue (library_epilogues.h).
  EXPECT_NE(explain.find("conv2d(%x, %conv1.weight_bn1.folded, %"), std::string::npos) << explain;
  EXPECT_NE(explain.find("{activation = \"relu\""), std::string::npos) << explain;
  EXPECT_EQ(explain.find("rsqrt"), std::string::npos) << explain;
  EXPECT_TRUE(var.equal(varBefore)) << "the module's tensors are never written";
}

// A C++ frontend CNN: convs with bias, a depthwise conv, a batchnorm without affine params.
struct NetImpl : torch::nn::Module {
  NetImpl() {
    namespace nn = torch::nn;
    c1 = register_module("c1", nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1)));
    b1 = register_module("b1", nn::BatchNorm2d(8));
    dw = register_module("dw", nn::Conv2d(nn::Conv2dOptions(8, 8, 3).groups(8).stride(2)));
    b2 = register_module("b2", nn::BatchNorm2d(nn::BatchNormOptions(8).affine(false)));
    torch::NoGradGuard ng;
    for (auto* bn : {&b1, &b2}) {
      (*bn)->running_mean.uniform_(-0.5, 0.5);
      (*bn)->running_var.uniform_(0.5, 2.0);
    }
    b1->weight.uniform_(0.5, 1.5);
    b1->bias.uniform_(-0.5, 0.5);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = torch::relu(b1->forward(c1->forward(x)));
    return torch::sigmoid(b2->forward(dw->forward(y)));
  }
  torch::nn::Conv2d c1{nullptr}, dw{nullptr};
  torch::nn::BatchNorm2d b1{nullptr}, b2{nullptr};
};
TORCH_MODULE(Net);

TEST(FoldConvBn, ConvWithBiasDepthwiseAndAffineFree) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  Net net;
  net->eval();
  kiln::jit::CaptureOptions o;
  o.dynamicDims = {{"input0", 0, ""}};
  kiln::jit::CapturedGraph c = kiln::jit::capture(
      net.ptr(),
      [net](const std::vector<c10::IValue>& in) mutable -> c10::IValue {
        return net->forward(in.at(0).toTensor());
      },
      {torch::randn({3, 3, 9, 9})}, o);
  auto program = kiln::jit::Program::build(std::move(c), compileOnlySession());
  ASSERT_NE(program->foldedParams(), nullptr);
  EXPECT_EQ(program->foldedParams()->toString(),
            "c1.weight@b1.folded + c1.bias@b1.folded, dw.weight@b2.folded + dw.bias@b2.folded");

  kiln::jit::Options opt;
  opt.session = &compileOnlySession();
  opt.dynamicDims = {{"input0", 0, ""}};
  auto fast = kiln::jit::optimize(net, opt);
  for (int64_t batch : {3, 5}) {
    auto x = torch::randn({batch, 3, 9, 9});
    expectClose(fast.forward({x}).toTensor(), net->forward(x), 1e-5);
  }
}

TEST(FoldConvBn, TrainingModeBatchNormIsNotFolded) {
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  namespace nn = torch::nn;
  // momentum 0: training mode normalizes with batch statistics and leaves the running ones as they
  // are, so eager and kiln can run the same inputs. It still writes its buffers in place (the
  // running stats, num_batches_tracked += 1), which a plan would not: the module runs as itself
  // (Note [Modules that write their inputs] in jit/capture/capture.cpp), so nothing is folded.
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(3, 8, 3)),
                     nn::BatchNorm2d(nn::BatchNormOptions(8).momentum(0.0)), nn::ReLU());
  net->train();
  kiln::jit::CaptureOptions o;
  auto forward = [net](const std::vector<c10::IValue>& in) mutable -> c10::IValue {
    return net->forward(in.at(0).toTensor());
  };
  try {
    kiln::jit::capture(net.ptr(), forward, {torch::randn({2, 3, 8, 8})}, o);
    FAIL() << "a module that writes its buffers was captured";
  } catch (const kiln::Unsupported& e) {
    EXPECT_NE(std::string(e.what()).find("writes into its tensor"), std::string::npos) << e.what();
  }
  const at::Tensor tracked = net[1]->as<nn::BatchNorm2d>()->num_batches_tracked;
  kiln::Options lenient = kiln::testing::compileOnlyOptions();
  lenient.strict = false;  // the fallback is the point here
  kiln::Session session(lenient, kiln::testing::noEnvironment());
  kiln::jit::Options opt;
  opt.session = &session;
  auto fast = kiln::jit::optimize(net, opt);
  auto x = torch::randn({2, 3, 8, 8});
  const int64_t before = tracked.item<int64_t>();
  torch::Tensor got = fast.forward({x}).toTensor();
  EXPECT_EQ(tracked.item<int64_t>(), before + 1);  // the module ran, once
  expectClose(got, net->forward(x), 1e-5);
  EXPECT_NE(fast.explain().find("writes into its tensor"), std::string::npos) << fast.explain();
}

TEST(FoldConvBn, Float16ModuleFoldsInFloat32) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  m.to(torch::kHalf);  // CPU LibTorch runs half convs, so no retyping is needed
  auto program = kiln::jit::Program::build(captureCnnBlock(m, torch::kHalf), compileOnlySession());
  ASSERT_NE(program->foldedParams(), nullptr);
  const kiln::jit::ConvBnFold& f = program->foldedParams()->folds().at(0);
  EXPECT_EQ(f.weightName, "conv1.weight@bn1.folded");
  ASSERT_EQ(f.weight.scalar_type(), torch::kHalf);
  ASSERT_EQ(f.shift.scalar_type(), torch::kHalf);
  // The reference in float64 from the float16 tensors: W' and shift' are that, rounded once.
  auto d = [](const at::Tensor& t) { return t.to(torch::kDouble); };
  at::Tensor scale = (d(f.var) + f.eps).rsqrt() * d(f.bnWeight);
  at::Tensor w = d(f.convWeight) * scale.reshape({64, 1, 1, 1});
  at::Tensor shift = (d(f.bnBias) - d(f.mean) * scale).reshape({64, 1, 1});
  auto halfUlp = [](const at::Tensor& ref) { return ref.abs() * (1.0 / 2048) + 1e-7; };
  EXPECT_TRUE(((d(f.weight) - w).abs() <= halfUlp(w) * 1.01).all().item<bool>());
  EXPECT_TRUE(((d(f.shift) - shift).abs() <= halfUlp(shift) * 1.01).all().item<bool>());

  auto fast = optimizedOnCompileOnlySession(m);
  std::vector<torch::IValue> in{torch::randn({2, 64, 8, 8}).to(torch::kHalf)};
  at::Tensor want = m.forward(in).toTensor();
  at::Tensor got = fast.forward(in).toTensor();
  ASSERT_EQ(got.scalar_type(), torch::kHalf);
  // Eager rounds the conv output and each batchnorm step to float16; the fold rounds W' instead.
  expectClose(got, want, 0.02 * want.abs().max().item<double>());
}

// Note [Fold kernels compiled ahead]: a session with an arch but no driver (kiln-warmup --arch on
// a machine without a GPU) runs no fold kernel, but puts into the kernel cache the ones a GPU
// process will look up: the tensors' own dtypes, and for 16-bit folds of float32 tensors (a float16
// model traced in float32 on the CPU) the all-16-bit text too.
TEST(FoldConvBn, FoldKernelsAreCompiledAheadWithoutADriver) {
  torch::NoGradGuard ng;
  kiln::Options o = kiln::testing::compileOnlyOptions();  // foldKernel on: the default
  o.backgroundCompile = false;  // as kiln-warmup: compiled now
  kiln::Session session(o, kiln::testing::noEnvironment());
  if (session.driver() != nullptr)
    GTEST_SKIP() << "a CUDA driver is loaded: fold kernels run here (GpuFold.* cover that)";
  using kiln::ir::DType;
  auto cached = [&](DType w, DType p, DType out, double eps) {
    const kiln::codegen::KernelSource src =
        kiln::codegen::emitConvBnFold(w, p, out, static_cast<float>(eps));
    return session.kernelCache().get(kiln::jit::kernelKey(src.source, "sm_90")).has_value();
  };
  {
    auto m = cnnBlock();
    auto program = kiln::jit::Program::build(captureCnnBlock(m, torch::kFloat), session);
    ASSERT_NE(program->foldedParams(), nullptr);
    EXPECT_EQ(program->foldedParams()->kernelFolds(), 0u);  // nothing ran a kernel
    const double eps = program->foldedParams()->folds().at(0).eps;
    EXPECT_TRUE(cached(DType::kFloat32, DType::kFloat32, DType::kFloat32, eps));
    EXPECT_FALSE(cached(DType::kFloat16, DType::kFloat16, DType::kFloat16, eps));
  }
  {
    // Traced in float32 and retyped to float16 (Note [Tracing in float32]): the tensors stay
    // float32.
    auto m = cnnBlock();
    kiln::jit::CaptureOptions co;
    co.inputNames = {"x"};
    co.dynamicDims = {{"x", 0, "batch"}};
    co.retypeTo = DType::kFloat16;
    auto program = kiln::jit::Program::build(
        kiln::jit::capture(m, {torch::randn({3, 64, 8, 8})}, co), session);
    ASSERT_NE(program->foldedParams(), nullptr);
    const double eps = program->foldedParams()->folds().at(0).eps;
    EXPECT_TRUE(cached(DType::kFloat32, DType::kFloat32, DType::kFloat16, eps));
    EXPECT_TRUE(cached(DType::kFloat16, DType::kFloat16, DType::kFloat16, eps));
  }
  // KILN_FOLD_KERNEL=off: nothing is compiled ahead.
  kiln::Options off = kiln::testing::compileOnlyOptions();
  off.foldKernel = false;
  off.backgroundCompile = false;
  kiln::Session offSession(off, kiln::testing::noEnvironment());
  auto m = cnnBlock();
  auto program = kiln::jit::Program::build(captureCnnBlock(m, torch::kFloat), offSession);
  const double eps = program->foldedParams()->folds().at(0).eps;
  const kiln::codegen::KernelSource src = kiln::codegen::emitConvBnFold(
      DType::kFloat32, DType::kFloat32, DType::kFloat32, static_cast<float>(eps));
  EXPECT_FALSE(offSession.kernelCache().get(kiln::jit::kernelKey(src.source, "sm_90")).has_value());
}

// Note [Folded params are snapshots]
TEST(FoldConvBn, InPlaceUpdatesAfterOptimizeAreSeen) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  auto fast = optimizedOnCompileOnlySession(m);
  auto x = torch::randn({3, 64, 8, 8});
  auto check = [&](const char* what) {
    SCOPED_TRACE(what);
    expectClose(fast.forward({x}).toTensor(), m.forward({x}).toTensor(), 1e-4);
  };
  check("before any update");
  namedTensor(m, "bn1.running_var").mul_(2);
  check("bn1.running_var.mul_(2)");
  namedTensor(m, "conv2.weight").add_(0.1);
  check("conv2.weight.add_(0.1)");
  namedTensor(m, "bn2.bias").fill_(0.25);
  namedTensor(m, "bn2.running_mean").zero_();
  check("two tensors of bn2");
  // New data under the same tensor (what module.to() and load_state_dict(strict) may do).
  at::Tensor w = namedTensor(m, "bn1.weight");
  w.set_data(w.detach().clone() * -1);
  check("bn1.weight.set_data");
  // Folds computed under InferenceMode are still refreshed outside it.
  auto fresh = cnnBlock();
  auto fast2 = optimizedOnCompileOnlySession(fresh);
  {
    c10::InferenceMode im;
    fast2.forward({x});
  }
  namedTensor(fresh, "bn2.running_var").add_(1);
  expectClose(fast2.forward({x}).toTensor(), fresh.forward({x}).toTensor(), 1e-4);
}

// A module loaded under InferenceMode has inference tensors, which have no version counter: they
// are folded all the same, and the staleness check does not ask them for one (_version() throws).
TEST(FoldConvBn, ModuleLoadedInInferenceModeFoldsAndRuns) {
  c10::InferenceMode im;
  auto m = cnnBlock();
  ASSERT_TRUE(namedTensor(m, "bn1.running_var").is_inference());
  auto fast = optimizedOnCompileOnlySession(m);
  auto x = torch::randn({3, 64, 8, 8});
  expectClose(fast.forward({x}).toTensor(), m.forward({x}).toTensor(), 1e-4);
  expectClose(fast.forward({x}).toTensor(), m.forward({x}).toTensor(), 1e-4);
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u);
  EXPECT_EQ(fast.explain().find("rsqrt"), std::string::npos) << "the batchnorms were not folded";
  // A new data pointer under an inference tensor is seen.
  at::Tensor w = namedTensor(m, "conv2.weight");
  w.set_data(w.detach().clone() * -1);
  expectClose(fast.forward({x}).toTensor(), m.forward({x}).toTensor(), 1e-4);
}

// Note [Derived params shared by families]: batch 1 is a guard family of its own, with its own
// Program; both bind one copy of the folded weights, and a change in place reaches both.
TEST(FoldConvBn, GuardFamiliesShareOneCopyOfTheFolds) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  auto fast = optimizedOnCompileOnlySession(m);
  auto check = [&](int64_t batch, const char* what) {
    SCOPED_TRACE(what);
    auto x = torch::randn({batch, 64, 8, 8});
    expectClose(fast.forward({x}).toTensor(), m.forward({x}).toTensor(), 1e-4);
  };
  check(3, "batch 3");
  // Two convs of 64 x 64 x 3 x 3, each W' and a shift' of 64, float32.
  constexpr uint64_t kOneCopy = 2 * (64 * 64 * 3 * 3 + 64) * sizeof(float);
  EXPECT_EQ(fast.stats().derivedParamBytes, kOneCopy);
  check(1, "batch 1");
  EXPECT_EQ(fast.stats().familiesAlive, 2u) << fast.stats().toString();
  EXPECT_EQ(fast.stats().derivedParamBytes, kOneCopy) << fast.stats().toString();
  namedTensor(m, "bn1.running_var").mul_(3);
  check(1, "batch 1 after bn1.running_var changed in place");
  check(3, "batch 3 after bn1.running_var changed in place");
  namedTensor(m, "conv2.weight").add_(0.1);
  check(3, "batch 3 after conv2.weight changed in place");
  check(1, "batch 1 after conv2.weight changed in place");
}

TEST(FoldConvBn, ConcurrentCallersAfterAnUpdateGetNewResults) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  auto fast = optimizedOnCompileOnlySession(m);
  auto x = torch::randn({2, 64, 8, 8});
  fast.forward({x});
  namedTensor(m, "bn2.running_var").mul_(3);
  namedTensor(m, "bn1.running_mean").add_(0.5);
  const at::Tensor want = m.forward({x}).toTensor();
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      torch::NoGradGuard g;
      for (int i = 0; i < 3; ++i)
        if (!torch::allclose(fast.forward({x}).toTensor(), want, 1e-4, 1e-4)) bad++;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(FoldConvBn, ProgramReportsStalenessAndPlanRunRefreshes) {
  torch::NoGradGuard ng;
  auto m = cnnBlock();
  auto plan = kiln::jit::Plan::build(captureCnnBlock(m, torch::kFloat), "", compileOnlySession());
  const kiln::jit::Program& program = *plan->program();
  ASSERT_NE(program.foldedParams(), nullptr);
  const at::Tensor folded = program.foldedParams()->folds().at(0).weight;
  const at::Tensor snapshot = folded.clone();
  const void* data = folded.const_data_ptr();
  EXPECT_FALSE(program.foldedParamsStale());
  auto x = torch::randn({4, 64, 8, 8});
  expectClose(plan->run({x}).at(0), m.forward({x}).toTensor(), 1e-4);
  namedTensor(m, "bn1.running_var").mul_(4);
  EXPECT_TRUE(program.foldedParamsStale());
  EXPECT_TRUE(folded.equal(snapshot)) << "nothing is recomputed before a run needs it";
  expectClose(plan->run({x}).at(0), m.forward({x}).toTensor(), 1e-4);
  EXPECT_FALSE(program.foldedParamsStale());
  // Recomputed in place (W' / 2: rsqrt(4 var) = rsqrt(var) / 2, up to eps).
  EXPECT_EQ(folded.const_data_ptr(), data);
  expectClose(folded, snapshot / 2, 1e-4);
  EXPECT_EQ(program.foldedParams()->refresh(), 0);
}

}  // namespace

// Note [Never worse than eager] and Note [Run-time scalars] on the CPU: what kiln cannot capture or
// run falls back to the module itself (counted, explained, never a wrong result), KILN_STRICT
// turns that back into an error, sizes computed by the traced code follow each call, and bad user
// input is still a UserError.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

namespace {

using kiln::testing::noEnvironment;

// No compile target: every step runs through ATen. `strict` as in Options::strict.
kiln::Session& session(bool strict) {
  static kiln::Session* lenient = nullptr;
  static kiln::Session* strictOne = nullptr;
  kiln::Session*& s = strict ? strictOne : lenient;
  if (s == nullptr) {
    kiln::Options o;
    o.diskCache = false;
    o.tune = kiln::TuneMode::kOff;
    o.strict = strict;
    s = new kiln::Session(o, noEnvironment());
  }
  return *s;
}

kiln::jit::Options optionsFor(bool strict, std::vector<kiln::jit::DynamicDim> dims = {}) {
  kiln::jit::Options o;
  o.session = &session(strict);
  o.inputNames = {"x"};
  o.dynamicDims = std::move(dims);
  return o;
}

void expectSame(const torch::Tensor& got, const torch::Tensor& want) {
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(torch::allclose(got, want, 1e-6, 1e-6)) << got << "\nvs\n" << want;
}

torch::jit::Module scripted(const std::string& source) {
  torch::jit::Module m("m");
  m.define(source);
  m.eval();
  return m;
}

// `m` of one [batch, seq] input, optimized in a strict session with both dims dynamic: equal to
// the module at the captured sizes and two new ones, from one capture.
kiln::jit::OptimizedModule matchesAtThreeSizes(torch::jit::Module& m) {
  auto fast =
      kiln::jit::optimize(m, optionsFor(/*strict=*/true, {{"x", 0, "batch"}, {"x", 1, "seq"}}));
  for (auto [b, n] : std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {2, 16}, {5, 9}}) {
    torch::Tensor x = torch::randn({b, n});
    expectSame(fast.forward({x}).toTensor(), m.forward({x}).toTensor());
  }
  EXPECT_EQ(fast.stats().captures, 1u) << fast.explain();
  return fast;
}

TEST(Fallback, ControlFlowRunsTheModule) {
  torch::NoGradGuard ng;
  // Tracing would record one branch; kiln must not answer the other call with it.
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    if bool(x.sum() > 0):
        return x * 2.0
    return x - 1.0
)");
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/false));
  torch::Tensor pos = torch::ones({2, 3});
  torch::Tensor neg = -torch::ones({2, 3});
  expectSame(fast.forward({pos}).toTensor(), pos * 2.0);
  expectSame(fast.forward({neg}).toTensor(), neg - 1.0);
  kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.eagerFallbacks, 1u);
  EXPECT_EQ(st.eagerCalls, 2u);
  EXPECT_EQ(st.captures, 0u) << "nothing is traced";
  std::string explain = fast.explain();
  EXPECT_NE(explain.find("runs eagerly (as the module itself"), std::string::npos) << explain;
  EXPECT_NE(explain.find("control flow (prim::If"), std::string::npos) << explain;

  auto strict = kiln::jit::optimize(m, optionsFor(/*strict=*/true));
  EXPECT_THROW(strict.forward({pos}), kiln::Unsupported);
}

TEST(Fallback, ControlFlowInASubmoduleRunsTheModule) {
  torch::NoGradGuard ng;
  // controlFlowIn scans every module's methods before inlining (Note [First call breakdown]): a
  // branch inside a child's forward counts as much as one in the root's.
  torch::jit::Module child("child");
  child.define(R"(
def forward(self, x):
    if bool(x.sum() > 0):
        return x * 2.0
    return x - 1.0
)");
  torch::jit::Module m("m");
  m.register_module("child", child);
  m.define(R"(
def forward(self, x):
    return self.child.forward(x) + 1.0
)");
  m.eval();
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/false));
  torch::Tensor neg = -torch::ones({2, 3});
  expectSame(fast.forward({neg}).toTensor(), neg);
  EXPECT_EQ(fast.stats().eagerFallbacks, 1u);
  EXPECT_NE(fast.explain().find("control flow (prim::If"), std::string::npos) << fast.explain();
}

TEST(Fallback, ABranchOnAConstantIsNotControlFlow) {
  torch::NoGradGuard ng;
  // The scan finds the prim::If; constant propagation then removes it, so kiln captures.
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    if 2 > 1:
        return x * 2.0
    return x - 1.0
)");
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/true));
  torch::Tensor x = torch::randn({2, 3});
  expectSame(fast.forward({x}).toTensor(), x * 2.0);
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u);
  EXPECT_EQ(fast.stats().captures, 1u);
}

TEST(Fallback, RunTimeSizesFollowEachCall) {
  torch::NoGradGuard ng;
  // Sizes read with x.size() feed new_ones, arange, view and int arithmetic: captured at 3x7, they
  // must be recomputed for 2x16 and 5x9, not fixed at the example (Note [Run-time scalars]).
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    b = x.size(0)
    n = x.size(1)
    ones = x.new_ones([b, n])
    pos = torch.arange(n) * 1.0
    y = (x + ones * pos).view(b * n)
    return y[: n * b - 1] * 2.0 + torch.full([b * n - 1], 0.5)
)");
  auto fast = matchesAtThreeSizes(m);
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u);
}

// XLNet's relative positions: arange(klen, -qlen, -1.0) has 2 * seq elements. A step of -1 (int
// or float) gives a symbolic length; it was left at the probe's concrete size, so every other
// sequence length failed its plan and ran eagerly.
TEST(Fallback, ArangeWithANegativeStepHasASymbolicLength) {
  torch::NoGradGuard ng;
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    n = x.size(1)
    pos = torch.arange(n, -n, -1.0)
    back = torch.arange(n, 0, -1)
    return x.sum(1, keepdim=True) + pos[None, :].sum(1, keepdim=True) + back.sum() * 1.0
)");
  auto fast = matchesAtThreeSizes(m);
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << fast.explain();
  EXPECT_NE(fast.explain().find("[2*seq]"), std::string::npos) << fast.explain();
}

TEST(Fallback, DataDependentShapeFallsBackForItsSignature) {
  torch::NoGradGuard ng;
  // nonzero's row count depends on the data: the second call's shape differs from the captured
  // one at the same guard signature, the plan notices, and the module answers from then on.
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    return torch.nonzero(x > 0.0).sum(0) + 1
)");
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/false));
  torch::Tensor a = torch::tensor({{1.0, -1.0, 2.0}, {3.0, -4.0, 5.0}});
  torch::Tensor b = torch::tensor({{1.0, -1.0, -2.0}, {3.0, -4.0, -5.0}});
  expectSame(fast.forward({a}).toTensor(), m.forward({a}).toTensor());
  expectSame(fast.forward({b}).toTensor(), m.forward({b}).toTensor());
  expectSame(fast.forward({b}).toTensor(), m.forward({b}).toTensor());
  kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.eagerFallbacks, 1u) << fast.explain();
  EXPECT_EQ(st.eagerCalls, 2u);
  EXPECT_NE(fast.explain().find("its plan failed"), std::string::npos) << fast.explain();

  auto strict = kiln::jit::optimize(m, optionsFor(/*strict=*/true));
  strict.forward({a});
  EXPECT_ANY_THROW(strict.forward({b}));
}

TEST(Fallback, BrokenSizeAssumptionRunsThatCallEagerly) {
  torch::NoGradGuard ng;
  // buf[:n] of an 8-element buffer: eager clamps n > 8, kiln's slice assumes n <= 8
  // (Note [Size assumptions]), so a call with n = 11 runs eagerly, and n = 6 runs the plan again.
  torch::jit::Module m("m");
  m.register_buffer("buf", torch::arange(8, torch::kFloat));
  m.define(R"(
def forward(self, x):
    return x + self.buf[: x.size(1)].sum()
)");
  m.eval();
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/false, {{"x", 1, "seq"}}));
  for (int64_t n : {5, 11, 6}) {
    torch::Tensor x = torch::randn({2, n});
    expectSame(fast.forward({x}).toTensor(), m.forward({x}).toTensor());
  }
  kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.eagerCalls, 1u) << fast.explain();
  EXPECT_EQ(st.eagerFallbacks, 0u) << "a broken assumption gives up on that call only";
  EXPECT_NE(fast.explain().find("assumes slice end"), std::string::npos) << fast.explain();
}

// Note [Indexing by aranges] (jit/capture/lower_indexing.cpp): HF's mask pattern
// mask[arange(b)[:, None, None, None], arange(s)[None, None, None, :]] runs as views, not an eager
// index, and so does the transposed pattern; rows 1.. of x are a real gather and stay eager.
// Results equal the module's, at the captured sizes and at new ones, in a strict session.
TEST(IndexViews, IndexingByAranges) {
  torch::NoGradGuard ng;
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    b = x.size(0)
    s = x.size(1)
    bi = torch.arange(b)[:, None, None, None]
    si = torch.arange(s)[None, None, None, :]
    keep = (x > 0.0)[bi, si]
    t = x[torch.arange(b)[None, None, :], torch.arange(s)[:, None, None]]
    return torch.where(keep, 2.0, 0.0).sum() + t.sum(1) * 3.0
)");
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/true, {{"x", 0, "b"}, {"x", 1, "s"}}));
  for (auto [b, s] : {std::pair<int64_t, int64_t>{3, 5}, {4, 9}, {2, 2}}) {
    torch::Tensor x = torch::randn({b, s});
    expectSame(fast.forward({x}).toTensor(), m.forward({x}).toTensor());
  }
  const std::string explain = fast.explain();
  EXPECT_EQ(explain.find("aten::index"), std::string::npos) << explain;
  EXPECT_EQ(explain.find("aten::arange"), std::string::npos) << explain;
  EXPECT_EQ(fast.stats().eagerCalls, 0u);

  torch::jit::Module shifted = scripted(R"(
def forward(self, x):
    return x[torch.arange(1, x.size(0))[:, None], torch.arange(x.size(1))[None, :]] * 2.0
)");
  auto other = kiln::jit::optimize(shifted, optionsFor(/*strict=*/true, {{"x", 0, "b"}}));
  torch::Tensor x = torch::randn({5, 3});
  expectSame(other.forward({x}).toTensor(), shifted.forward({x}).toTensor());
  EXPECT_NE(other.explain().find("aten::index"), std::string::npos) << other.explain();
}

// Ops of real models outside the first three (tests/models/make_fixtures.py), lowered onto IR ops
// instead of running eagerly: MobileNetV3's hardswish/hardsigmoid, squeeze-and-excitation's global
// pooling, T5's min of two tensors, DeBERTa's ~mask, XLNet's reciprocal, relu6/hardtanh, and
// HF's DynamicCache cat of an empty 1-d tensor. Results equal the module's in a strict session
// whose kernels NVRTC compiles (codegen must take every op), at the captured sizes and new ones.
TEST(Lowering, OpsOfMoreArchitecturesFuse) {
  torch::NoGradGuard ng;
  auto forward = [](const std::vector<c10::IValue>& in) -> c10::IValue {
    const torch::Tensor x = in.at(0).toTensor();
    torch::Tensor a = torch::hardswish(x) + torch::hardsigmoid(x);
    torch::Tensor b = torch::relu6(x * 4.0) - torch::hardtanh(x, -0.5, 0.25);
    torch::Tensor pooled = torch::adaptive_avg_pool2d(a, {1, 1});
    torch::Tensor c = torch::min(x, b) + torch::max(a, pooled) + torch::reciprocal(x.abs() + 1.0);
    torch::Tensor keep = ~(x > 0.5);
    torch::Tensor d = torch::where(torch::logical_not(keep), c, b);
    torch::Tensor e = torch::cat({torch::zeros({0}), d}, -2);
    return e + pooled;
  };
  kiln::jit::Options o;
  o.session = &kiln::testing::compileOnlySession();
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "b"}, {"x", 2, "h"}};
  auto fast = kiln::jit::optimize(std::make_shared<torch::nn::Module>(), forward, o);
  for (auto [b, h] : {std::pair<int64_t, int64_t>{3, 5}, {2, 7}, {4, 4}}) {
    torch::Tensor x = torch::randn({b, 6, h, 8}) * 4.0;
    expectSame(fast.forward({x}).toTensor(), forward({x}).toTensor());
  }
  const std::string explain = fast.explain();
  EXPECT_NE(explain.find("eager leftovers: none"), std::string::npos) << explain;
  EXPECT_EQ(explain.find("no kernel"), std::string::npos) << explain;
  EXPECT_GT(fast.stats().kernelsCompiled + fast.stats().kernelsCached, 0u);
  EXPECT_EQ(fast.stats().eagerCalls, 0u);
}

// Views the breadth sweep found eager (bench/RESULTS.md, 2026-12-07, nineteenth session): strided
// slices of static dims (GPT-J's rotary pairs, Swin's patch merging), x.T (Falcon), roll (Swin's
// shifted windows), stack (GPT-J's rotate_every_two), repeat and repeat_interleave (GPT-J's
// sin/cos) lower to slices, permutes, expands, reshapes and cats. Results equal the module's in
// a compile-only session, at the captured sizes and new ones, with no eager step.
TEST(Lowering, StridedSlicesTransposesAndRolls) {
  torch::NoGradGuard ng;
  auto forward = [](const std::vector<c10::IValue>& in) -> c10::IValue {
    const torch::Tensor x = in.at(0).toTensor();
    torch::Tensor pairs = x.slice(2, 0, 8, 2) * 2.0 - x.slice(2, 1, 8, 2);
    torch::Tensor rolled = torch::roll(x, {3, -1}, {1, 3}).slice(1, 1, 6, 3) + 1.0;
    torch::Tensor reversed = x.select(1, 0).select(1, 0).numpy_T() * 3.0;
    torch::Tensor stacked = torch::stack({-x.slice(3, 1, 4, 2), x.slice(3, 0, 4, 2)}, -1);
    torch::Tensor tiled = x.select(1, 0).repeat({2, 1, 3}) - 1.0;
    torch::Tensor interleaved = torch::repeat_interleave(x.select(3, 1), 2, 1) * 0.5;
    return c10::ivalue::Tuple::create(
        {pairs, rolled, reversed, stacked.flatten(-2) + x, tiled, interleaved});
  };
  kiln::jit::Options o;
  o.session = &kiln::testing::compileOnlySession();
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "b"}};
  auto fast = kiln::jit::optimize(std::make_shared<torch::nn::Module>(), forward, o);
  for (int64_t b : {3, 2, 5}) {
    torch::Tensor x = torch::randn({b, 6, 8, 4});
    const auto got = fast.forward({x}).toTuple()->elements();
    const auto want = forward({x}).toTuple()->elements();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) expectSame(got[i].toTensor(), want[i].toTensor());
  }
  const std::string explain = fast.explain();
  EXPECT_NE(explain.find("eager leftovers: none"), std::string::npos) << explain;
  EXPECT_NE(explain.find("unsupported ops: none"), std::string::npos) << explain;
  EXPECT_EQ(fast.stats().eagerCalls, 0u);
}

// Note [Einsum as GEMMs] (lower_library.cpp): XLNet's equations (projections with 3-d weights,
// attention scores and their use, a permute, the sinusoid's outer product), a sum-out and a
// single-operand reduction lower to views, sums, a multiply and matmuls; the dims stay symbolic
// (new batch and sequence sizes reuse the capture). An ellipsis and a diagonal stay eager steps,
// with their reasons. Results match the module in a strict session.
TEST(Lowering, EinsumAsGemms) {
  torch::NoGradGuard ng;
  torch::jit::Module m("m");
  m.register_buffer("w", torch::randn({16, 2, 4}));
  m.register_buffer("v", torch::randn({5}));
  m.define(R"(
def forward(self, x):
    h = torch.einsum('ibh,hnd->ibnd', x, self.w)
    scores = torch.einsum('ibnd,jbnd->bnij', h, h)
    ctx = torch.einsum('bnij,jbnd->ibnd', torch.einsum('ijbn->bnij', scores.permute(2, 3, 0, 1)), h)
    out = torch.einsum('ibnd,hnd->ibh', ctx, self.w)
    pos = torch.einsum('i,d->id', x[:, 0, 0], self.v)
    summed = torch.einsum('ibh,h->ib', x, self.w[:, 0, 0]) + torch.einsum('ibh->b', x)
    return out.sum(-1) + summed + pos[:, 0:1]
)");
  m.eval();
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/true, {{"x", 0, "s"}, {"x", 1, "b"}}));
  for (auto [seq, b] : {std::pair<int64_t, int64_t>{7, 3}, {5, 2}, {9, 4}}) {
    torch::Tensor x = torch::randn({seq, b, 16});
    const torch::Tensor got = fast.forward({x}).toTensor();
    const torch::Tensor want = m.forward({x}).toTensor();
    ASSERT_EQ(got.sizes(), want.sizes());
    // The products reach ~1e4; the matmuls sum in another order than einsum's own bmm.
    const double scale = want.abs().max().item<double>();
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * scale) << scale;
  }
  const std::string explain = fast.explain();
  EXPECT_EQ(explain.find("aten::einsum"), std::string::npos) << explain;
  EXPECT_EQ(fast.stats().eagerCalls, 0u);
  EXPECT_EQ(fast.stats().captures, 1u);

  torch::jit::Module odd = scripted(R"(
def forward(self, x):
    return torch.einsum('...ij->...ji', x) + torch.einsum('bii->bi', x).unsqueeze(-1)
)");
  auto oddFast = kiln::jit::optimize(odd, optionsFor(/*strict=*/true, {{"x", 0, "b"}}));
  torch::Tensor x = torch::randn({3, 4, 4});
  expectSame(oddFast.forward({x}).toTensor(), odd.forward({x}).toTensor());
  const std::string oddExplain = oddFast.explain();
  EXPECT_NE(oddExplain.find("aten::einsum x2: an ellipsis in the equation"), std::string::npos)
      << oddExplain;
}

// Note [Fills]: transformers' encoder masks AND the padding mask with arange(S)[:, None] >= 0, and
// models make ones/zeros/full tensors of run-time sizes. Both are fills now, not eager steps (a
// fill is a literal inside the fused mask kernel); comparisons the arange does not decide, and a
// fill value read from a tensor, stay as they were. Equal to the module at three sizes.
TEST(Lowering, FillsAndDecidedComparisons) {
  torch::NoGradGuard ng;
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    b = x.size(0)
    s = x.size(1)
    q = torch.arange(s).view(1, 1, s, 1)
    keep = (q >= 0) & (x > 0.0).view(b, 1, 1, s)
    none = (q < -1) | (torch.arange(2, s + 2) == 1).view(1, 1, s, 1)
    z = torch.zeros([b, s], dtype=6) + torch.ones_like(x) * 2.0 + torch.full_like(x, 3.5)
    h = x.new_full([b, 1, s], 0.25) + x.new_ones([1, s]) + torch.full([s], 1.5, dtype=6)
    return (keep.float() + none.float() * 7.0).sum(2).view(b, s) + z + h.view(b, s)
)");
  kiln::jit::OptimizedModule fast = matchesAtThreeSizes(m);
  const std::string explain = fast.explain();
  for (const char* op : {"aten::arange", "aten::zeros", "aten::ones_like", "aten::full_like",
                         "aten::new_full", "aten::new_ones", "aten::full"})
    EXPECT_EQ(explain.find(op), std::string::npos) << op << "\n" << explain;
  EXPECT_EQ(fast.stats().eagerCalls, 0u) << explain;

  // Undecided: the arange's last element depends on s. Read from a tensor: the fill value.
  torch::jit::Module open = scripted(R"(
def forward(self, x):
    s = x.size(1)
    late = (torch.arange(s) < 5).view(1, s)
    return torch.where(late, x, 0.0) + torch.full_like(x, float(x.sum()))
)");
  auto openFast =
      kiln::jit::optimize(open, optionsFor(/*strict=*/false, {{"x", 0, "batch"}, {"x", 1, "seq"}}));
  for (auto [b, n] : std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {2, 4}}) {
    torch::Tensor x = torch::randn({b, n});
    expectSame(openFast.forward({x}).toTensor(), open.forward({x}).toTensor());
  }
  // The comparison stays (no fill), and its arange is a kiln arange (Note [Aranges in kernels]).
  EXPECT_EQ(openFast.explain().find("aten::arange"), std::string::npos) << openFast.explain();
  EXPECT_NE(openFast.explain().find("= arange("), std::string::npos) << openFast.explain();
  EXPECT_NE(openFast.explain().find("= lt("), std::string::npos) << openFast.explain();
}

// Note [Aranges in kernels]: a causal mask (an arange viewed as a row and as a column, compared),
// and positions from an arange with an offset, expanded to the batch, all inside kiln kernels: no
// eager step in a strict session, equal to the module at three sizes. A floating arange stays in
// ATen with its reason.
TEST(Lowering, ArangesInKernels) {
  torch::NoGradGuard ng;
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    b = x.size(0)
    s = x.size(1)
    causal = torch.arange(s).view(1, s) <= torch.arange(s).unsqueeze(1)
    pos = torch.arange(2, s + 2).unsqueeze(0).expand(b, s)
    return torch.where(causal.view(1, s, s), x.unsqueeze(1), 0.0) + (pos * 2).unsqueeze(-1)
)");
  kiln::jit::OptimizedModule fast = matchesAtThreeSizes(m);
  const std::string explain = fast.explain();
  EXPECT_EQ(explain.find("aten::arange"), std::string::npos) << explain;
  EXPECT_NE(explain.find("= arange("), std::string::npos) << explain;
  EXPECT_EQ(fast.stats().eagerCalls, 0u) << explain;

  torch::jit::Module floating = scripted(R"(
def forward(self, x):
    return x * torch.arange(x.size(1), dtype=6)
)");
  auto floatingFast = kiln::jit::optimize(
      floating, optionsFor(/*strict=*/false, {{"x", 0, "batch"}, {"x", 1, "seq"}}));
  torch::Tensor x = torch::randn({3, 7});
  expectSame(floatingFast.forward({x}).toTensor(), floating.forward({x}).toTensor());
  EXPECT_NE(floatingFast.explain().find("aten::arange x1: a floating-point arange"),
            std::string::npos)
      << floatingFast.explain();
}

// Note [Embeddings in kernels]: embedding by token ids (int64 and int32) and index_select(W, 0,
// ids) are kiln gathers, fused with what reads them: no eager step in a strict session, equal to
// the module at three sizes. An id out of range raises, as the module does; index_select along a
// table's columns stays an eager step, with its reason.
TEST(Lowering, GathersByTokenIds) {
  torch::NoGradGuard ng;
  torch::jit::Module m("m");
  m.register_buffer("table", torch::randn({20, 8}));
  m.define(R"(
def forward(self, x):
    b = x.size(0)
    n = x.size(1)
    e = torch.embedding(self.table, x) * 2.0
    r = torch.index_select(self.table, 0, x.flatten()).view(b, n, 8)
    return torch.layer_norm(e + r, [8]) + torch.embedding(self.table, x.int())
)");
  m.eval();
  auto fast =
      kiln::jit::optimize(m, optionsFor(/*strict=*/true, {{"x", 0, "batch"}, {"x", 1, "seq"}}));
  for (auto [b, n] : std::vector<std::pair<int64_t, int64_t>>{{3, 7}, {2, 16}, {1, 5}}) {
    torch::Tensor x = torch::randint(0, 20, {b, n});
    expectSame(fast.forward({x}).toTensor(), m.forward({x}).toTensor());
  }
  const std::string explain = fast.explain();
  for (const char* op : {"aten::embedding", "aten::index_select"})
    EXPECT_EQ(explain.find(op), std::string::npos) << op << "\n" << explain;
  EXPECT_NE(explain.find("= embedding("), std::string::npos) << explain;
  EXPECT_EQ(fast.stats().eagerCalls, 0u) << explain;
  torch::Tensor past = torch::randint(0, 20, {2, 6});
  past[1][3] = 20;
  EXPECT_ANY_THROW(m.forward({past}));
  EXPECT_ANY_THROW(fast.forward({past}));

  torch::jit::Module columns("m");
  columns.register_buffer("table", torch::randn({4, 20}));
  columns.define(R"(
def forward(self, x):
    return torch.index_select(self.table, 1, x.flatten()) * 2.0
)");
  columns.eval();
  auto columnsFast = kiln::jit::optimize(columns, optionsFor(/*strict=*/false, {{"x", 0, "b"}}));
  torch::Tensor x = torch::randint(0, 20, {3, 2});
  expectSame(columnsFast.forward({x}).toTensor(), columns.forward({x}).toTensor());
  EXPECT_NE(columnsFast.explain().find("aten::index_select x1: index_select of a table that is "
                                       "not 2-d, or along its columns"),
            std::string::npos)
      << columnsFast.explain();
}

// torchvision Swin pads its windows by (w - W % w) % w, computed from a static size: the remainder
// of known ints is an int, and a pad of zeros is the tensor itself. A pad of nonzero width is x
// between fills (Note [Fills]); a negative one (a crop) stays an eager step, with its reason.
// Results equal the module's in a strict session.
TEST(Lowering, ZeroPadsFromSizeRemainders) {
  torch::NoGradGuard ng;
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    p = (7 - x.size(2) % 7) % 7
    return torch.constant_pad_nd(x, [0, 0, 0, p], 0.0) * 2.0
)");
  auto fast = kiln::jit::optimize(m, optionsFor(/*strict=*/true, {{"x", 0, "b"}}));
  for (int64_t b : {3, 2}) {
    torch::Tensor x = torch::randn({b, 3, 14, 5});
    expectSame(fast.forward({x}).toTensor(), m.forward({x}).toTensor());
  }
  EXPECT_NE(fast.explain().find("unsupported ops: none"), std::string::npos) << fast.explain();
  EXPECT_EQ(fast.stats().eagerCalls, 0u);

  auto padded = kiln::jit::optimize(m, optionsFor(/*strict=*/true, {{"x", 0, "b"}}));
  for (int64_t b : {3, 2}) {
    torch::Tensor x = torch::randn({b, 3, 15, 5});  // p = 6
    expectSame(padded.forward({x}).toTensor(), m.forward({x}).toTensor());
  }
  EXPECT_NE(padded.explain().find("unsupported ops: none"), std::string::npos) << padded.explain();
  EXPECT_EQ(padded.stats().eagerCalls, 0u);

  // Both sides of two dims, a value, pad()'s form; and a crop, which stays in ATen.
  torch::jit::Module both = scripted(R"(
def forward(self, x):
    return torch.constant_pad_nd(x, [1, 2, 0, 3], -1.5) + 1.0
)");
  torch::jit::Module crop = scripted(R"(
def forward(self, x):
    return torch.constant_pad_nd(x, [-1, 1], 0.0) * 2.0
)");
  auto bothFast = kiln::jit::optimize(both, optionsFor(/*strict=*/true, {{"x", 0, "b"}}));
  auto cropFast = kiln::jit::optimize(crop, optionsFor(/*strict=*/false, {{"x", 0, "b"}}));
  for (int64_t b : {3, 2}) {
    torch::Tensor x = torch::randn({b, 4, 5});
    expectSame(bothFast.forward({x}).toTensor(), both.forward({x}).toTensor());
    expectSame(cropFast.forward({x}).toTensor(), crop.forward({x}).toTensor());
  }
  EXPECT_EQ(bothFast.stats().eagerCalls, 0u) << bothFast.explain();
  EXPECT_NE(cropFast.explain().find("aten::constant_pad_nd x1: a negative pad (a crop)"),
            std::string::npos)
      << cropFast.explain();

  // The same arithmetic on the 0-dim tensors a Python trace makes of sizes (rsub, remainder).
  auto traced = [](const std::vector<c10::IValue>& in) -> c10::IValue {
    const torch::Tensor x = in.at(0).toTensor();
    const torch::Tensor w = torch::jit::tracer::isTracing()
                                ? torch::jit::tracer::getSizeOf(x, 3)
                                : torch::scalar_tensor(x.size(3), torch::kLong);
    return x * (torch::rsub(w % 7, 7) % 7);
  };
  kiln::jit::Options o;
  o.session = &kiln::testing::compileOnlySession();
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "b"}};
  auto arith = kiln::jit::optimize(std::make_shared<torch::nn::Module>(), traced, o);
  for (int64_t b : {3, 2}) {
    torch::Tensor y = torch::randn({b, 3, 14, 5});
    expectSame(arith.forward({y}).toTensor(), traced({y}).toTensor());
  }
  EXPECT_NE(arith.explain().find("unsupported ops: none"), std::string::npos) << arith.explain();
}

// Note [Mutation islands]: a tensor the graph makes and then writes through slices (Swin's
// shifted-window mask, BART's shifted decoder ids, whose last write's result is read) is one eager
// island step; the rest of the graph is kiln's. Writes that are
// not private to a fresh tensor keep the module on its own path, with the same results.
TEST(Lowering, WritesIntoAFreshTensorAreOneIsland) {
  torch::NoGradGuard ng;
  torch::jit::Module m = scripted(R"(
def forward(self, x):
    mask = x.new_zeros([x.size(1), x.size(2)])
    mask[0:2, 1:3] = 5.0
    mask[2:, :] = 1.5
    kept = mask.masked_fill_(mask > 4.0, 2.0)
    return x * kept + mask
)");
  auto fast = kiln::jit::optimize(
      m, optionsFor(/*strict=*/true, {{"x", 0, "batch"}, {"x", 1, "h"}, {"x", 2, "w"}}));
  for (auto shape : {std::vector<int64_t>{3, 4, 5}, {2, 6, 7}, {4, 3, 9}}) {
    torch::Tensor x = torch::randn(shape);
    expectSame(fast.forward({x}).toTensor(), m.forward({x}).toTensor());
  }
  EXPECT_EQ(fast.stats().captures, 1u) << fast.explain();
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << fast.explain();
  EXPECT_NE(fast.explain().find("kiln::mutation_island"), std::string::npos) << fast.explain();

  // A view of the written tensor read outside the writes, and a write into an input: not islands.
  torch::jit::Module shared = scripted(R"(
def forward(self, x):
    y = x * 2.0
    first = y[0]
    y[1:] = 3.0
    x.add_(1.0)
    return first + y + x
)");
  // Note [Modules that write their inputs]: it runs as itself, and writes the caller's x once.
  auto other = kiln::jit::optimize(shared, optionsFor(/*strict=*/false));
  for (int call = 0; call < 2; ++call) {
    torch::Tensor x = torch::randn({3, 4});
    torch::Tensor mine = x.clone();
    torch::Tensor want = shared.forward({x.clone()}).toTensor();
    expectSame(other.forward({mine}).toTensor(), want);
    expectSame(mine, x + 1.0);
  }
  EXPECT_EQ(other.explain().find("kiln::mutation_island"), std::string::npos) << other.explain();
  EXPECT_NE(other.explain().find("writes into its input 0 in place"), std::string::npos)
      << other.explain();
}

TEST(Fallback, BadInputIsStillAUserError) {
  torch::NoGradGuard ng;
  auto m = torch::jit::load(std::string(KILN_FIXTURES_DIR) + "/hf_bert.pt");
  m.eval();
  kiln::jit::Options o = optionsFor(/*strict=*/false);
  o.inputNames = {"ids", "mask"};
  auto fast = kiln::jit::optimize(m, o);
  torch::Tensor mask = torch::ones({2, 5}, torch::kLong);
  // Float token ids: the module itself rejects them, and the caller hears it as a UserError.
  try {
    fast.forward({torch::rand({2, 5}), mask});
    FAIL() << "expected a UserError";
  } catch (const kiln::UserError& e) {
    EXPECT_NE(std::string(e.what()).find("the module failed on these inputs"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(fast.forward({torch::IValue(3), mask}), kiln::UserError);
}

}  // namespace

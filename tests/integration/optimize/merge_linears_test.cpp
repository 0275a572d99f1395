// Note [Merged linears] end to end on the CPU: q/k/v and gate/up linears of one input run as one
// GEMM each, match the module at several sizes, follow their weights when those change in place
// (Note [Derived params are snapshots]), and KILN_MERGE_LINEARS=off keeps them apart.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

namespace {

kiln::Session& sessionMerging(bool merge) {
  static kiln::Session* on = nullptr;
  static kiln::Session* off = nullptr;
  kiln::Session*& s = merge ? on : off;
  if (s == nullptr) {
    kiln::Options o;
    o.diskCache = false;
    o.tune = kiln::TuneMode::kOff;
    o.strict = true;
    o.mergeLinears = merge;
    s = new kiln::Session(o, kiln::testing::noEnvironment());
  }
  return *s;
}

// A decoder block's projections: q, k, v (k and v narrower, as in grouped-query attention), a
// gated MLP with biases, and a linear of the same input whose output is returned as it is.
torch::jit::Module block() {
  torch::manual_seed(7);
  torch::jit::Module m("block");
  auto param = [&](const char* name, std::vector<int64_t> shape) {
    m.register_parameter(name, torch::randn(shape) * 0.2, /*is_buffer=*/false);
  };
  param("wq", {8, 8});
  param("wk", {4, 8});
  param("wv", {4, 8});
  param("wg", {12, 8});
  param("bg", {12});
  param("wu", {12, 8});
  param("bu", {12});
  param("wo", {8, 12});
  param("wr", {12, 8});
  param("br", {12});
  m.define(R"(
def forward(self, x):
    q = torch.linear(x, self.wq)
    k = torch.linear(x, self.wk)
    v = torch.linear(x, self.wv)
    h = q + torch.cat([k, v], -1)
    g = torch.linear(h, self.wg, self.bg)
    u = torch.linear(h, self.wu, self.bu)
    y = torch.linear(torch.silu(g) * u, self.wo)
    return (y + x, torch.linear(h, self.wr, self.br))
)");
  m.eval();
  return m;
}

kiln::jit::OptimizedModule optimized(torch::jit::Module& m, bool merge) {
  kiln::jit::Options o;
  o.session = &sessionMerging(merge);
  o.inputNames = {"x"};
  o.dynamicDims = {{"x", 0, "batch"}, {"x", 1, "seq"}};
  return kiln::jit::optimize(m, o);
}

void expectMatches(kiln::jit::OptimizedModule& fast, torch::jit::Module& m, int64_t b, int64_t s,
                   const std::string& when) {
  torch::Tensor x = torch::randn({b, s, 8});
  auto got = fast.forward({x}).toTuple()->elements();
  auto want = m.forward({x}).toTuple()->elements();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const torch::Tensor g = got[i].toTensor(), w = want[i].toTensor();
    ASSERT_EQ(g.sizes(), w.sizes()) << when;
    EXPECT_TRUE(torch::allclose(g, w, 1e-5, 1e-5))
        << when << ", output " << i << ": max error " << (g - w).abs().max().item<double>();
    EXPECT_TRUE(g.is_contiguous()) << when << ", output " << i;
  }
}

TEST(MergeLinears, QkvAndGateUpRunAsOneGemmEachAndMatchTheModule) {
  torch::NoGradGuard ng;
  torch::jit::Module m = block();
  auto fast = optimized(m, /*merge=*/true);
  for (auto [b, s] : std::vector<std::pair<int64_t, int64_t>>{{2, 5}, {3, 7}, {4, 16}})
    expectMatches(fast, m, b, s, "batch " + std::to_string(b) + ", seq " + std::to_string(s));
  const std::string why = fast.explain();
  EXPECT_NE(why.find("merged linears: 5 linears run as 2 GEMMs"), std::string::npos) << why;
  EXPECT_NE(why.find("  {wq,wk,wv}: [16, 8]"), std::string::npos) << why;
  EXPECT_NE(why.find("  {wg,wu}: [24, 8]"), std::string::npos) << why;
  EXPECT_EQ(fast.stats().captures, 1u);
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << why;

  // The module's weights change in place: the concatenated copies follow before the next call.
  m.attr("wk").toTensor().mul_(-3.0);
  m.attr("bu").toTensor().add_(0.5);
  expectMatches(fast, m, 2, 5, "after wk and bu changed in place");
  m.attr("wv").toTensor().set_data(torch::randn({4, 8}));
  expectMatches(fast, m, 3, 7, "after wv.set_data");
}

// Note [Derived params shared by families]: batch 1 is a guard family of its own, with its own
// Program; both bind one copy of the merged weights, and a change in place reaches both.
TEST(MergeLinears, GuardFamiliesShareOneCopyOfTheMergedWeights) {
  torch::NoGradGuard ng;
  torch::jit::Module m = block();
  auto fast = optimized(m, /*merge=*/true);
  expectMatches(fast, m, 2, 5, "batch 2");
  // {wq,wk,wv} [16, 8], {wg,wu} [24, 8] and {bg,bu} [24], float32.
  constexpr uint64_t kOneCopy = (16 * 8 + 24 * 8 + 24) * sizeof(float);
  EXPECT_EQ(fast.stats().derivedParamBytes, kOneCopy);
  expectMatches(fast, m, 1, 5, "batch 1");
  EXPECT_EQ(fast.stats().familiesAlive, 2u) << fast.stats().toString();
  EXPECT_EQ(fast.stats().derivedParamBytes, kOneCopy) << fast.stats().toString();
  m.attr("wq").toTensor().mul_(0.5);
  expectMatches(fast, m, 1, 5, "batch 1 after wq changed in place");
  expectMatches(fast, m, 3, 5, "batch 3 after wq changed in place");
  m.attr("wu").toTensor().add_(1.0);
  expectMatches(fast, m, 3, 5, "batch 3 after wu changed in place");
  expectMatches(fast, m, 1, 5, "batch 1 after wu changed in place");
}

TEST(MergeLinears, OffKeepsEachLinear) {
  torch::NoGradGuard ng;
  torch::jit::Module m = block();
  auto fast = optimized(m, /*merge=*/false);
  expectMatches(fast, m, 2, 5, "merging off");
  EXPECT_EQ(fast.explain().find("merged linears"), std::string::npos) << fast.explain();
  EXPECT_EQ(fast.stats().derivedParamBytes, 0u);
}

}  // namespace

// Note [Pointwise ops through cat] and Note [Cats written in place]: a rotary embedding's halves
// are computed into the cat's buffer, bitwise equal to the module.
TEST(CatInPlace, RotaryEmbeddingMatchesTheModuleBitwise) {
  torch::NoGradGuard ng;
  torch::jit::Module m("rotary");
  m.define(R"(
def forward(self, x, cos, sin):
    x1 = x[..., :4]
    x2 = x[..., 4:]
    r = torch.cat((-x2, x1), dim=-1)
    return x * cos + r * sin
)");
  m.eval();
  kiln::jit::Options o;
  o.session = &sessionMerging(true);
  o.inputNames = {"x", "cos", "sin"};
  o.dynamicDims = {{"x", 0, "batch"}, {"x", 2, "seq"}, {"cos", 0, "seq"}, {"sin", 0, "seq"}};
  auto fast = kiln::jit::optimize(m, o);
  for (auto [b, s] : std::vector<std::pair<int64_t, int64_t>>{{2, 5}, {3, 7}, {4, 16}}) {
    torch::Tensor x = torch::randn({b, 4, s, 8});
    torch::Tensor cos = torch::randn({s, 8}), sin = torch::randn({s, 8});
    torch::Tensor got = fast.forward({x, cos, sin}).toTensor();
    torch::Tensor want = m.forward({x, cos, sin}).toTensor();
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_TRUE(torch::equal(got, want)) << "batch " << b << ", seq " << s << ": max error "
                                         << (got - want).abs().max().item<double>();
    EXPECT_TRUE(got.is_contiguous());
  }
  const std::string why = fast.explain();
  EXPECT_NE(why.find("cats written in place: 2 operands"), std::string::npos) << why;
  EXPECT_EQ(why.find("neg(%"), why.rfind("neg(%")) << "one neg, in the first half\n" << why;
  EXPECT_EQ(fast.stats().captures, 1u);
  EXPECT_EQ(fast.stats().eagerFallbacks, 0u) << why;
}

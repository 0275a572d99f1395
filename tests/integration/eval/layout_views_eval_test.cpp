// rewriteLayoutViews (src/passes/layout_views.h) run through ATen: the rewritten chains give the
// same values as the captured ones, and the view chains of nn.MultiheadAttention stay views
// (the output aliases the projection it came from) where the captured chain copied.
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "jit/eval/aten_eval.h"
#include "src/ir/parser.h"
#include "src/passes/layout_views.h"
#include "src/passes/pipeline.h"

namespace kiln::jit {
namespace {

struct ChainResult {
  at::Tensor out;
  bool aliasesInput0 = false;
};

ChainResult evaluate(const ir::Graph& g, const std::vector<at::Tensor>& inputs,
                     const std::vector<at::Tensor>& params = {}) {
  at::Tensor out = evalGraph(g, inputs, params).at(0);
  return {out, out.is_alias_of(inputs.at(0))};
}

// The QKV projection's output [b, s, 3*768] to q [b, 12, s, 64], as nn.MultiheadAttention
// (batch_first) reaches SDPA once its input permute moved after the projection (captured IR of
// tests/models' encoder block, b = 2, s = 5).
constexpr const char* kQueryChain = R"(graph(%p: f32[2, 5, 2304]) {
  %0 = permute(%p) {perm = [1, 0, 2]}
  %1: f32[1, 5, 2, 3, 768] = reshape(%0)
  %2 = permute(%1) {perm = [3, 1, 2, 0, 4]}
  %3: f32[3, 5, 2, 768] = reshape(%2)
  %4: f32[1, 5, 2, 768] = slice(%3) {dim = 0, start = 0, step = 1}
  %5: f32[5, 24, 64] = reshape(%4)
  %6 = permute(%5) {perm = [1, 0, 2]}
  %7: f32[2, 12, 5, 64] = reshape(%6)
  return(%7)
})";

TEST(LayoutViewsEval, QueryIsAViewOfTheProjection) {
  at::Tensor p = at::randn({2, 5, 2304});
  auto captured = ir::parse(kQueryChain);
  ChainResult before = evaluate(*captured, {p});
  auto rewritten = ir::parse(kQueryChain);
  passes::runDefaultPasses(*rewritten);
  ChainResult after = evaluate(*rewritten, {p});
  EXPECT_TRUE(at::equal(before.out, after.out));
  EXPECT_FALSE(before.aliasesInput0) << "the captured chain copies (b and heads merge)";
  EXPECT_TRUE(after.aliasesInput0) << "rewritten: a strided view of the projection";
  // The same values as slicing the projection directly.
  EXPECT_TRUE(
      at::equal(after.out, p.narrow(2, 0, 768).reshape({2, 5, 12, 64}).permute({0, 2, 1, 3})));
}

TEST(LayoutViewsEval, SplitBeforeMergeMatchesOnRandomChains) {
  // reshape -> permute -> reshape chains over [4, 6, 10] with merges and splits of every kind the
  // refinement allows; values must be identical after the pipeline.
  const std::vector<std::string> chains = {
      "%0: f32[24, 10] = reshape(%x)\n  %1 = permute(%0) {perm = [1, 0]}\n  %2: f32[10, 4, 6] = "
      "reshape(%1)",
      "%0: f32[4, 60] = reshape(%x)\n  %1 = permute(%0) {perm = [1, 0]}\n  %2: f32[6, 10, 2, 2] = "
      "reshape(%1)",
      "%0: f32[4, 6, 2, 5] = reshape(%x)\n  %1 = permute(%0) {perm = [3, 1, 0, 2]}\n  %2: f32[5, "
      "24, 2] = reshape(%1)",
      "%0: f32[2, 12, 10] = reshape(%x)\n  %1 = permute(%0) {perm = [2, 0, 1]}\n  %2: f32[10, 4, "
      "6] = reshape(%1)",
      // 12 = 2 x 6 in x but 3 x 4 in the result: no common refinement, left alone.
      "%0: f32[2, 12, 10] = reshape(%x)\n  %1 = permute(%0) {perm = [2, 0, 1]}\n  %2: f32[10, 2, "
      "3, 4] = reshape(%1)",
      "%0: f32[240] = reshape(%x)\n  %1 = permute(%0) {perm = [0]}\n  %2: f32[4, 60] = reshape(%1)",
  };
  // The inner reshape merges (and a refinement exists): rewritten.
  const std::vector<bool> rewritten = {true, true, false, true, false, true};
  at::Tensor x = at::randn({4, 6, 10});
  for (size_t i = 0; i < chains.size(); ++i) {
    const std::string& body = chains[i];
    const std::string text = "graph(%x: f32[4, 6, 10]) {\n  " + body + "\n  return(%2)\n}";
    auto captured = ir::parse(text);
    auto graph = ir::parse(text);
    EXPECT_EQ(passes::rewriteLayoutViews(*graph), rewritten[i]) << text;
    passes::runDefaultPasses(*graph);
    EXPECT_TRUE(at::equal(evaluate(*captured, {x}).out, evaluate(*graph, {x}).out)) << text;
  }
}

TEST(LayoutViewsEval, OutputProjectionRowsInAttentionOrder) {
  at::Tensor q = at::randn({2, 12, 5, 64}), k = at::randn({2, 12, 5, 64}),
             v = at::randn({2, 12, 5, 64});
  at::Tensor w = at::randn({768, 768});
  at::Tensor bias = at::randn({768});
  const std::string text =
      R"(graph(%q: f32[2, 12, 5, 64], %k: f32[2, 12, 5, 64], %v: f32[2, 12, 5, 64], %w: f32[768, 768] param, %b: f32[768] param) {
  %a = sdpa(%q, %k, %v)
  %0 = permute(%a) {perm = [2, 0, 1, 3]}
  %1: f32[10, 768] = reshape(%0)
  %2 = linear(%1, %w, %b)
  %3: f32[5, 2, 768] = reshape(%2)
  %4 = permute(%3) {perm = [1, 0, 2]}
  return(%4)
})";
  auto captured = ir::parse(text);
  auto rewritten = ir::parse(text);
  ASSERT_TRUE(passes::rewriteLayoutViews(*rewritten));
  passes::runDefaultPasses(*rewritten);
  at::Tensor want = evaluate(*captured, {q, k, v}, {w, bias}).out;
  at::Tensor got = evaluate(*rewritten, {q, k, v}, {w, bias}).out;
  ASSERT_EQ(got.sizes(), want.sizes());
  // Each row is the same dot products; a BLAS may block rows differently, hence no bitwise check.
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(got.is_contiguous()) << "the projection's own output, no permute left";
}

}  // namespace
}  // namespace kiln::jit

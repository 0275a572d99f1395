// Each pass on a graph written as text, compared with the expected text (both printed through
// parse+print, so value numbering in the expectations is free).
#include <gtest/gtest.h>

#include <cmath>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/canonicalize.h"
#include "src/passes/eliminate_common_subexpressions.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/passes/fold_constants.h"
#include "src/passes/normalize_broadcasts.h"
#include "src/passes/pipeline.h"

namespace kiln::passes {
namespace {

template <typename Pass>
void expectPass(Pass pass, const std::string& input, const std::string& expected,
                bool expectChanged = true) {
  auto g = ir::parse(input);
  bool changed = pass(*g);
  ir::verify(*g);
  EXPECT_EQ(ir::print(*g), ir::print(*ir::parse(expected)));
  EXPECT_EQ(changed, expectChanged);
}

TEST(EliminateDeadCode, RemovesUnusedChainsKeepsInputsAndSideEffects) {
  expectPass(eliminateDeadCode, R"(graph(%x: f32[4], %unused: f32[4]) {
  %c: f32[] = constant() {value = 2.0}
  %0 = exp(%x)
  %1 = mul(%0, %c)
  %2 = neg(%x)
  %3: f32[4] = eager(%x) {schema = "aten::print", has_side_effects = true}
  %4: f32[4] = eager(%x) {schema = "aten::cumsum"}
  return(%2)
})",
             R"(graph(%x: f32[4], %unused: f32[4]) {
  %2 = neg(%x)
  %3: f32[4] = eager(%x) {schema = "aten::print", has_side_effects = true}
  return(%2)
})");
  expectPass(eliminateDeadCode, "graph(%x: f32[4]) {\n  %0 = neg(%x)\n  return(%0)\n}",
             "graph(%x: f32[4]) {\n  %0 = neg(%x)\n  return(%0)\n}", false);
}

TEST(EliminateCommonSubexpressions, MergesEqualNodes) {
  expectPass(eliminateCommonSubexpressions, R"(graph(%x: f32[2, 3]) {
  %20: f32[] = constant() {value = 2.0}
  %21: f32[] = constant() {value = 2.0}
  %c: f16[] = constant() {value = 2.0}
  %0 = permute(%x) {perm = [1, 0]}
  %1 = permute(%x) {perm = [1, 0]}
  %2 = mul(%0, %20)
  %3 = mul(%1, %21)
  %4 = mul(%1, %c)
  %5 = add(%2, %3)
  %6 = add(%5, %4)
  %7: f32[3] = eager(%x) {schema = "aten::rand_like"}
  %8: f32[3] = eager(%x) {schema = "aten::rand_like"}
  %9 = sum(%0) {dims = [0]}
  %10 = sum(%0) {dims = [1]}
  return(%6, %7, %8, %9, %10)
})",
             R"(graph(%x: f32[2, 3]) {
  %20: f32[] = constant() {value = 2.0}
  %c: f16[] = constant() {value = 2.0}
  %0 = permute(%x) {perm = [1, 0]}
  %2 = mul(%0, %20)
  %4 = mul(%0, %c)
  %5 = add(%2, %2)
  %6 = add(%5, %4)
  %7: f32[3] = eager(%x) {schema = "aten::rand_like"}
  %8: f32[3] = eager(%x) {schema = "aten::rand_like"}
  %9 = sum(%0) {dims = [0]}
  %10 = sum(%0) {dims = [1]}
  return(%6, %7, %8, %9, %10)
})");
}

TEST(FoldConstants, ScalarArithmeticAndCasts) {
  expectPass(foldConstants, R"(graph(%x: f32[4]) {
  %one: f32[] = constant() {value = 1.0}
  %eight: f32[] = constant() {value = 64.0}
  %i: i64[] = constant() {value = 3}
  %0 = sqrt(%eight)
  %1 = div(%one, %0)
  %2 = mul(%x, %1)
  %3: f16[] = cast(%i)
  %4 = neg(%3)
  %5 = add(%x, %4)
  %6 = exp(%one)
  %7 = mul(%x, %6)
  return(%2, %5, %7)
})",
             R"(graph(%x: f32[4]) {
  %one: f32[] = constant() {value = 1.0}
  %21: f32[] = constant() {value = 0.125}
  %20: f16[] = constant() {value = -3.0}
  %2 = mul(%x, %21)
  %5 = add(%x, %20)
  %6 = exp(%one)
  %7 = mul(%x, %6)
  return(%2, %5, %7)
})");
}

TEST(FoldConstants, RoundsToResultDType) {
  // 0.1 is not representable in f16: operands round to f16 first, the sum rounds again.
  expectPass(foldConstants, R"(graph() {
  %20: f16[] = constant() {value = 0.1}
  %21: f16[] = constant() {value = 0.2}
  %0 = add(%20, %21)
  %i: i32[] = constant() {value = 7}
  %j: i32[] = constant() {value = 2}
  %1 = div(%i, %j)
  %2 = lt(%i, %j)
  return(%0, %1, %2)
})",
             R"(graph() {
  %22: f16[] = constant() {value = 0.2998046875}
  %23: f32[] = constant() {value = 3.5}
  %24: bool[] = constant() {value = 0.0}
  return(%22, %23, %24)
})");
  EXPECT_EQ(roundToDType(0.1, ir::DType::kFloat16), 0.0999755859375);
  EXPECT_EQ(roundToDType(0.1, ir::DType::kBFloat16), 0.10009765625);
  EXPECT_EQ(roundToDType(65520.0, ir::DType::kFloat16), INFINITY);
  EXPECT_EQ(roundToDType(65519.0, ir::DType::kFloat16), 65504.0);
  EXPECT_EQ(roundToDType(1e-8, ir::DType::kFloat16), 0.0);
  EXPECT_EQ(roundToDType(3e-8, ir::DType::kFloat16), 5.9604644775390625e-08);  // min subnormal
  EXPECT_EQ(roundToDType(-2.7, ir::DType::kInt64), -2.0);
  EXPECT_EQ(roundToDType(2.5, ir::DType::kBool), 1.0);
}

TEST(Canonicalize, DropsExactIdentities) {
  expectPass(canonicalize, R"(graph(%x: f16[s0, 8], %i: i64[8]) {
  %one: f32[] = constant() {value = 1.0}
  %zero: f32[] = constant() {value = 0.0}
  %nzero: f32[] = constant() {value = -0.0}
  %0: f16[s0, 8] = reshape(%x)
  %1: f16[s0, 8] = expand(%0)
  %2 = permute(%1) {perm = [0, 1]}
  %3: f16[s0, 8] = cast(%2)
  %4 = mul(%one, %3)
  %5 = div(%4, %one)
  %6 = sub(%5, %zero)
  %7 = add(%6, %nzero)
  %8 = add(%7, %zero)
  %9 = mul(%i, %one)
  return(%8, %9)
})",
             R"(graph(%x: f16[s0, 8], %i: i64[8]) {
  %one: f32[] = constant() {value = 1.0}
  %zero: f32[] = constant() {value = 0.0}
  %nzero: f32[] = constant() {value = -0.0}
  %0: f16[s0, 8] = reshape(%x)
  %1: f16[s0, 8] = expand(%x)
  %2 = permute(%x) {perm = [0, 1]}
  %3: f16[s0, 8] = cast(%x)
  %4 = mul(%x, %one)
  %5 = div(%x, %one)
  %6 = sub(%x, %zero)
  %7 = add(%x, %nzero)
  %8 = add(%x, %zero)
  %9 = mul(%i, %one)
  return(%8, %9)
})");
}

TEST(Canonicalize, MergesViewChainsAndNormalizesDims) {
  expectPass(canonicalize, R"(graph(%x: f32[2, 3, 4]) {
  %c: f32[] = constant() {value = 3.0}
  %0: f32[6, 4] = reshape(%x)
  %1: f32[24] = reshape(%0)
  %2 = permute(%x) {perm = [1, 2, 0]}
  %3 = permute(%2) {perm = [2, 0, 1]}
  %4 = permute(%2) {perm = [0, -1, 1]}
  %5 = add(%c, %x)
  %6 = softmax(%5) {dim = -1}
  %7 = sum(%6) {dims = [-1, 0], keepdim = true}
  return(%1, %3, %4, %7)
})",
             R"(graph(%x: f32[2, 3, 4]) {
  %c: f32[] = constant() {value = 3.0}
  %0: f32[6, 4] = reshape(%x)
  %1: f32[24] = reshape(%x)
  %2 = permute(%x) {perm = [1, 2, 0]}
  %3 = permute(%x) {perm = [0, 1, 2]}
  %4 = permute(%x) {perm = [1, 0, 2]}
  %5 = add(%x, %c)
  %6 = softmax(%5) {dim = 2}
  %7 = sum(%6) {dims = [0, 2], keepdim = true}
  return(%1, %3, %4, %7)
})");
}

// Note [Views of generators]: views of aranges and fills, and integer casts of aranges, are
// generators of their own; an expand only where pointwise ops read it.
TEST(Canonicalize, ViewsOfGeneratorsAreGenerators) {
  auto canonicalizeThenDce = [](ir::Graph& g) {
    const bool changed = canonicalize(g);
    eliminateDeadCode(g);
    return changed;
  };
  expectPass(canonicalizeThenDce, R"(graph(%x: f32[s0, s1]) {
  %c: i64[] = constant() {value = 1.0}
  %a: i64[s1] = arange() {dim = 0, start = 0, step = 1}
  %q: i64[s1, 1] = reshape(%a)
  %k: i64[1, s1] = reshape(%a)
  %m = le(%k, %q)
  %b: i64[10] = arange() {dim = 0, start = 3, step = -1}
  %s: i64[4] = slice(%b) {dim = 0, start = 2, step = 2}
  %n: i32[4] = cast(%s)
  %r: i64[2, 10] = expand(%b)
  %p = add(%r, %c)
  %f: f32[1, 8] = fill() {value = 0.5}
  %g: f32[4, 8] = expand(%f)
  %v: f32[8] = reshape(%f)
  return(%m, %n, %p, %g, %v)
})",
             R"(graph(%x: f32[s0, s1]) {
  %c: i64[] = constant() {value = 1.0}
  %0: i64[s1, 1] = arange() {dim = 0, start = 0, step = 1}
  %1: i64[1, s1] = arange() {dim = 1, start = 0, step = 1}
  %m = le(%1, %0)
  %2: i32[4] = arange() {dim = 0, start = 1, step = -2}
  %3: i64[2, 10] = arange() {dim = 1, start = 3, step = -1}
  %p = add(%3, %c)
  %f: f32[1, 8] = fill() {value = 0.5}
  %g: f32[4, 8] = expand(%f)
  %4: f32[8] = fill() {value = 0.5}
  return(%m, %2, %p, %g, %4)
})");
}

TEST(NormalizeBroadcasts, DropsExpandFeedingBroadcastingOps) {
  expectPass(normalizeBroadcasts, R"(graph(%x: f32[s0, 8], %21: f32[8], %m: bool[s0, 1]) {
  %0: f32[s0, 8] = expand(%21)
  %1 = add(%x, %0)
  %2 = mul(%0, %x)
  %3: bool[s0, 8] = expand(%m)
  %4 = where(%3, %x, %1)
  %5: f32[s0, 8] = expand(%21)
  %6 = exp(%5)
  %7 = add(%5, %x)
  %8: f32[s0, 8] = expand(%21)
  %9 = add(%8, %8)
  return(%2, %4, %6, %7, %9)
})",
             R"(graph(%x: f32[s0, 8], %21: f32[8], %m: bool[s0, 1]) {
  %1 = add(%x, %21)
  %2 = mul(%21, %x)
  %4 = where(%m, %x, %1)
  %5: f32[s0, 8] = expand(%21)
  %6 = exp(%5)
  %7 = add(%5, %x)
  %8: f32[s0, 8] = expand(%21)
  %9 = add(%21, %8)
  return(%2, %4, %6, %7, %9)
})");
}

TEST(Pipeline, ReachesFixedPoint) {
  auto g = ir::parse(R"(graph(%x: f16[s0, 64], %w: f16[64] param) {
  %one: f32[] = constant() {value = 1.0}
  %d: f32[] = constant() {value = 64.0}
  %0 = sqrt(%d)
  %1 = div(%one, %0)
  %e: f16[s0, 64] = expand(%w)
  %2 = mul(%x, %e)
  %3 = mul(%1, %2)
  %4: f16[s0, 64] = reshape(%3)
  %5 = softmax(%4) {dim = -1}
  %6 = mul(%x, %w)
  %7 = mul(%6, %1)
  %8 = softmax(%7) {dim = 1}
  %9 = add(%5, %8)
  return(%9)
})");
  int rounds = runDefaultPasses(*g);
  EXPECT_GE(rounds, 1);
  EXPECT_LT(rounds, kMaxPipelineRounds);
  EXPECT_EQ(ir::print(*g), ir::print(*ir::parse(R"(graph(%x: f16[s0, 64], %w: f16[64] param) {
  %30: f32[] = constant() {value = 0.125}
  %2 = mul(%x, %w)
  %3 = mul(%2, %30)
  %5 = softmax(%3) {dim = 1}
  %9 = add(%5, %5)
  return(%9)
})")));
  EXPECT_EQ(runDefaultPasses(*g), 0);
}

}  // namespace
}  // namespace kiln::passes

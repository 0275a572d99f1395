// kiln-warmup's input specs: parsing, symbol sharing and bucket combinations (no LibTorch).
#include <tuple>

#include <gtest/gtest.h>

#include "integrations/warmup/input_spec.h"
#include "src/support/error.h"

namespace kiln::warmup {
namespace {

std::string parseError(std::string_view text) {
  try {
    parseInputSpec(text);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string symbolError(const std::vector<std::string>& texts) {
  std::vector<InputSpec> specs;
  for (const auto& t : texts) specs.push_back(parseInputSpec(t));
  try {
    assignSymbols(specs);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<InputSpec> parseAll(const std::vector<std::string>& texts) {
  std::vector<InputSpec> specs;
  for (const auto& t : texts) specs.push_back(parseInputSpec(t));
  return specs;
}

TEST(InputSpec, ParsesStaticAndDynamicDims) {
  InputSpec s = parseInputSpec("x:float16:[1..64,128,768]");
  EXPECT_EQ(s.name, "x");
  EXPECT_EQ(s.dtype, ir::DType::kFloat16);
  ASSERT_EQ(s.dims.size(), 3u);
  EXPECT_TRUE(s.dims[0].dynamic);
  EXPECT_EQ(s.dims[0].lo, 1);
  EXPECT_EQ(s.dims[0].hi, 64);
  EXPECT_TRUE(s.dims[0].symbol.empty());
  EXPECT_FALSE(s.dims[1].dynamic);
  EXPECT_EQ(s.dims[1].lo, 128);
  EXPECT_EQ(s.dims[2].lo, 768);
  EXPECT_EQ(toString(s), "x:float16:[1..64,128,768]");
}

TEST(InputSpec, DtypeAliases) {
  EXPECT_EQ(parseInputSpec("a:half:[2]").dtype, ir::DType::kFloat16);
  EXPECT_EQ(parseInputSpec("a:bfloat16:[2]").dtype, ir::DType::kBFloat16);
  EXPECT_EQ(parseInputSpec("a:float:[2]").dtype, ir::DType::kFloat32);
  EXPECT_EQ(parseInputSpec("a:float32:[2]").dtype, ir::DType::kFloat32);
}

TEST(InputSpec, NamedDimsAndReferences) {
  InputSpec x = parseInputSpec("x:half:[b=1..64,128]");
  EXPECT_EQ(x.dims[0].symbol, "b");
  EXPECT_TRUE(x.dims[0].rangeGiven);
  EXPECT_EQ(toString(x), "x:float16:[b=1..64,128]");
  InputSpec m = parseInputSpec("mask:half:[b,1,128]");
  EXPECT_TRUE(m.dims[0].dynamic);
  EXPECT_FALSE(m.dims[0].rangeGiven);
  EXPECT_EQ(m.dims[0].symbol, "b");
  EXPECT_EQ(toString(m), "mask:float16:[b,1,128]");
}

TEST(InputSpec, BadSpecsNameTheProblem) {
  EXPECT_EQ(parseError("x:float61:[1,2]"),
            "--input \"x:float61:[1,2]\": unknown dtype \"float61\" (expected float16, half, "
            "bfloat16, float32, float, int64, long, int32, int or bool)");
  EXPECT_EQ(parseError("x:float16:[1..]"),
            "--input \"x:float16:[1..]\": dim 0 (\"1..\"): expected lo..hi with non-negative "
            "integers, e.g. 1..64");
  EXPECT_EQ(parseError("x:float16:[4,64..1]"),
            "--input \"x:float16:[4,64..1]\": dim 1 (\"64..1\"): empty range: 64 > 1");
  EXPECT_EQ(parseError("x:float16"),
            "--input \"x:float16\": expected name:dtype:[dims], e.g. x:float16:[1..64,128]");
  EXPECT_EQ(parseError("x:float16:1,2"),
            "--input \"x:float16:1,2\": dims \"1,2\" must be in brackets, e.g. [1..64,128]");
  EXPECT_EQ(parseError("x:float16:[]"),
            "--input \"x:float16:[]\": no dims (a scalar input cannot be warmed up)");
  EXPECT_EQ(parseError("x:float16:[0,4]"),
            "--input \"x:float16:[0,4]\": dim 0 (\"0\"): a static size must be >= 1");
  EXPECT_EQ(parseError("1x:float16:[4]"),
            "--input \"1x:float16:[4]\": bad input name \"1x\" (letters, digits and _; not "
            "starting with a digit)");
  EXPECT_EQ(parseError("x:float16:[b=4]"),
            "--input \"x:float16:[b=4]\": dim 0 (\"b=4\"): a named dim needs a range, e.g. "
            "b=1..64");
  EXPECT_EQ(parseError("x:float16:[4,-3]"),
            "--input \"x:float16:[4,-3]\": dim 1 (\"-3\"): expected a size, lo..hi, name=lo..hi "
            "or name");
  EXPECT_EQ(parseError("x:float16:[4,]"),
            "--input \"x:float16:[4,]\": dim 1 (\"\"): expected a size, lo..hi, name=lo..hi or "
            "name");
  EXPECT_EQ(parseError("x:int8:[4]"),
            "--input \"x:int8:[4]\": unknown dtype \"int8\" (expected float16, half, bfloat16, "
            "float32, float, int64, long, int32, int or bool)");
  EXPECT_EQ(parseError("x:float16:[4,2147483648]"),
            "--input \"x:float16:[4,2147483648]\": dim 1 (\"2147483648\"): 2147483648 is larger "
            "than 2147483647, the largest size kiln-warmup accepts");
  EXPECT_EQ(parseError("x:float16:[1..99999999999999999999999]"),
            "--input \"x:float16:[1..99999999999999999999999]\": dim 0 "
            "(\"1..99999999999999999999999\"): 99999999999999999999999 is larger than 2147483647, "
            "the largest size kiln-warmup accepts");
  EXPECT_EQ(toString(parseInputSpec("ids:long:[b=1..8,16]")), "ids:int64:[b=1..8,16]");
  EXPECT_EQ(toString(parseInputSpec("m:bool:[b=1..8,16]")), "m:bool:[b=1..8,16]");
  EXPECT_EQ(toString(parseInputSpec("p:int:[4]")), "p:int32:[4]");
}

TEST(Symbols, SameIndexAndRangeShareOneSymbol) {
  auto specs = parseAll({"x:float16:[1..64,128,768]", "mask:float16:[1..64,1,128]"});
  std::vector<Symbol> syms = assignSymbols(specs);
  ASSERT_EQ(syms.size(), 1u);
  EXPECT_EQ(syms[0].name, "s0");
  EXPECT_EQ(syms[0].lo, 1);
  EXPECT_EQ(syms[0].hi, 64);
  ASSERT_EQ(syms[0].uses.size(), 2u);
  EXPECT_EQ(syms[0].uses[0].input, 0);
  EXPECT_EQ(syms[0].uses[1].input, 1);
  EXPECT_EQ(syms[0].uses[1].dim, 0);
}

TEST(Symbols, DifferentIndexOrRangeGetOwnSymbols) {
  auto specs = parseAll({"x:float:[1..8,1..8]", "y:float:[1..8,1..16]"});
  std::vector<Symbol> syms = assignSymbols(specs);
  // x.0 and y.0 share; x.1 (1..8 at dim 1) and y.1 (1..16 at dim 1) do not; x.0 and x.1 do not.
  ASSERT_EQ(syms.size(), 3u);
  EXPECT_EQ(syms[0].uses.size(), 2u);
  EXPECT_EQ(syms[1].name, "s1");
  EXPECT_EQ(syms[1].uses.size(), 1u);
  EXPECT_EQ(syms[1].uses[0].input, 0);
  EXPECT_EQ(syms[1].uses[0].dim, 1);
  EXPECT_EQ(syms[2].name, "s2");
  EXPECT_EQ(syms[2].hi, 16);
}

TEST(Symbols, NamedDimsShareAcrossIndicesAndNotWithUnnamed) {
  auto specs = parseAll({"q:half:[b=2..8,16]", "k:half:[16,b]", "v:half:[2..8,16]"});
  std::vector<Symbol> syms = assignSymbols(specs);
  ASSERT_EQ(syms.size(), 2u);
  EXPECT_EQ(syms[0].name, "b");
  ASSERT_EQ(syms[0].uses.size(), 2u);
  EXPECT_EQ(syms[0].uses[1].input, 1);
  EXPECT_EQ(syms[0].uses[1].dim, 1);
  EXPECT_EQ(syms[1].name, "s1");  // v's unnamed dim does not join b, though its range is b's
  EXPECT_EQ(syms[1].uses.size(), 1u);
}

TEST(Symbols, ReferenceBeforeDefinition) {
  auto specs = parseAll({"mask:half:[b,1,64]", "x:half:[b=2..4,64]"});
  std::vector<Symbol> syms = assignSymbols(specs);
  ASSERT_EQ(syms.size(), 1u);
  EXPECT_EQ(syms[0].lo, 2);
  EXPECT_EQ(syms[0].hi, 4);
  EXPECT_EQ(syms[0].uses.size(), 2u);
}

TEST(Symbols, Errors) {
  EXPECT_EQ(symbolError({"x:half:[b,128]"}),
            "--input x: dim 0 uses symbol b, which no input defines (write b=lo..hi once)");
  EXPECT_EQ(symbolError({"x:half:[b=1..8]", "y:half:[b=1..16]"}),
            "--input y: symbol b is 1..16 here but 1..8 elsewhere");
  EXPECT_EQ(symbolError({"x:half:[1..8,s0=1..4]"}),
            "--input: symbol name s0 clashes with the automatic name of an unnamed dynamic dim; "
            "pick another name");
  EXPECT_EQ(symbolError({"x:half:[4]", "x:half:[8]"}), "--input: input name \"x\" given twice");
}

TEST(Buckets, EdgesIntersectingARange) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(bucketEdgesIn(1, 64), (V{2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(bucketEdgesIn(3, 5), (V{4, 8}));
  EXPECT_EQ(bucketEdgesIn(5, 5), (V{8}));
  EXPECT_EQ(bucketEdgesIn(2, 2), (V{2}));
  EXPECT_EQ(bucketEdgesIn(9, 16), (V{16}));
  EXPECT_EQ(bucketEdgesIn(17, 17), (V{32}));
  EXPECT_EQ(bucketEdgesIn(1, 65), (V{2, 4, 8, 16, 32, 64, 128}));
  EXPECT_EQ(bucketEdgesIn(1, 1), V{});
  EXPECT_EQ(bucketEdgesIn(0, 1), V{});
  EXPECT_TRUE(rangeHasUnwarmableBuckets(1, 64));
  EXPECT_FALSE(rangeHasUnwarmableBuckets(2, 64));
}

TEST(Buckets, CartesianProductWithExamplesInsideEachBucket) {
  auto specs = parseAll({"x:float:[1..50,3..4,128]"});
  auto syms = assignSymbols(specs);
  ASSERT_EQ(syms.size(), 2u);
  auto combos = bucketCombos(specs, syms);
  ASSERT_EQ(combos.size(), 6u * 1u);  // s0: 2..64 (6 buckets), s1: 4 (1 bucket)
  EXPECT_EQ(combos[0].edges, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(combos[0].examples, (std::vector<int64_t>{2, 4}));
  // Both in bucket 4: s0 picks first, so s1 avoids s0's 4 and takes 3.
  EXPECT_EQ(combos[1].edges, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(combos[1].examples, (std::vector<int64_t>{4, 3}));
  // The top bucket's example is clamped to the range: 50, not 64.
  EXPECT_EQ(combos[5].edges, (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(combos[5].examples, (std::vector<int64_t>{50, 4}));
  auto shapes = exampleShapes(specs, syms, combos[5]);
  EXPECT_EQ(shapes, (std::vector<std::vector<int64_t>>{{50, 4, 128}}));
}

TEST(Buckets, ExamplesAvoidStaticSizes) {
  auto specs = parseAll({"x:float:[1..64,64]", "m:float:[1..64,1,64]"});
  auto syms = assignSymbols(specs);
  auto combos = bucketCombos(specs, syms);
  ASSERT_EQ(combos.size(), 6u);
  EXPECT_EQ(combos.back().edges, (std::vector<int64_t>{64}));
  EXPECT_EQ(combos.back().examples, (std::vector<int64_t>{63}));
  auto shapes = exampleShapes(specs, syms, combos.back());
  EXPECT_EQ(shapes, (std::vector<std::vector<int64_t>>{{63, 64}, {63, 1, 64}}));
}

TEST(Buckets, OdometerOrderAndDistinctExamples) {
  auto specs = parseAll({"x:float:[2..8,2..8]"});
  auto syms = assignSymbols(specs);
  auto combos = bucketCombos(specs, syms);
  ASSERT_EQ(combos.size(), 9u);
  EXPECT_EQ(combos[1].edges, (std::vector<int64_t>{2, 4}));  // last symbol varies fastest
  EXPECT_EQ(combos[3].edges, (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(combos[8].examples, (std::vector<int64_t>{8, 7}));
  // Bucket 2 holds only size 2: a collision cannot be avoided there.
  EXPECT_EQ(combos[0].examples, (std::vector<int64_t>{2, 2}));
}

// Explicit edges (--buckets, the runtime's BucketPolicy): bucket E holds (previous edge, E], and
// sizes above the last edge are the overflow bucket.
TEST(Buckets, ExplicitEdgesAndTheOverflowBucket) {
  using B = std::vector<std::tuple<int64_t, int64_t, int64_t>>;
  auto asTuples = [](const std::vector<WarmBucket>& bs) {
    B out;
    for (const WarmBucket& b : bs) out.emplace_back(b.edge, b.lo, b.hi);
    return out;
  };
  EXPECT_EQ(asTuples(bucketsIn(1, 600, {64, 128, 512})),
            (B{{64, 2, 64}, {128, 65, 128}, {512, 129, 512}, {kOverflowEdge, 513, 600}}));
  EXPECT_EQ(asTuples(bucketsIn(100, 128, {64, 128, 512})), (B{{128, 100, 128}}));
  EXPECT_EQ(asTuples(bucketsIn(1, 1, {64})), B{});
  EXPECT_EQ(asTuples(bucketsIn(1, 8, {})), (B{{2, 2, 2}, {4, 3, 4}, {8, 5, 8}}));
  auto specs = parseAll({"x:float:[b=1..40,s=1..300]"});
  auto syms = assignSymbols(specs);
  auto combos = bucketCombos(specs, syms, {{"s", {128, 256}}});
  ASSERT_EQ(combos.size(), 6u * 3u);  // b: 2..64 (6), s: 128, 256, overflow
  EXPECT_EQ(combos[2].edges, (std::vector<int64_t>{2, kOverflowEdge}));
  EXPECT_EQ(combos[2].examples, (std::vector<int64_t>{2, 300}));
}

TEST(Buckets, NoSymbolsIsOneCombination) {
  auto specs = parseAll({"x:float:[4,64]"});
  auto syms = assignSymbols(specs);
  auto combos = bucketCombos(specs, syms);
  ASSERT_EQ(combos.size(), 1u);
  EXPECT_TRUE(combos[0].edges.empty());
  EXPECT_EQ(exampleShapes(specs, syms, combos[0]), (std::vector<std::vector<int64_t>>{{4, 64}}));
}

}  // namespace
}  // namespace kiln::warmup

#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/support/error.h"

namespace kiln::ir {
namespace {

void expectRoundTrip(const std::string& text) {
  auto g = parse(text);
  EXPECT_EQ(print(*g), text);
  auto again = parse(print(*g));
  EXPECT_EQ(print(*again), text);
}

TEST(Text, RoundTripHeaderExample) {
  expectRoundTrip(R"(graph(%x: f16[s0, 128], %w: f16[128] param) {
  %c: f32[] = constant() {value = 0.5}
  %0: f16[s0, 128] = mul(%x, %w)
  %1: f16[s0, 128] = add(%0, %c)
  %2: f16[s0, 128] = softmax(%1) {dim = 1}
  return(%2)
}
)");
}

TEST(Text, RoundTripAttentionBlock) {
  expectRoundTrip(R"(graph(%x: bf16[s0, s1, 768], %wq: bf16[768, 768] param, %mask: bool[s1, s1]) {
  %scale: bf16[] = constant() {value = 0.125}
  %0: bf16[s0, s1, 768] = linear(%x, %wq)
  %1: bf16[s0, s1, 12, 64] = reshape(%0)
  %2: bf16[s0, 12, s1, 64] = permute(%1) {perm = [0, 2, 1, 3]}
  %3: bf16[s0, 12, 64, s1] = permute(%2) {perm = [0, 1, 3, 2]}
  %4: bf16[s0, 12, s1, s1] = matmul(%2, %3)
  %5: bf16[s0, 12, s1, s1] = mul(%4, %scale)
  %6: f32[] = constant() {value = -inf}
  %7: bf16[s0, 12, s1, s1] = where(%mask, %6, %5)
  %8: bf16[s0, 12, s1, s1] = softmax(%7) {dim = 3}
  %9: bf16[s0, 12, s1, 64] = sdpa(%2, %2, %2, %mask) {is_causal = false, scale = 0.125}
  %10: bf16[s0, 768*s1] = reshape(%9)
  %11: f32[s0, 768*s1] = cast(%10)
  %12: f32[s0, 1] = sum(%11) {dims = [1], keepdim = true}
  %13: f32[s0, 4] = expand(%12)
  %14: f32[s0, 2] = slice(%13) {dim = 1, start = 1, step = 2}
  %a: f32[3], %b: i64[] = eager(%14) {eager_id = 3, schema = "aten::weird \"op\""}
  return(%8, %14)
}
)");
}

TEST(Text, RenumbersAndKeepsNames) {
  auto g = parse(R"(
  // comments are allowed
  graph(%x: f32[4]) {
    %7 = exp(%x)          // type inferred
    %h = neg(%7)
    %3: f32[4] = add(%h, %7)
    return(%3, %h)
  })");
  EXPECT_EQ(print(*g), R"(graph(%x: f32[4]) {
  %0: f32[4] = exp(%x)
  %h: f32[4] = neg(%0)
  %1: f32[4] = add(%h, %0)
  return(%1, %h)
}
)");
}

TEST(Text, SymbolNames) {
  auto g = parse("graph(%x: f32[batch, s1]) {\n  return(%x)\n}\n");
  // "batch" gets id 0; s1 keeps its number.
  EXPECT_EQ(g->numSymbols(), 2);
  EXPECT_EQ(g->symbolName(0), "batch");
  EXPECT_EQ(print(*g), "graph(%x: f32[batch, s1]) {\n  return(%x)\n}\n");
  auto h = parse("graph(%x: f32[s1*s0+2]) {\n  return(%x)\n}\n");
  EXPECT_EQ(h->inputs()[0]->shape()[0], SymDim::symbol(0) * SymDim::symbol(1) + SymDim(2));
  EXPECT_EQ(print(*h), "graph(%x: f32[s0*s1+2]) {\n  return(%x)\n}\n");
}

TEST(Text, AttrValues) {
  auto g = parse(R"(graph(%x: f32[4]) {
  %0: f32[4] = eager(%x) {a = -3, b = 2.5e-07, c = true, d = "q\\x", e = [], f = [-1, 2], g = 3.0, schema = "s"}
  return(%0)
}
)");
  const Attrs& a = g->nodes()[1]->attrs();
  EXPECT_EQ(a.getInt("a"), -3);
  EXPECT_DOUBLE_EQ(a.getDouble("b"), 2.5e-7);
  EXPECT_TRUE(a.getBool("c"));
  EXPECT_EQ(a.getString("d"), "q\\x");
  EXPECT_TRUE(a.getInts("e").empty());
  EXPECT_EQ(a.getInts("f"), (std::vector<int64_t>{-1, 2}));
  EXPECT_TRUE(std::holds_alternative<double>(*a.find("g")));
  expectRoundTrip(print(*g));
}

std::string parseError(const std::string& text) {
  try {
    parse(text);
  } catch (const UserError& e) {
    return e.what();
  }
  return "no error";
}

TEST(Text, Errors) {
  EXPECT_EQ(parseError("grph() {\n  return()\n}"), "line 1:1: expected 'graph', got 'grph'");
  EXPECT_EQ(parseError("graph(%x: f32[4]) {\n  %0 = exp(%y)\n  return(%0)\n}"),
            "line 2:12: use of undefined value %y");
  EXPECT_EQ(parseError("graph(%x: f32[4]) {\n  %0 = frob(%x)\n  return(%0)\n}"),
            "line 2:8: unknown op 'frob'");
  EXPECT_EQ(parseError("graph(%x: f33[4]) {\n  return(%x)\n}").substr(0, 22),
            "line 1:11: unknown dty");
  EXPECT_EQ(parseError("graph(%x: f32[4) {\n  return(%x)\n}").substr(0, 10), "line 1:15:");
  EXPECT_EQ(parseError("graph(%x: f32[4]) {\n  %0 = exp(%x)\n  %0 = exp(%x)\n  return(%0)\n}"),
            "line 3:3: value %0 is defined twice");
  std::string e = parseError("graph(%x: f32[4]) {\n  %0: f16[4] = exp(%x)\n  return(%0)\n}");
  EXPECT_EQ(e, "line 2:3: exp result declared f16[4], but its operands give f32[4]");
  e = parseError("graph(%x: f32[4], %y: f32[5]) {\n  %0 = add(%x, %y)\n  return(%0)\n}");
  EXPECT_NE(e.find("line 2:8: add(f32[4], f32[5])"), std::string::npos) << e;
  e = parseError("graph(%x: f32[4]) {\n  %0 = reshape(%x)\n  return(%0)\n}");
  EXPECT_EQ(e, "line 2:3: reshape needs an explicit result type");
  e = parseError("graph(%x: f32[4]) {\n  %0: f32[4] = exp(%x) {a = }\n  return(%0)\n}");
  EXPECT_NE(e.find("line 2:29: expected a value"), std::string::npos) << e;
  e = parseError("graph(%x: f32[4]) {\n  %0: f32[5] = reshape(%x)\n  return(%0)\n}");
  EXPECT_NE(e.find("changes the element count"), std::string::npos) << e;
  e = parseError(
      "graph(%x: f32[4]) {\n  %a, %b: f32[4] = eager(%x) {schema = \"s\"}\n  return(%x)\n}");
  EXPECT_EQ(e, "line 2:3: eager results need explicit types");
  e = parseError("graph(%x: f32[4]) {\n  return(%x)\n} trailing");
  EXPECT_EQ(e, "line 3:3: expected end of text, got 'trailing'");
}

}  // namespace
}  // namespace kiln::ir

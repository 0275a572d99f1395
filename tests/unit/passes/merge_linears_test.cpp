// mergeSiblingLinears on graphs written as text (Note [Merged linears]): linears that read one
// value become one linear over concatenated weights and slices of its columns; near misses stay.
#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/eliminate_dead_code.h"
#include "src/passes/merge_linears.h"
#include "tests/support/graph_counts.h"

namespace kiln::passes {
namespace {

using ::kiln::testing::countOf;

TEST(MergeLinears, QkvAndGateUpBecomeOneGemmEach) {
  auto g = ir::parse(
      R"(graph(%x: f16[s0, s1, 64], %wq: f16[64, 64] param, %wk: f16[32, 64] param, %wv: f16[32, 64] param, %wg: f16[128, 64] param, %bg: f16[128] param, %wu: f16[128, 64] param, %bu: f16[128] param) {
  %q = linear(%x, %wq)
  %k = linear(%x, %wk)
  %v = linear(%x, %wv)
  %kv = cat(%k, %v) {dim = 2}
  %h = add(%q, %kv)
  %g = linear(%h, %wg, %bg)
  %u = linear(%h, %wu, %bu)
  %s = silu(%g)
  %y = mul(%s, %u)
  return(%y)
})");
  MergedLinears m = mergeSiblingLinears(*g, {"wq", "wk", "wv", "wg", "bg", "wu", "bu"});
  eliminateDeadCode(*g);
  ir::verify(*g);
  EXPECT_EQ(m.groups, 2);
  EXPECT_EQ(m.linears, 5);
  EXPECT_EQ(m.bytes, (128 * 64 + 256 * 64 + 256) * 2);
  ASSERT_EQ(m.params.size(), 3u);
  EXPECT_EQ(m.params[0].name, "wq+wk+wv");
  EXPECT_EQ(m.params[0].sources, (std::vector<std::string>{"wq", "wk", "wv"}));
  EXPECT_EQ(m.params[1].name, "wg+wu");
  EXPECT_EQ(m.params[2].name, "bg+bu");
  EXPECT_EQ(m.params[2].sources, (std::vector<std::string>{"bg", "bu"}));
  EXPECT_EQ(m.describe, (std::vector<std::string>{"{wq,wk,wv}: [128, 64]", "{wg,wu}: [256, 64]"}));
  EXPECT_EQ(countOf(*g, ir::OpKind::kLinear), 2);
  EXPECT_EQ(countOf(*g, ir::OpKind::kSlice), 5);
  // Each slice takes its linear's columns, in order.
  std::vector<std::pair<int64_t, std::string>> slices;
  for (const auto& n : g->nodes())
    if (n->kind() == ir::OpKind::kSlice) {
      EXPECT_EQ(n->attrs().getInt("dim"), 2);
      const ir::Node* lin = n->input(0)->producer();
      ASSERT_EQ(lin->kind(), ir::OpKind::kLinear);
      slices.emplace_back(n->attrs().getInt("start"),
                          lin->input(1)->producer()->attrs().getString("name") + " " +
                              ir::toString(n->output()->shape()));
    }
  EXPECT_EQ(slices, (std::vector<std::pair<int64_t, std::string>>{{0, "wq+wk+wv [s0, s1, 64]"},
                                                                  {64, "wq+wk+wv [s0, s1, 32]"},
                                                                  {96, "wq+wk+wv [s0, s1, 32]"},
                                                                  {0, "wg+wu [s0, s1, 128]"},
                                                                  {128, "wg+wu [s0, s1, 128]"}}));
  for (const auto& n : g->nodes())
    if (n->kind() == ir::OpKind::kLinear && n->inputs().size() == 3)
      EXPECT_EQ(n->input(2)->producer()->attrs().getString("name"), "bg+bu");
}

TEST(MergeLinears, NearMissesStayApart) {
  const std::string source =
      R"(graph(%x: f16[s0, 64], %w1: f16[32, 64] param, %b1: f16[32] param, %w2: f16[32, 64] param, %w3: f32[32, 64] param, %b3: f32[32] param, %w4: f16[32, 64] param, %b4: f16[32] param) {
  %a = linear(%x, %w1, %b1) {activation = "relu"}
  %b = linear(%x, %w2)
  %c: f32[s0, 64] = cast(%x)
  %d = linear(%c, %w3, %b3)
  %e = linear(%x, %w4, %b4)
  %f = add(%a, %b)
  %h = add(%f, %e)
  return(%h, %d)
})";
  // An epilogue activation, another input, a bias on one and not the other: nothing to merge.
  auto g = ir::parse(source);
  const std::string before = ir::print(*g);
  MergedLinears m = mergeSiblingLinears(*g, {});
  EXPECT_EQ(m.groups, 0);
  EXPECT_EQ(ir::print(*g), before);

  // A graph output, an eager reader, a weight over the byte limit, a name already taken, or an
  // accept callback that says no: each keeps its pair apart.
  const std::string pair =
      R"(graph(%x: f16[s0, 64], %w1: f16[32, 64] param, %w2: f16[32, 64] param) {
  %a = linear(%x, %w1)
  %b = linear(%x, %w2)
  %c = add(%a, %b)
  return(%c)
})";
  auto merges = [](const std::string& text, const std::vector<std::string>& taken = {},
                   const AcceptSources& accept = {}, int64_t maxBytes = kMaxMergedLinearBytes) {
    auto graph = ir::parse(text);
    const int groups = mergeSiblingLinears(*graph, taken, accept, maxBytes).groups;
    ir::verify(*graph);
    return groups;
  };
  EXPECT_EQ(merges(pair), 1);
  std::string output = pair;
  output.replace(output.find("return(%c)"), 10, "return(%c, %a)");
  EXPECT_EQ(merges(output), 0);
  std::string eager = pair;
  eager.replace(eager.find("return(%c)"), 10,
                "%d: f16[s0, 32] = eager(%b) {schema = \"aten::cumsum\"}\n  return(%c, %d)");
  EXPECT_EQ(merges(eager), 0);
  EXPECT_EQ(merges(pair, {}, {}, 64 * 64 * 2 - 1), 0);
  EXPECT_EQ(merges(pair, {}, {}, 64 * 64 * 2), 1);
  EXPECT_EQ(merges(pair, {"w1+w2"}), 0);
  EXPECT_EQ(merges(pair, {}, [](const std::vector<std::string>&) { return false; }), 0);
}

}  // namespace
}  // namespace kiln::passes

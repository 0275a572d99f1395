// Partition decisions on graphs written as text, checked with FileCheck patterns on explain().
#include "src/partition/partition.h"

#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "src/ir/parser.h"
#include "src/support/error.h"
#include "tests/support/file_check.h"

namespace kiln::partition {
namespace {

using ::kiln::testing::fileCheck;
using ::kiln::testing::FileCheckResult;
using ::kiln::testing::matchesFileCheck;

// Independent of the partitioner's own check: every non-boundary node is in exactly one step, each
// step reads only boundary values or values of earlier steps, groups hold only fusible ops, group
// inputs/outputs are exactly the values crossing the group's border (constants excluded).
::testing::AssertionResult isValidPartition(const ir::Graph& graph, const Partition& p) {
  std::map<const ir::Node*, size_t> stepOf;
  auto fail = [](const std::string& why) { return ::testing::AssertionFailure() << why; };
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Step& s = p.steps[i];
    std::vector<const ir::Node*> nodes;
    if (s.kind == StepKind::kFusion) {
      nodes = s.group.nodes;
      if (nodes.empty()) return fail("empty fusion group");
    } else {
      if (s.node == nullptr) return fail("non-fusion step without node");
      nodes = {s.node};
    }
    for (const ir::Node* n : nodes) {
      if (n->category() == ir::OpCategory::kBoundary) return fail("boundary node in a step");
      if (!stepOf.emplace(n, i).second) return fail("node in two steps");
      if (s.kind == StepKind::kFusion) {
        auto c = n->category();
        if (c != ir::OpCategory::kPointwise && c != ir::OpCategory::kReduction &&
            c != ir::OpCategory::kNormalization)
          return fail("non-fusible node in a group");
      }
    }
  }
  for (const auto& n : graph.nodes()) {
    if (n->category() != ir::OpCategory::kBoundary && stepOf.count(n.get()) == 0)
      return fail("node " + std::string(ir::toString(n->kind())) + " in no step");
  }
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Step& s = p.steps[i];
    std::vector<const ir::Node*> nodes =
        s.kind == StepKind::kFusion ? s.group.nodes : std::vector<const ir::Node*>{s.node};
    std::set<const ir::Value*> reads, writes;
    for (const ir::Node* n : nodes) {
      for (const ir::Value* in : n->inputs()) {
        const ir::Node* prod = in->producer();
        if (prod->category() == ir::OpCategory::kBoundary) {
          if (prod->kind() != ir::OpKind::kConstant) reads.insert(in);
          continue;
        }
        size_t ps = stepOf.at(prod);
        if (ps > i) return fail("step " + std::to_string(i) + " reads a later step's value");
        if (ps < i) reads.insert(in);
      }
      for (const ir::Value* out : n->outputs()) {
        bool outside = graph.isGraphOutput(out);
        for (const ir::Use& u : out->uses()) outside |= stepOf.at(u.user) != i;
        if (outside) writes.insert(out);
      }
    }
    if (s.kind == StepKind::kFusion) {
      std::set<const ir::Value*> in(s.group.inputs.begin(), s.group.inputs.end());
      std::set<const ir::Value*> out(s.group.outputs.begin(), s.group.outputs.end());
      if (in != reads || in.size() != s.group.inputs.size())
        return fail("group " + std::to_string(s.group.id) + " inputs wrong");
      if (out != writes || out.size() != s.group.outputs.size())
        return fail("group " + std::to_string(s.group.id) + " outputs wrong");
      if (static_cast<int>(in.size()) > PartitionOptions{}.maxGroupInputs)
        return fail("too many group inputs");
    }
  }
  return ::testing::AssertionSuccess();
}

struct Partitioned {
  std::unique_ptr<ir::Graph> graph;
  Partition partition;
  std::string text;
};

Partitioned run(std::string_view ir, const PartitionOptions& options = {}) {
  Partitioned r;
  r.graph = ir::parse(ir);
  r.partition = partitionGraph(*r.graph, options);
  r.text = explain(*r.graph, r.partition);
  EXPECT_TRUE(isValidPartition(*r.graph, r.partition)) << r.text;
  return r;
}

std::string kinds(const Partition& p) {
  std::string out;
  for (const Step& s : p.steps) {
    out += s.kind == StepKind::kFusion    ? (s.group.kind == GroupKind::kRow ? "R" : "P")
           : s.kind == StepKind::kLibrary ? "L"
           : s.kind == StepKind::kView    ? "V"
                                          : "E";
  }
  return out;
}

// --- the FileCheck helper itself ---------------------------------------------------------------

TEST(FileCheck, MatchesInOrder) {
  const char* in = "alpha beta\ngamma\ndelta\n";
  EXPECT_TRUE(fileCheck(in, "CHECK: alpha\nCHECK-SAME: beta\nCHECK-NEXT: gamma").ok);
  EXPECT_TRUE(fileCheck(in, "// CHECK: gam{{m+}}a\n// CHECK-NOT: alpha\n// CHECK: delta").ok);
  EXPECT_TRUE(fileCheck("a\n\nb", "CHECK: a\nCHECK-EMPTY:\nCHECK-NEXT: b").ok);
  EXPECT_TRUE(fileCheck("x\nx\ny", "CHECK-COUNT-2: x\nCHECK-NEXT: y").ok);
}

TEST(FileCheck, ReportsFailures) {
  const char* in = "alpha beta\ngamma\ndelta\n";
  EXPECT_FALSE(fileCheck(in, "CHECK: delta\nCHECK: gamma").ok);       // order matters
  EXPECT_FALSE(fileCheck(in, "CHECK: alpha\nCHECK-NEXT: delta").ok);  // not the next line
  EXPECT_FALSE(fileCheck(in, "CHECK: alpha\nCHECK-NOT: gamma\nCHECK: delta").ok);
  EXPECT_FALSE(fileCheck(in, "CHECK: gamma\nCHECK-NOT: delta").ok);  // NOT up to the end
  EXPECT_FALSE(fileCheck(in, "CHECK: beta\nCHECK-SAME: alpha").ok);
  EXPECT_FALSE(fileCheck(in, "no directives here").ok);
  EXPECT_FALSE(fileCheck(in, "CHECK-BOGUS: x").ok);
  EXPECT_FALSE(fileCheck("x\ny\nx", "CHECK-COUNT-2: x\nCHECK-NEXT: y").ok);
  FileCheckResult r = fileCheck(in, "CHECK: omega");
  EXPECT_NE(r.message.find("omega"), std::string::npos) << r.message;
}

// --- partition decisions ------------------------------------------------------------------------

TEST(Partition, SoftmaxOfScaledMaskedScoresIsOneGroup) {
  auto r = run(R"(
graph(%x: f32[s0, 8, 128, 128], %mask: f32[s0, 1, 1, 128]) {
  %scale: f32[] = constant() {value = 0.125}
  %a = mul(%x, %scale)
  %b = add(%a, %mask)
  %p = softmax(%b) {dim = 3}
  return(%p)
})");
  EXPECT_EQ(kinds(r.partition), "R");
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: partition: 1 steps (1 fusion, 0 library, 0 view, 0 eager)
CHECK-NEXT: step 0: fusion #0 row rowDims=1 domain=[s0, 8, 128, 128]
CHECK-NOT: epilogue_of
CHECK-NEXT: inputs: %x, %mask
CHECK-NEXT: %a: f32[s0, 8, 128, 128] = mul(%x, %scale)
CHECK-NEXT: %b: {{.*}} = add(%a, %mask)
CHECK-NEXT: %p: {{.*}} = softmax(%b) {dim = 3}
CHECK-NEXT: outputs: %p
CHECK-NEXT: eager leftovers: none
)"));
}

// Note [Cat operands in one group]: the two halves of a rotary embedding (after Note [Pointwise ops
// through cat]) are one kernel with two outputs; operands of other shapes, or that depend on each
// other through a step outside the group, stay apart.
TEST(Partition, CatOperandsOfOneShapeAreOneGroup) {
  auto r = run(R"(
graph(%x1: f32[s0, 4, s1, 4], %x2: f32[s0, 4, s1, 4], %c1: f32[1, 1, s1, 4], %c2: f32[1, 1, s1, 4], %s1: f32[1, 1, s1, 4], %s2: f32[1, 1, s1, 4]) {
  %a = mul(%x1, %c1)
  %n = neg(%x2)
  %b = mul(%n, %s1)
  %lo = add(%a, %b)
  %c = mul(%x2, %c2)
  %d = mul(%x1, %s2)
  %hi = add(%c, %d)
  %o = cat(%lo, %hi) {dim = 3}
  return(%o)
})");
  EXPECT_EQ(kinds(r.partition), "PV");
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0 pointwise domain=[s0, 4, s1, 4]
CHECK: outputs: %lo, %hi
CHECK-NEXT: step 1: view cat
)"));
  // Other shapes: two groups.
  auto other = run(R"(
graph(%x: f32[s0, 4], %y: f32[s0, 8]) {
  %a = exp(%x)
  %b = exp(%y)
  %o = cat(%a, %b) {dim = 1}
  return(%o)
})");
  EXPECT_EQ(kinds(other.partition), "PPV");
  // The second operand reads the first through a library step: one group would be a cycle.
  auto dependent = run(R"(
graph(%x: f32[s0, 8], %w: f32[8, 8] param) {
  %a = exp(%x)
  %m = linear(%a, %w)
  %b = relu(%m)
  %o = cat(%a, %b) {dim = 1}
  return(%o)
})");
  EXPECT_EQ(kinds(dependent.partition), "PLPV");
  EXPECT_TRUE(isValidPartition(*dependent.graph, dependent.partition));
}

TEST(Partition, GeluOfLayerNormOfResidualIsOneGroup) {
  auto r = run(R"(
graph(%x: f16[s0, s1, 768], %r: f16[s0, s1, 768], %g: f16[768] param, %b: f16[768] param) {
  %h = add(%x, %r)
  %n = layer_norm(%h, %g, %b) {eps = 1e-05, normalized_ndim = 1}
  %y = gelu(%n)
  return(%y, %h)
})");
  EXPECT_EQ(kinds(r.partition), "R");
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0 row rowDims=1 domain=[s0, s1, 768]
CHECK-NEXT: inputs: %x, %r, %g, %b
CHECK-NEXT: = add(%x, %r)
CHECK-NEXT: = layer_norm(%h, %g, %b)
CHECK-NEXT: %y: f16[s0, s1, 768] = gelu(%n)
CHECK-NEXT: outputs: %h, %y
CHECK-NOT: step 1
)"));
}

TEST(Partition, RmsNormWrittenOutIsOneGroup) {
  auto r = run(R"(
graph(%x: f32[s0, 4096], %w: f32[4096] param) {
  %eps: f32[] = constant() {value = 1e-06}
  %sq = mul(%x, %x)
  %ms = mean(%sq) {dims = [1], keepdim = true}
  %t = add(%ms, %eps)
  %rs = rsqrt(%t)
  %n = mul(%x, %rs)
  %y = mul(%n, %w)
  return(%y)
})");
  EXPECT_EQ(kinds(r.partition), "R");
  ASSERT_EQ(r.partition.steps.size(), 1u);
  EXPECT_EQ(r.partition.steps[0].group.nodes.size(), 6u);
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: fusion #0 row rowDims=1 domain=[s0, 4096]
CHECK-NEXT: inputs: %x, %w
CHECK-NEXT: %sq
CHECK-NEXT: %ms: f32[s0, 1] = mean(%sq)
CHECK-NEXT: %t
CHECK-NEXT: %rs
CHECK-NEXT: %n
CHECK-NEXT: %y
CHECK-NEXT: outputs: %y
)"));
}

TEST(Partition, MlpIsLibraryGroupLibraryGroup) {
  auto r = run(R"(
graph(%x: f32[s0, 256], %w1: f32[1024, 256] param, %b1: f32[1024] param,
      %w2: f32[256, 1024] param, %b2: f32[256] param, %g: f32[256] param, %beta: f32[256] param) {
  %h = linear(%x, %w1, %b1)
  %a = gelu(%h)
  %o = linear(%a, %w2, %b2)
  %res = add(%o, %x)
  %y = layer_norm(%res, %g, %beta) {eps = 1e-05, normalized_ndim = 1}
  return(%y)
})");
  EXPECT_EQ(kinds(r.partition), "LPLR");
  EXPECT_EQ(r.partition.steps[1].epilogueOf, 0);
  EXPECT_EQ(r.partition.steps[3].epilogueOf, 2);
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: partition: 4 steps (2 fusion, 2 library, 0 view, 0 eager)
CHECK-NEXT: step 0: library linear
CHECK-NEXT: %h: f32[s0, 1024] = linear(%x, %w1, %b1)
CHECK-NEXT: step 1: fusion #0 pointwise domain=[s0, 1024] epilogue_of=0
CHECK-NEXT: inputs: %h
CHECK-NEXT: = gelu(%h)
CHECK-NEXT: outputs: %a
CHECK-NEXT: step 2: library linear
CHECK-NEXT: = linear(%a, %w2, %b2)
CHECK-NEXT: step 3: fusion #1 row rowDims=1 domain=[s0, 256] epilogue_of=2
CHECK-NEXT: inputs: %o, %x, %g, %beta
CHECK-NEXT: = add(%o, %x)
CHECK-NEXT: = layer_norm(%res, %g, %beta)
CHECK-NEXT: outputs: %y
CHECK-NEXT: eager leftovers: none
)"));
}

TEST(Partition, AttentionSoftmaxGroupSitsBetweenTwoGemms) {
  auto r = run(R"(
graph(%q: f32[s0, 64, 32], %k: f32[s0, 64, 32], %v: f32[s0, 64, 32], %mask: f32[64, 64]) {
  %scale: f32[] = constant() {value = 0.17677669529663687}
  %kt = permute(%k) {perm = [0, 2, 1]}
  %s = matmul(%q, %kt)
  %ss = mul(%s, %scale)
  %sm = add(%ss, %mask)
  %p = softmax(%sm) {dim = 2}
  %o = matmul(%p, %v)
  return(%o)
})");
  EXPECT_EQ(kinds(r.partition), "VLRL");
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: view permute
CHECK: step 1: library matmul
CHECK-NEXT: = matmul(%q, %kt)
CHECK-NEXT: step 2: fusion #0 row rowDims=1 domain=[s0, 64, 64] epilogue_of=1
CHECK-NEXT: inputs: %s, %mask
CHECK-NEXT: = mul(%s, %scale)
CHECK-NEXT: = add(%ss, %mask)
CHECK-NEXT: = softmax(%sm) {dim = 2}
CHECK-NEXT: outputs: %p
CHECK-NEXT: step 3: library matmul
CHECK-NEXT: = matmul(%p, %v)
)"));
}

TEST(Partition, PreNormEncoderBlock) {
  auto r = run(R"(
graph(%x: f32[s0, 16, 64], %g1: f32[64] param, %b1: f32[64] param,
      %wq: f32[64, 64] param, %wk: f32[64, 64] param, %wv: f32[64, 64] param,
      %wo: f32[64, 64] param, %bo: f32[64] param, %g2: f32[64] param, %b2: f32[64] param,
      %w1: f32[256, 64] param, %c1: f32[256] param, %w2: f32[64, 256] param, %c2: f32[64] param) {
  %scale: f32[] = constant() {value = 0.25}
  %h = layer_norm(%x, %g1, %b1) {eps = 1e-05, normalized_ndim = 1}
  %q = linear(%h, %wq)
  %k = linear(%h, %wk)
  %v = linear(%h, %wv)
  %q4: f32[s0, 16, 4, 16] = reshape(%q)
  %k4: f32[s0, 16, 4, 16] = reshape(%k)
  %v4: f32[s0, 16, 4, 16] = reshape(%v)
  %qh = permute(%q4) {perm = [0, 2, 1, 3]}
  %kt = permute(%k4) {perm = [0, 2, 3, 1]}
  %vh = permute(%v4) {perm = [0, 2, 1, 3]}
  %s = matmul(%qh, %kt)
  %ss = mul(%s, %scale)
  %p = softmax(%ss) {dim = 3}
  %o = matmul(%p, %vh)
  %ot = permute(%o) {perm = [0, 2, 1, 3]}
  %o3: f32[s0, 16, 64] = reshape(%ot)
  %proj = linear(%o3, %wo, %bo)
  %x1 = add(%x, %proj)
  %h2 = layer_norm(%x1, %g2, %b2) {eps = 1e-05, normalized_ndim = 1}
  %f1 = linear(%h2, %w1, %c1)
  %a = gelu(%f1)
  %f2 = linear(%a, %w2, %c2)
  %y = add(%x1, %f2)
  return(%y)
})");
  EXPECT_EQ(r.partition.numFusionGroups(), 5);
  EXPECT_TRUE(r.partition.eagerNodes().empty());
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: partition: {{[0-9]+}} steps (5 fusion, 8 library, 8 view, 0 eager)
CHECK: fusion #0 row rowDims=1 domain=[s0, 16, 64]
CHECK-NEXT: inputs: %x, %g1, %b1
CHECK-NEXT: = layer_norm(%x, %g1, %b1)
CHECK-NEXT: outputs: %h
CHECK: library matmul
CHECK-NEXT: = matmul(%qh, %kt)
CHECK-NEXT: fusion #1 row rowDims=1 domain=[s0, 4, 16, 16]
CHECK-NEXT: inputs: %s
CHECK-NEXT: = mul(%s, %scale)
CHECK-NEXT: = softmax(%ss)
CHECK: library linear
CHECK-NEXT: = linear(%o3, %wo, %bo)
CHECK-NEXT: fusion #2 row rowDims=1 domain=[s0, 16, 64]
CHECK-NEXT: inputs: %x, %proj, %g2, %b2
CHECK-NEXT: = add(%x, %proj)
CHECK-NEXT: = layer_norm(%x1, %g2, %b2)
CHECK-NEXT: outputs: %x1, %h2
CHECK-NEXT: library linear
CHECK-NEXT: = linear(%h2, %w1, %c1)
CHECK-NEXT: fusion #3 pointwise domain=[s0, 16, 256]
CHECK: library linear
CHECK-NEXT: = linear(%a, %w2, %c2)
CHECK-NEXT: fusion #4 pointwise domain=[s0, 16, 64]
CHECK-NEXT: inputs: %x1, %f2
CHECK-NOT: fusion
CHECK: eager leftovers: none
)"));
}

TEST(Partition, EagerOpSplitsPointwiseChain) {
  auto r = run(R"(
graph(%x: f32[s0, 128]) {
  %a = relu(%x)
  %b = exp(%a)
  %e: f32[s0, 128] = eager(%b) {eager_id = 0, schema = "aten::cumsum"}
  %c = tanh(%e)
  %d = mul(%c, %x)
  return(%d)
})");
  EXPECT_EQ(kinds(r.partition), "PEP");
  EXPECT_EQ(r.partition.eagerNodes().size(), 1u);
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0 pointwise domain=[s0, 128]
CHECK-NEXT: inputs: %x
CHECK-NEXT: = relu(%x)
CHECK-NEXT: = exp(%a)
CHECK-NEXT: outputs: %b
CHECK-NEXT: step 1: eager aten::cumsum
CHECK-NEXT: %e: f32[s0, 128] = eager(%b)
CHECK-NEXT: step 2: fusion #1 pointwise
CHECK-NEXT: inputs: %e, %x
CHECK-NOT: fusion
CHECK: eager leftovers: 1
CHECK-NEXT: step 1: %e: f32[s0, 128] = eager(%b) {{.*}}aten::cumsum
)"));
}

// a feeds both the GEMM and the add consuming the GEMM: fusing a with the add would make
// group -> linear -> group, a cycle.
TEST(Partition, DiamondThroughLibraryOpIsSplit) {
  auto r = run(R"(
graph(%x: f32[s0, 64], %w: f32[64, 64] param) {
  %two: f32[] = constant() {value = 2.0}
  %a = mul(%x, %two)
  %l = linear(%a, %w)
  %c = add(%a, %l)
  %d = sigmoid(%c)
  return(%d)
})");
  EXPECT_EQ(kinds(r.partition), "PLP");
  EXPECT_EQ(r.partition.steps[2].epilogueOf, 1);
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0 pointwise
CHECK-NEXT: inputs: %x
CHECK-NEXT: = mul(%x, %two)
CHECK-NEXT: outputs: %a
CHECK-NEXT: step 1: library linear
CHECK-NEXT: %l: f32[s0, 64] = linear(%a, %w)
CHECK-NEXT: step 2: fusion #1 pointwise domain=[s0, 64] epilogue_of=1
CHECK-NEXT: inputs: %a, %l
CHECK-NEXT: = add(%a, %l)
CHECK-NEXT: = sigmoid(%c)
)"));
}

// The cycle may also go through a chain of steps and through a group entered and left at
// different nodes.
TEST(Partition, CycleThroughViewAndOtherGroupIsAvoided) {
  auto r = run(R"(
graph(%x: f32[16, 16]) {
  %a = exp(%x)
  %t = permute(%a) {perm = [1, 0]}
  %b = neg(%t)
  %c = add(%a, %b)
  return(%c)
})");
  EXPECT_EQ(kinds(r.partition), "PVP");
}

// No node path leads from p back to c, but the cluster {r, q, s} is entered at q (from p through
// v1) and left at r (to c through v2): fusing p and c would make a cycle between steps.
TEST(Partition, CycleThroughGroupEnteredAndLeftAtDifferentNodesIsAvoided) {
  auto r = run(R"(
graph(%x: f32[16, 16], %y: f32[16, 16]) {
  %p = exp(%x)
  %v1 = permute(%p) {perm = [1, 0]}
  %r = relu(%y)
  %q = neg(%v1)
  %s = add(%q, %r)
  %v2 = permute(%r) {perm = [1, 0]}
  %c = add(%p, %v2)
  return(%s, %c)
})");
  EXPECT_EQ(kinds(r.partition), "PVPVP");
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0
CHECK-NEXT: inputs: %x
CHECK-NEXT: = exp(%x)
CHECK-NEXT: outputs: %p
CHECK: step 2: fusion #1
CHECK-NEXT: inputs: %y, %v1
CHECK: step 4: fusion #2
CHECK-NEXT: inputs: %p, %v2
)"));
}

TEST(Partition, GemmEpilogueNeedsSoleConsumer) {
  auto r = run(R"(
graph(%x: f32[s0, 64], %w: f32[64, 64] param) {
  %l = linear(%x, %w)
  %a = relu(%l)
  return(%a, %l)
})");
  EXPECT_EQ(kinds(r.partition), "LP");
  EXPECT_EQ(r.partition.steps[1].epilogueOf, -1);
  EXPECT_TRUE(matchesFileCheck(r.text, "CHECK: fusion #0\nCHECK-NOT: epilogue_of"));
}

TEST(Partition, NonInnermostReductionsAreEager) {
  auto r = run(R"(
graph(%x: f32[s0, 32, 16]) {
  %a = exp(%x)
  %s = sum(%a) {dims = [1], keepdim = true}
  %m = softmax(%a) {dim = 1}
  %b = add(%s, %m)
  return(%b)
})");
  EXPECT_EQ(kinds(r.partition), "PEEP");
  EXPECT_EQ(r.partition.eagerNodes().size(), 2u);
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 1: eager sum
CHECK: step 2: eager softmax
CHECK: eager leftovers: 2
CHECK-NEXT: step 1: {{.*}}sum{{.*}}(reduces dims that are not the innermost)
CHECK-NEXT: step 2: {{.*}}softmax{{.*}}(normalizes a dim that is not the last)
)"));
}

TEST(Partition, MultiDimInnermostReductionFuses) {
  auto r = run(R"(
graph(%x: f32[s0, 32, 16]) {
  %a = exp(%x)
  %s = sum(%a) {dims = [1, 2], keepdim = true}
  %b = div(%a, %s)
  return(%b)
})");
  EXPECT_EQ(kinds(r.partition), "R");
  EXPECT_TRUE(matchesFileCheck(r.text, "CHECK: fusion #0 row rowDims=2 domain=[s0, 32, 16]"));
}

// Layer norm written out needs two dependent reductions; groups hold one row op each.
TEST(Partition, OneRowOpPerGroup) {
  auto r = run(R"(
graph(%x: f32[s0, 512]) {
  %eps: f32[] = constant() {value = 1e-05}
  %mu = mean(%x) {dims = [1], keepdim = true}
  %d = sub(%x, %mu)
  %d2 = mul(%d, %d)
  %var = mean(%d2) {dims = [1], keepdim = true}
  %ve = add(%var, %eps)
  %rs = rsqrt(%ve)
  %y = mul(%d, %rs)
  return(%y)
})");
  EXPECT_EQ(kinds(r.partition), "RR");
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0 row
CHECK-NEXT: inputs: %x
CHECK-NEXT: = mean(%x)
CHECK-NEXT: = sub(%x, %mu)
CHECK-NEXT: = mul(%d, %d)
CHECK-NEXT: outputs: %d, %d2
CHECK-NEXT: step 1: fusion #1 row
CHECK-NEXT: inputs: %d2, %d
CHECK-NEXT: = mean(%d2)
CHECK-NOT: step 2
)"));
}

// Without keepdim the per-row result no longer lines up with the domain: its consumers start a
// new group.
TEST(Partition, ReductionWithoutKeepdimEndsItsGroup) {
  auto r = run(R"(
graph(%x: f32[s0, 64]) {
  %a = exp(%x)
  %s = sum(%a) {dims = [1]}
  %t = log(%s)
  return(%t)
})");
  EXPECT_EQ(kinds(r.partition), "RP");
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0 row rowDims=1 domain=[s0, 64]
CHECK: outputs: %s
CHECK-NEXT: step 1: fusion #1 pointwise domain=[s0]
)"));
}

// A small value computed inside a larger group may not leave it (Note [Group output shapes]).
TEST(Partition, SmallerShapedValueUsedOutsideIsNotAGroupOutput) {
  auto r = run(R"(
graph(%x: f32[s0, 64], %w: f32[64] param) {
  %two: f32[] = constant() {value = 2.0}
  %w2 = mul(%w, %two)
  %y = mul(%x, %w2)
  %z = exp(%y)
  return(%z, %w2)
})");
  EXPECT_EQ(kinds(r.partition), "PP");
  for (const Step& s : r.partition.steps) {
    for (const ir::Value* out : s.group.outputs)
      EXPECT_EQ(ir::toString(out->shape()), ir::toString(s.group.domain)) << r.text;
  }
  EXPECT_TRUE(matchesFileCheck(r.text, R"(
CHECK: step 0: fusion #0 pointwise domain=[64]
CHECK-NEXT: inputs: %w
CHECK: step 1: fusion #1 pointwise domain=[s0, 64]
CHECK-NEXT: inputs: %x, %w2
)"));
}

TEST(Partition, SmallerShapedValueUsedOnlyInsideFuses) {
  auto r = run(R"(
graph(%x: f32[s0, 64], %w: f32[64] param) {
  %two: f32[] = constant() {value = 2.0}
  %w2 = mul(%w, %two)
  %y = mul(%x, %w2)
  return(%y)
})");
  EXPECT_EQ(kinds(r.partition), "P");
  EXPECT_TRUE(matchesFileCheck(r.text, "CHECK: domain=[s0, 64]\nCHECK-NEXT: inputs: %w, %x"));
}

TEST(Partition, ConstantsAreNotGroupInputs) {
  auto r = run(R"(
graph(%x: f32[8]) {
  %c: f32[] = constant() {value = 3.0}
  %a = add(%x, %c)
  return(%a)
})");
  ASSERT_EQ(r.partition.steps.size(), 1u);
  ASSERT_EQ(r.partition.steps[0].group.inputs.size(), 1u);
  EXPECT_EQ(r.partition.steps[0].group.inputs[0]->name(), "x");
}

TEST(Partition, MaxGroupInputsSplitsGroups) {
  const char* ir = R"(
graph(%a: f32[8], %b: f32[8], %c: f32[8], %d: f32[8]) {
  %s1 = add(%a, %b)
  %s2 = add(%s1, %c)
  %s3 = add(%s2, %d)
  return(%s3)
})";
  EXPECT_EQ(kinds(run(ir).partition), "P");
  PartitionOptions options;
  options.maxGroupInputs = 3;
  auto r = run(ir, options);
  EXPECT_EQ(kinds(r.partition), "PP");
  for (const Step& s : r.partition.steps) EXPECT_LE(s.group.inputs.size(), 3u) << r.text;
}

TEST(Partition, FuseReductionsOffKeepsRowOpsAlone) {
  PartitionOptions options;
  options.fuseReductions = false;
  auto r = run(R"(
graph(%x: f32[s0, 64]) {
  %a = exp(%x)
  %p = softmax(%a) {dim = 1}
  %b = neg(%p)
  return(%b)
})",
               options);
  EXPECT_EQ(kinds(r.partition), "PRP");
}

TEST(Partition, IndependentChainsAreSeparateGroups) {
  auto r = run(R"(
graph(%x: f32[4, 8], %y: f32[3, 8]) {
  %a = exp(%x)
  %b = exp(%y)
  return(%a, %b)
})");
  EXPECT_EQ(kinds(r.partition), "PP");
}

// --- random graphs ------------------------------------------------------------------------------

bool broadcastsInto(const ir::Shape& from, const ir::Shape& to) {
  if (from.size() > to.size()) return false;
  for (size_t i = 0; i < from.size(); ++i) {
    const ir::SymDim& f = from[i];
    if (!(f == to[to.size() - from.size() + i] || f == ir::SymDim(1))) return false;
  }
  return true;
}

// Group-level rules of Note [What fuses] / [Group output shapes], checked independently.
::testing::AssertionResult groupsAreWellFormed(const Partition& p) {
  for (const Step& s : p.steps) {
    if (s.kind != StepKind::kFusion) continue;
    const FusionGroup& g = s.group;
    const ir::Node* rowNode = nullptr;
    for (const ir::Node* n : g.nodes) {
      auto c = n->category();
      if (c != ir::OpCategory::kReduction && c != ir::OpCategory::kNormalization) continue;
      if (rowNode) return ::testing::AssertionFailure() << "two row ops in group " << g.id;
      rowNode = n;
    }
    if ((rowNode != nullptr) != (g.kind == GroupKind::kRow))
      return ::testing::AssertionFailure() << "group kind vs row op mismatch in group " << g.id;
    for (const ir::Value* in : g.inputs) {
      if (!broadcastsInto(in->shape(), g.domain))
        return ::testing::AssertionFailure() << "input does not broadcast in group " << g.id;
    }
    for (const ir::Value* out : g.outputs) {
      if (out->shape() == g.domain) continue;
      bool ok = false;
      if (g.kind == GroupKind::kRow) {
        ir::Shape outer(g.domain.begin(), g.domain.end() - g.rowDims);
        ok = out->producer() == rowNode && out->shape() == outer;
        outer.resize(g.domain.size(), ir::SymDim(1));
        ok = ok || out->shape() == outer;
      }
      if (!ok) return ::testing::AssertionFailure() << "bad output shape in group " << g.id;
    }
  }
  return ::testing::AssertionSuccess();
}

std::unique_ptr<ir::Graph> randomGraph(uint32_t seed, int numOps) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  auto g = std::make_unique<ir::Graph>();
  const ir::TensorType square{ir::DType::kFloat32, {8, 8}};
  std::vector<ir::Value*> values = {g->addInput("x", square), g->addInput("y", square)};
  ir::Value* w = g->addParam("w", square);
  values.push_back(g->addConstant(0.5, ir::DType::kFloat32));
  using K = ir::OpKind;
  while (numOps > 0) {
    ir::Value* a = values[static_cast<size_t>(pick(static_cast<int>(values.size())))];
    ir::Value* b = values[static_cast<size_t>(pick(static_cast<int>(values.size())))];
    try {
      ir::Value* v = nullptr;
      switch (pick(12)) {
        case 0:
          v = g->op(K::kExp, {a});
          break;
        case 1:
          v = g->op(K::kNeg, {a});
          break;
        case 2:
          v = g->op(K::kAdd, {a, b});
          break;
        case 3:
          v = g->op(K::kMul, {a, b});
          break;
        case 4:
          v = g->op(K::kPermute, {a}, {{"perm", std::vector<int64_t>{1, 0}}});
          break;
        case 5:
          v = g->op(K::kLinear, {a, w});
          break;
        case 6:
          v = g->op(K::kSum, {a}, {{"dims", std::vector<int64_t>{1}}, {"keepdim", true}});
          break;
        case 7:
          v = g->op(K::kSum, {a}, {{"dims", std::vector<int64_t>{0}}, {"keepdim", true}});
          break;
        case 8:
          v = g->op(K::kAmax, {a}, {{"dims", std::vector<int64_t>{1}}});
          break;
        case 9:
          v = g->op(K::kSoftmax, {a}, {{"dim", int64_t{1}}});
          break;
        case 10:
          v = g->op(K::kEager, {a}, {{"schema", std::string("aten::cumsum")}}, a->type());
          break;
        default:
          v = g->op(K::kSub, {a, b});
          break;
      }
      values.push_back(v);
      --numOps;
    } catch (const UserError&) {
      // ill-typed combination (rank-0 permute, [8] linear ...): draw again
    }
  }
  std::vector<ir::Value*> outputs = {values.back()};
  for (int i = 0; i < 3; ++i) {
    ir::Value* v = values[static_cast<size_t>(pick(static_cast<int>(values.size())))];
    if (v->producer()->category() != ir::OpCategory::kBoundary) outputs.push_back(v);
  }
  g->setOutputs(outputs);
  return g;
}

TEST(Partition, RandomGraphsGiveValidPartitions) {
  int fused = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    auto g = randomGraph(seed, 30);
    PartitionOptions options;
    options.maxGroupInputs = 2 + static_cast<int>(seed % 5);
    Partition p;
    ASSERT_NO_THROW(p = partitionGraph(*g, options)) << "seed " << seed;
    ASSERT_TRUE(isValidPartition(*g, p)) << "seed " << seed << "\n" << explain(*g, p);
    ASSERT_TRUE(groupsAreWellFormed(p)) << "seed " << seed << "\n" << explain(*g, p);
    for (const Step& s : p.steps) {
      ASSERT_LE(static_cast<int>(s.group.inputs.size()), options.maxGroupInputs) << "seed " << seed;
      if (s.kind == StepKind::kFusion && s.group.nodes.size() > 1) ++fused;
    }
  }
  EXPECT_GT(fused, 300);  // the generator does produce fusion opportunities
}

}  // namespace
}  // namespace kiln::partition

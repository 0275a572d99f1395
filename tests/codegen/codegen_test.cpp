// codegen: schedules, the kernel ABI host side, CUDA emission and NVRTC compiles (no GPU needed).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "codegen/emit_cuda.h"
#include "codegen/emit_gemm.h"
#include "codegen/kernel_abi.h"
#include "codegen/schedule.h"
#include "jit/nvrtc.h"
#include "src/ir/parser.h"
#include "src/support/error.h"

namespace kiln::codegen {
namespace {

using ir::DType;
using partition::FusionGroup;
using partition::GroupKind;

// A hand-built group holding every op of `g` (the partitioner's job, done by hand).
FusionGroup wholeGraphGroup(const ir::Graph& g, GroupKind kind, int rowDims = 0) {
  FusionGroup fg;
  fg.kind = kind;
  fg.rowDims = rowDims;
  for (const auto& n : g.nodes()) {
    if (n->category() == ir::OpCategory::kBoundary) continue;
    fg.nodes.push_back(n.get());
    if (fg.domain.empty() &&
        (kind == GroupKind::kPointwise || n->category() == ir::OpCategory::kReduction ||
         n->category() == ir::OpCategory::kNormalization))
      fg.domain = kind == GroupKind::kPointwise ? g.outputs()[0]->shape() : n->input(0)->shape();
  }
  for (auto* v : g.inputs()) fg.inputs.push_back(v);
  for (auto* v : g.params()) fg.inputs.push_back(v);
  for (auto* v : g.outputs()) fg.outputs.push_back(v);
  return fg;
}

struct Case {
  std::unique_ptr<ir::Graph> graph;
  FusionGroup group;
};

Case makeCase(std::string_view text, GroupKind kind, int rowDims = 0) {
  Case c;
  c.graph = ir::parse(text);
  c.group = wholeGraphGroup(*c.graph, kind, rowDims);
  return c;
}

BucketInfo bucket(std::vector<int64_t> hints, std::vector<int64_t> max = {}) {
  BucketInfo b;
  b.symbolHint = std::move(hints);
  b.symbolMax = std::move(max);
  return b;
}

// Emits with the default schedule and compiles for each arch; returns the kernel.
KernelSource emitAndCompile(const Case& c, const BucketInfo& b, std::vector<std::string> archs,
                            std::optional<ScheduleParams> params = std::nullopt) {
  const ScheduleParams p = params ? *params : defaultSchedule(c.group, b);
  KernelSource ks = emitCuda(*c.graph, c.group, p, b);
  // KILN_CODEGEN_DUMP=<dir>: write each kernel (for tests/codegen/gpu_smoke harnesses).
  if (const char* dir = std::getenv("KILN_CODEGEN_DUMP")) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::ofstream(std::string(dir) + "/" + info->name() + "_" + ks.name + ".cu")
        << ks.source << "\n#define KILN_SMOKE_KERNEL " << ks.name << "\n";
  }
  for (const auto& arch : archs) {
    try {
      jit::CompiledKernel ck = jit::compileToCubin(ks, arch);
      EXPECT_FALSE(ck.cubin.empty());
      EXPECT_EQ(ck.name, ks.name);
    } catch (const CompileError& e) {
      ADD_FAILURE() << "NVRTC failed for " << arch << ":\n" << e.log() << "\n" << e.source();
    }
  }
  return ks;
}

bool contains(const std::string& s, std::string_view needle) {
  return s.find(needle) != std::string::npos;
}

// --- schedules ---

TEST(Schedule, EqualityHashAndText) {
  PointwiseParams a, b;
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.hash(), b.hash());
  b.vectorWidth = 8;
  EXPECT_NE(a, b);
  EXPECT_NE(a.hash(), b.hash());
  EXPECT_EQ(a.toString(), "pointwise{block=256, vec=4, ept=1, one-shot}");
  ReductionParams r;
  r.cacheRow = true;
  r.chunksPerThread = 2;
  EXPECT_EQ(r.toString(), "row{warp, threads=32, rows=8, vec=4, cached x2, welford}");
  ReductionParams r2 = r;
  r2.variance = VarianceAlgo::kTwoPass;
  EXPECT_NE(hash(ScheduleParams(r)), hash(ScheduleParams(r2)));
  EXPECT_NE(hash(ScheduleParams(a)), hash(ScheduleParams(r)));
}

TEST(Schedule, Heuristics) {
  auto pw = makeCase(R"(graph(%x: f16[s0, 768], %w: f16[768] param) {
      %0: f16[s0, 768] = mul(%x, %w)
      return(%0)
    })",
                     GroupKind::kPointwise);
  auto p = std::get<PointwiseParams>(defaultSchedule(pw.group, bucket({64})));
  EXPECT_EQ(p.vectorWidth, 8);  // 16 bytes of f16
  EXPECT_FALSE(p.gridStride);

  const char* ln = R"(graph(%x: f32[s0, s1]) {
      %0: f32[s0, s1] = softmax(%x) {dim = 1}
      return(%0)
    })";
  auto row = makeCase(ln, GroupKind::kRow, 1);
  auto shortRow = std::get<ReductionParams>(defaultSchedule(row.group, bucket({8, 128})));
  EXPECT_EQ(shortRow.mapping(), RowMapping::kWarpPerRow);
  EXPECT_EQ(shortRow.threadsPerRow, 32);
  EXPECT_EQ(shortRow.vectorWidth, 4);
  EXPECT_TRUE(shortRow.cacheRow);
  auto longRow = std::get<ReductionParams>(defaultSchedule(row.group, bucket({8, 4096})));
  EXPECT_EQ(longRow.mapping(), RowMapping::kBlockPerRow);
  EXPECT_EQ(longRow.rowsPerBlock, 1);
  EXPECT_GE(longRow.rowCapacity(), 4096);
  auto unbounded =
      std::get<ReductionParams>(defaultSchedule(row.group, bucket({8, 4096}, {-1, -1})));
  EXPECT_FALSE(unbounded.cacheRow);
  EXPECT_EQ(unbounded.variance, VarianceAlgo::kWelford);

  auto cands = candidateSchedules(row.group, bucket({8, 4096}));
  ASSERT_GT(cands.size(), 4u);
  EXPECT_EQ(cands[0], defaultSchedule(row.group, bucket({8, 4096})));
  for (size_t i = 0; i < cands.size(); ++i) {
    EXPECT_EQ(validateSchedule(row.group, cands[i], bucket({8, 4096})), "") << toString(cands[i]);
    for (size_t j = 0; j < i; ++j) EXPECT_FALSE(cands[i] == cands[j]);
  }
  EXPECT_NE(validateSchedule(row.group, PointwiseParams{}, bucket({8, 4096})), "");
}

// --- ABI host side ---

TEST(KernelAbi, PackArgsVectorFlagAndBroadcast) {
  auto c = makeCase(R"(graph(%x: f16[s0, 64], %b: f16[64] param) {
      %0: f16[s0, 64] = add(%x, %b)
      return(%0)
    })",
                    GroupKind::kPointwise);
  KernelSource ks = emitCuda(*c.graph, c.group, defaultSchedule(c.group, bucket({4})), bucket({4}));
  ASSERT_EQ(ks.abi.tensors.size(), 3u);
  EXPECT_EQ(ks.abi.vectorWidth, 8);
  EXPECT_FALSE(ks.abi.index64);
  alignas(16) static uint16_t x[4 * 64 + 8], b[64 + 8], y[4 * 64];
  const int64_t xs[] = {4, 64}, xst[] = {64, 1}, bs[] = {64}, bst[] = {1};
  std::vector<TensorView> views = {{x, xs, xst}, {b, bs, bst}, {y, xs, xst}};
  auto dom = domainSizes(ks.abi, std::vector<int64_t>{4});
  KilnArgs args = packArgs(ks.abi, dom, views);
  EXPECT_EQ(args.vec, 1);
  EXPECT_EQ(args.numel, 256);
  EXPECT_EQ(args.strides[1][0], 0);  // broadcast over rows
  EXPECT_EQ(args.strides[1][1], 1);
  // Whether a vector load splats is decided when the kernel is emitted (Note [Splat loads]), so an
  // expanded input (stride 0 along the innermost dim, size > 1) takes the scalar path.
  EXPECT_EQ(ks.source.find("== 0)"), std::string::npos) << ks.source;
  const int64_t expanded[] = {0};
  views[1] = {b, bs, expanded};
  EXPECT_EQ(packArgs(ks.abi, dom, views).vec, 0);
  views[1] = {b, bs, bst};
  // An unaligned input (offset by one element) forces the scalar path.
  views[0].data = x + 1;
  EXPECT_EQ(packArgs(ks.abi, dom, views).vec, 0);
  // So does a transposed (non-unit innermost stride) input.
  const int64_t tst[] = {1, 4};
  views[0] = {x, xs, tst};
  EXPECT_EQ(packArgs(ks.abi, dom, views).vec, 0);
  // Wrong size names the tensor.
  const int64_t bad[] = {4, 63};
  views[0] = {x, bad, xst};
  EXPECT_THROW(packArgs(ks.abi, dom, views), UserError);
  LaunchDims ld = launchDims(ks.launch, ks.abi, args, 132);
  EXPECT_EQ(ld.blockX, 256);
  EXPECT_EQ(ld.gridX, 1);  // 256 elements, 2048 a block
  args.numel = 0;
  EXPECT_EQ(launchDims(ks.launch, ks.abi, args, 132).gridX, 0);
}

TEST(KernelAbi, IndexWidthFromBucket) {
  auto c = makeCase(R"(graph(%x: f32[s0, 1024]) {
      %0: f32[s0, 1024] = relu(%x)
      return(%0)
    })",
                    GroupKind::kPointwise);
  auto small = emitCuda(*c.graph, c.group, PointwiseParams{}, bucket({1024}));
  EXPECT_FALSE(small.abi.index64);
  EXPECT_TRUE(contains(small.source, "const int numel"));
  auto huge = emitCuda(*c.graph, c.group, PointwiseParams{}, bucket({8}, {1 << 22}));
  EXPECT_TRUE(huge.abi.index64);
  EXPECT_TRUE(contains(huge.source, "const long long numel"));
  // A 32-bit kernel refuses a call that would overflow it.
  static float dummy[4];
  const int64_t sz[] = {int64_t{1} << 21, 1024}, st[] = {1024, 1};
  std::vector<TensorView> views = {{dummy, sz, st}, {dummy, sz, st}};
  EXPECT_THROW(packArgs(small.abi, std::vector<int64_t>{int64_t{1} << 21, 1024}, views),
               Unsupported);
}

// --- emission + NVRTC ---

TEST(EmitCuda, PointwiseBroadcastChainAllFloatTypes) {
  for (std::string dt : {"f16", "bf16", "f32"}) {
    std::string text = R"(graph(%x: T[s0, 12, 64], %w: T[64] param, %b: T[12, 1] param) {
        %c: f32[] = constant() {value = 0.5}
        %0: T[s0, 12, 64] = mul(%x, %w)
        %1: T[s0, 12, 64] = add(%0, %b)
        %2: T[s0, 12, 64] = gelu_tanh(%1)
        %3: T[s0, 12, 64] = mul(%2, %c)
        return(%3)
      })";
    for (size_t p; (p = text.find('T')) != std::string::npos;) text.replace(p, 1, dt);
    auto c = makeCase(text, GroupKind::kPointwise);
    auto ks = emitAndCompile(c, bucket({8}),
                             dt == "f16" ? std::vector<std::string>{"sm_80", "sm_90"}
                                         : std::vector<std::string>{"sm_90"});
    EXPECT_TRUE(contains(ks.source, "kiln_gelu_tanh("));
    EXPECT_TRUE(contains(ks.source, "0.5f"));  // the constant, inlined
    EXPECT_EQ(contains(ks.source, "#include <cuda_fp16.h>"), dt == "f16");
    EXPECT_EQ(contains(ks.source, "#include <cuda_bf16.h>"), dt == "bf16");
    EXPECT_TRUE(contains(ks.source, "if (args.vec)"));
  }
}

TEST(EmitCuda, AddLayerNormGeluCachedAndReloaded) {
  auto c = makeCase(
      R"(graph(%x: f16[s0, 768], %r: f16[s0, 768], %w: f16[768] param, %b: f16[768] param) {
      %0: f16[s0, 768] = add(%x, %r)
      %1: f16[s0, 768] = layer_norm(%0, %w, %b) {eps = 1e-05, normalized_ndim = 1}
      %2: f16[s0, 768] = gelu(%1)
      return(%0, %2)
    })",
      GroupKind::kRow, 1);
  auto ks = emitAndCompile(c, bucket({16}), {"sm_80"});
  const ReductionParams r = std::get<ReductionParams>(defaultSchedule(c.group, bucket({16})));
  EXPECT_TRUE(r.cacheRow);
  EXPECT_TRUE(contains(ks.source, "kiln_gelu("));
  EXPECT_TRUE(contains(ks.source, "rsqrtf("));
  EXPECT_EQ(ks.abi.tensors.size(), 6u);
  EXPECT_EQ(ks.abi.maxRowLength, r.rowCapacity());
  ReductionParams reload;
  reload.threadsPerRow = 128;
  reload.rowsPerBlock = 1;
  reload.vectorWidth = 8;
  reload.cacheRow = false;
  reload.variance = VarianceAlgo::kWelford;
  auto ks2 = emitAndCompile(c, bucket({16}), {"sm_90"}, reload);
  EXPECT_TRUE(contains(ks2.source, "kiln_block_welford<128>"));
  EXPECT_EQ(ks2.abi.maxRowLength, -1);
}

// The memory-bound benchmark workloads (bench/workloads.h) at their real row lengths: the default
// kernels compile for both archs in every float type, the row groups cache their rows, and the
// row-invariant params (w, b) are not held in registers per row (Note [Row-invariant inputs]).
TEST(EmitCuda, BenchmarkPatterns) {
  const std::vector<std::pair<std::string, int>> patterns = {
      {R"(graph(%x: T[s0, 4096], %w: T[4096] param, %b: T[4096] param) {
        %0: T[s0, 4096] = mul(%x, %w)
        %1: T[s0, 4096] = add(%0, %b)
        %2: T[s0, 4096] = gelu(%1)
        %3: T[s0, 4096] = sigmoid(%x)
        %4: T[s0, 4096] = mul(%2, %3)
        %5: T[s0, 4096] = add(%4, %x)
        return(%5)
      })",
       0},
      {R"(graph(%x: T[s0, 4096], %r: T[s0, 4096], %w: T[4096] param, %b: T[4096] param) {
        %0: T[s0, 4096] = add(%x, %r)
        %1: T[s0, 4096] = layer_norm(%0, %w, %b) {eps = 1e-05, normalized_ndim = 1}
        %2: T[s0, 4096] = gelu(%1)
        return(%2)
      })",
       1},
      {R"(graph(%x: T[s0, 1024], %m: T[s0, 1024]) {
        %c: f32[] = constant() {value = 0.125}
        %0: T[s0, 1024] = mul(%x, %c)
        %1: T[s0, 1024] = add(%0, %m)
        %2: T[s0, 1024] = softmax(%1) {dim = 1}
        return(%2)
      })",
       1}};
  int index = 0;
  for (const auto& [pattern, rowDims] : patterns) {
    for (std::string dt : {"f16", "bf16", "f32"}) {
      std::string text = pattern;
      for (size_t p; (p = text.find('T')) != std::string::npos;) text.replace(p, 1, dt);
      SCOPED_TRACE(::testing::Message() << "pattern " << index << " " << dt);
      auto c = makeCase(text, rowDims ? GroupKind::kRow : GroupKind::kPointwise, rowDims);
      const BucketInfo b = bucket({32768}, {32768});
      auto ks = emitAndCompile(c, b, {"sm_80", "sm_90"});
      EXPECT_TRUE(contains(ks.source, "if (args.vec)"));
      EXPECT_EQ(ks.fastMath, dt != "f32");
      if (rowDims) {
        EXPECT_TRUE(std::get<ReductionParams>(defaultSchedule(c.group, b)).cacheRow);
      }
    }
    ++index;
  }
}

TEST(EmitCuda, ScaleMaskSoftmaxSymbolicRow) {
  auto c = makeCase(R"(graph(%x: f16[s0, 12, s1, s1], %m: f16[s0, 1, 1, s1]) {
      %c: f32[] = constant() {value = 0.125}
      %0: f16[s0, 12, s1, s1] = mul(%x, %c)
      %1: f16[s0, 12, s1, s1] = add(%0, %m)
      %2: f16[s0, 12, s1, s1] = softmax(%1) {dim = 3}
      return(%2)
    })",
                    GroupKind::kRow, 1);
  auto ks = emitAndCompile(c, bucket({2, 128}, {-1, -1}), {"sm_90"});
  EXPECT_TRUE(ks.abi.index64);  // unbounded bucket
  EXPECT_TRUE(contains(ks.source, "expf("));
  EXPECT_EQ(ks.abi.maxRowLength, -1);
}

TEST(EmitCuda, LogSoftmaxBf16) {
  auto c = makeCase(R"(graph(%x: bf16[s0, 1000]) {
      %0: bf16[s0, 1000] = log_softmax(%x) {dim = 1}
      return(%0)
    })",
                    GroupKind::kRow, 1);
  auto ks = emitAndCompile(c, bucket({32}), {"sm_80"});
  EXPECT_TRUE(contains(ks.source, "logf(sm"));
}

TEST(EmitCuda, RmsNormWrittenOutLongRow) {
  auto c = makeCase(R"(graph(%x: f16[s0, 4096], %w: f16[4096] param) {
      %e: f32[] = constant() {value = 1e-06}
      %0: f16[s0, 4096] = mul(%x, %x)
      %1: f16[s0, 1] = mean(%0) {dims = [1], keepdim = true}
      %2: f16[s0, 1] = add(%1, %e)
      %3: f16[s0, 1] = rsqrt(%2)
      %4: f16[s0, 4096] = mul(%x, %3)
      %5: f16[s0, 4096] = mul(%4, %w)
      return(%5)
    })",
                    GroupKind::kRow, 1);
  auto ks = emitAndCompile(c, bucket({64}), {"sm_90"});
  EXPECT_TRUE(contains(ks.source, "kiln_block_reduce<KilnSum"));
  EXPECT_EQ(ks.launch.unitsPerBlock, 1);
}

TEST(EmitCuda, ReductionsKeepdimAndNot) {
  auto c = makeCase(R"(graph(%x: f32[s0, 7, 33]) {
      %0: f32[s0, 7, 1] = sum(%x) {dims = [2], keepdim = true}
      %1: f32[s0, 7] = mean(%x) {dims = [2], keepdim = false}
      %2: f32[s0, 7, 1] = amax(%x) {dims = [2], keepdim = true}
      %3: f32[s0, 7, 1] = amin(%x) {dims = [2], keepdim = true}
      return(%0, %1, %2, %3)
    })",
                    GroupKind::kRow, 1);
  auto ks = emitAndCompile(c, bucket({5}), {"sm_80"});
  ASSERT_EQ(ks.abi.tensors.size(), 5u);
  EXPECT_TRUE(ks.abi.tensors[1].rowConstant);
  EXPECT_EQ(ks.abi.tensors[2].dimMap, (std::vector<int>{0, 1}));     // keepdim=false
  EXPECT_EQ(ks.abi.tensors[1].dimMap, (std::vector<int>{0, 1, 2}));  // keepdim=true
  EXPECT_EQ(ks.abi.vectorWidth, 1);                                  // 33 columns: scalar only
  EXPECT_FALSE(contains(ks.source, "args.vec"));
}

TEST(EmitCuda, BoolWhereComparisons) {
  auto c = makeCase(R"(graph(%x: f32[s0, 128], %y: f32[s0, 128], %k: bool[128] param) {
      %z: f32[] = constant() {value = 0.0}
      %0: bool[s0, 128] = gt(%x, %z)
      %1: f32[s0, 128] = where(%0, %x, %y)
      %2: bool[s0, 128] = eq(%x, %y)
      %3: f32[s0, 128] = where(%k, %1, %z)
      %4: bool[s0, 128] = le(%3, %y)
      return(%3, %2, %4)
    })",
                    GroupKind::kPointwise);
  auto ks = emitAndCompile(c, bucket({3}), {"sm_90"});
  EXPECT_TRUE(contains(ks.source, "unsigned char* __restrict__ p"));
  EXPECT_TRUE(contains(ks.source, " ? "));
}

TEST(EmitCuda, CastsRoundAndIntegerMath) {
  auto c = makeCase(R"(graph(%x: f32[s0, 256], %i: i64[s0, 256]) {
      %0: f16[s0, 256] = cast(%x)
      %1: f32[s0, 256] = cast(%0)
      %2: i64[s0, 256] = cast(%x)
      %3: i64[s0, 256] = add(%2, %i)
      %4: bf16[s0, 256] = cast(%3)
      %5: i32[s0, 256] = cast(%1)
      return(%1, %3, %4, %5)
    })",
                    GroupKind::kPointwise);
  auto ks = emitAndCompile(c, bucket({9}), {"sm_80"});
  EXPECT_TRUE(contains(ks.source, "kiln_round_f16("));
  EXPECT_TRUE(contains(ks.source, "kiln_round_bf16("));
  EXPECT_TRUE(contains(ks.source, "long long"));
}

// Note [Fills]: a fill is a literal inside a fused kernel (an encoder's mask: the arange
// comparison that every element answers true, ANDed with the padding mask), rounded like a cast
// in 16 bits, and a group of fills alone is a kernel that writes them: no inputs at all.
TEST(EmitCuda, FillsAreLiterals) {
  auto mask = makeCase(R"(graph(%m: bool[s0, 1, 1, s1]) {
      %t: bool[1, 1, s1, 1] = fill() {value = 1}
      %0: bool[s0, 1, s1, s1] = minimum(%t, %m)
      %h: f16[1, 1, s1, 1] = fill() {value = 0.1}
      %z: f16[] = constant() {value = 0.0}
      %1: f16[s0, 1, s1, s1] = where(%0, %h, %z)
      return(%1)
    })",
                       GroupKind::kPointwise);
  auto ks = emitAndCompile(mask, bucket({2, 9}), {"sm_90"});
  EXPECT_TRUE(contains(ks.source, "kiln_round_f16(")) << ks.source;
  EXPECT_EQ(mask.group.inputs.size(), 1u);

  // In a row kernel: a fill along the row is row-varying (a literal per element), one without
  // row dims a row constant of any rank.
  auto row = makeCase(R"(graph(%x: f32[s0, 4, 64], %m: bool[s0, 1, 64]) {
      %lo: f32[s0, 4, 64] = fill() {value = -1e4}
      %0: f32[s0, 4, 64] = where(%m, %x, %lo)
      %b: f32[4, 1] = fill() {value = 0.5}
      %1: f32[s0, 4, 64] = add(%0, %b)
      %2: f32[s0, 4, 64] = softmax(%1) {dim = 2}
      return(%2)
    })",
                      GroupKind::kRow, 1);
  auto rowKs = emitAndCompile(row, bucket({3}), {"sm_90"});
  EXPECT_TRUE(contains(rowKs.source, "-10000")) << rowKs.source;

  auto alone = makeCase(R"(graph(%x: f32[s0, 4]) {
      %0: i64[s0, 4] = fill() {value = -3}
      %1: f32[s0, 4] = fill() {value = 2.5}
      return(%0, %1)
    })",
                        GroupKind::kPointwise);
  alone.group.inputs.clear();  // the fills read nothing, %x is only the graph's input
  auto only = emitAndCompile(alone, bucket({5}), {"sm_80", "sm_90"});
  EXPECT_TRUE(contains(only.source, "(-3LL)")) << only.source;
  EXPECT_EQ(only.abi.numInputs, 0);
}

// Note [Embeddings in kernels]: an embedding is the first load of the kernel that reads it. In a
// row kernel (BERT's embeddings: the token rows, plus the position rows, normalized) the table's
// row base is the row's id, checked against the table's rows; in a pointwise kernel each vector
// reads its id first. The ABI marks the table's rows (kGatherDim) and bounds the ids, and
// packArgs puts the table's row stride in strides[t][0] and checks its row count.
TEST(EmitCuda, EmbeddingsGatherTableRows) {
  auto row = makeCase(R"(graph(%ids: i64[s0, s1, 1], %p: f16[s1, 64], %w: f16[50, 64] param,
                              %g: f16[64] param, %b: f16[64] param) {
      %0: f16[s0, s1, 64] = embedding(%w, %ids)
      %1: f16[s0, s1, 64] = add(%0, %p)
      %2: f16[s0, s1, 64] = layer_norm(%1, %g, %b) {eps = 1e-12, normalized_ndim = 1}
      return(%1, %2)
    })",
                      GroupKind::kRow, 1);
  auto rowKs = emitAndCompile(row, bucket({2, 7}), {"sm_80", "sm_90"});
  ASSERT_EQ(rowKs.abi.tensors.size(), 7u);
  EXPECT_EQ(rowKs.abi.tensors[2].dimMap, (std::vector<int>{kGatherDim, 2}));
  EXPECT_EQ(rowKs.abi.tensors[2].gatherBy, 0);
  EXPECT_EQ(rowKs.abi.tensors[0].indexBound, 50);
  EXPECT_EQ(rowKs.abi.tensors[1].indexBound, -1);
  EXPECT_TRUE(contains(rowKs.source, "kiln_gather_row(in0, 50LL) * gst2")) << rowKs.source;

  auto pw = makeCase(R"(graph(%ids: i32[s0, 1], %w: f32[10, 8] param) {
      %c: f32[] = constant() {value = 2.0}
      %0: f32[s0, 8] = embedding(%w, %ids)
      %1: f32[s0, 8] = mul(%0, %c)
      return(%1)
    })",
                     GroupKind::kPointwise);
  auto pwKs = emitAndCompile(pw, bucket({5}), {"sm_90"});
  EXPECT_TRUE(contains(pwKs.source, "kiln_gather_row(in0[0], 10LL) * gst1")) << pwKs.source;
  ASSERT_EQ(pwKs.abi.vectorWidth, 4);
  alignas(16) static int32_t ids[5];
  alignas(16) static float w[10 * 8 + 4], y[5 * 8];
  const int64_t is[] = {5, 1}, ist[] = {1, 1}, ws[] = {10, 8}, wst[] = {8, 1}, ys[] = {5, 8},
                yst[] = {8, 1};
  std::vector<TensorView> views = {{ids, is, ist}, {w, ws, wst}, {y, ys, yst}};
  const auto dom = domainSizes(pwKs.abi, std::vector<int64_t>{5});
  KilnArgs args = packArgs(pwKs.abi, dom, views);
  EXPECT_EQ(args.strides[1][0], 8);  // the table's rows
  EXPECT_EQ(args.strides[1][1], 1);
  EXPECT_EQ(args.strides[0][0], 1);
  EXPECT_EQ(args.strides[0][1], 0);
  // The ids are a splat (one scalar load a vector), so their row stride of 1 keeps the vector path.
  EXPECT_EQ(args.vec, 1);
  // A row stride that is no multiple of the vector takes the scalar path.
  const int64_t wide[] = {9, 1};
  views[1] = {w, ws, wide};
  EXPECT_EQ(packArgs(pwKs.abi, dom, views).vec, 0);
  // A table of another row count than the kernel checks ids against is refused.
  const int64_t fewer[] = {9, 8};
  views[1] = {w, fewer, wst};
  EXPECT_THROW(packArgs(pwKs.abi, dom, views), UserError);

  // A table past 2^31 elements (a large vocabulary) makes the kernel index with 64 bits.
  EXPECT_FALSE(pwKs.abi.index64);
  auto vocab = makeCase(R"(graph(%ids: i64[s0, 1], %w: f16[300000, 8192] param) {
      %0: f16[s0, 8192] = embedding(%w, %ids)
      return(%0)
    })",
                        GroupKind::kPointwise);
  EXPECT_TRUE(
      emitCuda(*vocab.graph, vocab.group, defaultSchedule(vocab.group, bucket({4})), bucket({4}))
          .abi.index64);

  // What the kernel cannot take: ids that vary along a row (a layer norm over two dims), a table
  // whose rows are not static, and a table another op of the kernel reads.
  auto alongRows = makeCase(R"(graph(%ids: i64[s0, s1, 1], %w: f32[50, 64] param) {
      %0: f32[s0, s1, 64] = embedding(%w, %ids)
      %1: f32[s0, s1, 64] = layer_norm(%0) {eps = 1e-5, normalized_ndim = 2}
      return(%1)
    })",
                            GroupKind::kRow, 2);
  EXPECT_THROW(emitCuda(*alongRows.graph, alongRows.group,
                        defaultSchedule(alongRows.group, bucket({2, 7})), bucket({2, 7})),
               Unsupported);
  auto symbolicRows = makeCase(R"(graph(%ids: i64[s0, 1], %w: f32[s1, 8]) {
      %0: f32[s0, 8] = embedding(%w, %ids)
      return(%0)
    })",
                               GroupKind::kPointwise);
  EXPECT_THROW(emitCuda(*symbolicRows.graph, symbolicRows.group,
                        defaultSchedule(symbolicRows.group, bucket({2, 7})), bucket({2, 7})),
               Unsupported);
  auto twice = makeCase(R"(graph(%ids: i64[8, 1], %w: f32[8, 8] param) {
      %0: f32[8, 8] = embedding(%w, %ids)
      %1: f32[8, 8] = add(%0, %w)
      return(%1)
    })",
                        GroupKind::kPointwise);
  EXPECT_THROW(
      emitCuda(*twice.graph, twice.group, defaultSchedule(twice.group, bucket({})), bucket({})),
      Unsupported);
}

// Note [Aranges in kernels]: a causal mask's two aranges count along their own domain dims (the
// innermost one per vector lane), an int32 arange is cast, and a row kernel takes none.
TEST(EmitCuda, ArangesCountAlongTheirDims) {
  auto mask = makeCase(R"(graph(%m: bool[s0, 1, 1, s1]) {
      %q: i64[1, 1, s1, 1] = arange() {dim = 2, start = 0, step = 1}
      %k: i64[1, 1, 1, s1] = arange() {dim = 3, start = 0, step = 1}
      %c: bool[1, 1, s1, s1] = le(%k, %q)
      %0: bool[s0, 1, s1, s1] = minimum(%c, %m)
      %n: i32[s1] = arange() {dim = 0, start = 5, step = -1}
      %z: i32[] = constant() {value = 0.0}
      %1: i32[s0, 1, s1, s1] = where(%0, %n, %z)
      return(%1)
    })",
                       GroupKind::kPointwise);
  auto ks = emitAndCompile(mask, bucket({2, 9}), {"sm_80", "sm_90"});
  EXPECT_TRUE(contains(ks.source, "(0LL + 1LL * (long long)c2)")) << ks.source;
  EXPECT_TRUE(contains(ks.source, "(0LL + 1LL * ((long long)c3 + j))")) << ks.source;
  EXPECT_TRUE(contains(ks.source, "((int)(5LL + -1LL * ((long long)c3 + j)))")) << ks.source;
  EXPECT_EQ(ks.abi.numInputs, 1);

  auto row = makeCase(R"(graph(%x: f32[s0, 64]) {
      %a: i64[64] = arange() {dim = 0, start = 0, step = 1}
      %0: f32[s0, 64] = add(%x, %a)
      %1: f32[s0, 64] = softmax(%0) {dim = 1}
      return(%1)
    })",
                      GroupKind::kRow, 1);
  EXPECT_THROW(
      emitCuda(*row.graph, row.group, defaultSchedule(row.group, bucket({3})), bucket({3})),
      Unsupported);
}

TEST(EmitCuda, ManyUnaryOps) {
  auto c = makeCase(R"(graph(%x: f32[s0, 100]) {
      %0: f32[s0, 100] = sigmoid(%x)
      %1: f32[s0, 100] = silu(%0)
      %2: f32[s0, 100] = erf(%1)
      %3: f32[s0, 100] = exp(%2)
      %4: f32[s0, 100] = log(%3)
      %5: f32[s0, 100] = clamp(%4) {max = 6.0, min = -1.0}
      %6: f32[s0, 100] = pow_scalar(%5) {exponent = 2.5}
      %7: f32[s0, 100] = tanh(%6)
      %8: f32[s0, 100] = abs(%7)
      %9: f32[s0, 100] = maximum(%8, %x)
      %10: f32[s0, 100] = pow(%9, %x)
      %11: f32[s0, 100] = neg(%10)
      %12: f32[s0, 100] = sqrt(%11)
      %13: f32[s0, 100] = sin(%12)
      %14: f32[s0, 100] = cos(%13)
      return(%14)
    })",
                    GroupKind::kPointwise);
  auto ks = emitAndCompile(c, bucket({2}), {"sm_90"});
  EXPECT_TRUE(contains(ks.source, "kiln_clamp_max(kiln_clamp_min("));
  EXPECT_TRUE(contains(ks.source, "powf("));
  // IEEE sinf/cosf: rotary angles reach thousands of radians.
  EXPECT_TRUE(contains(ks.source, "sinf(") && contains(ks.source, "cosf(")) << ks.source;
}

TEST(EmitCuda, DeterministicAndNamedByContent) {
  const char* text = R"(graph(%x: f16[s0, 512]) {
      %0: f16[s0, 512] = softmax(%x) {dim = 1}
      return(%0)
    })";
  auto a = makeCase(text, GroupKind::kRow, 1);
  auto b = makeCase(text, GroupKind::kRow, 1);  // a separate graph: same text expected
  auto s = defaultSchedule(a.group, bucket({4}));
  auto k1 = emitCuda(*a.graph, a.group, s, bucket({4}));
  auto k2 = emitCuda(*b.graph, b.group, s, bucket({4}));
  EXPECT_EQ(k1.source, k2.source);
  EXPECT_EQ(k1.name, k2.name);
  EXPECT_TRUE(k1.name.rfind("kiln_row_", 0) == 0);
  auto other = std::get<ReductionParams>(s);
  other.threadsPerRow = 16;
  other.rowsPerBlock = 16;
  other.chunksPerThread = 4;
  auto k3 = emitCuda(*a.graph, a.group, other, bucket({4}));
  EXPECT_NE(k3.name, k1.name);
}

TEST(EmitCuda, UnsupportedPatternsThrow) {
  auto c = makeCase(R"(graph(%x: f32[s0, 64]) {
      %0: f32[s0, 64] = softmax(%x) {dim = 0}
      return(%0)
    })",
                    GroupKind::kRow, 1);
  EXPECT_THROW(emitCuda(*c.graph, c.group, defaultSchedule(c.group, bucket({4})), bucket({4})),
               Unsupported);
  auto pw = makeCase(R"(graph(%x: f32[s0, 64]) {
      %0: f32[s0, 64] = relu(%x)
      return(%0)
    })",
                     GroupKind::kPointwise);
  ReductionParams wrong;
  EXPECT_THROW(emitCuda(*pw.graph, pw.group, wrong, bucket({4})), Unsupported);
}

// Golden files: exact text. KILN_REGEN_GOLDEN=1 rewrites them (review the diff before committing).
void checkGolden(const std::string& file, const std::string& actual) {
  const std::string path = std::string(KILN_SOURCE_DIR) + "/tests/codegen/golden/" + file;
  if (const char* regen = std::getenv("KILN_REGEN_GOLDEN"); regen && std::string(regen) == "1") {
    std::ofstream(path, std::ios::binary) << actual;
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << "missing golden " << path << " (run with KILN_REGEN_GOLDEN=1)";
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), actual) << "golden " << file << " differs; KILN_REGEN_GOLDEN=1 regenerates";
}

// NVRTC compiles `ks` for sm_80 and sm_90, each to a non-empty cubin.
void expectCompilesForSm80AndSm90(const KernelSource& ks) {
  for (const char* arch : {"sm_80", "sm_90"}) {
    try {
      jit::CompiledKernel ck = jit::compileToCubin(ks.source, ks.name, arch);
      EXPECT_FALSE(ck.cubin.empty());
    } catch (const CompileError& e) {
      ADD_FAILURE() << "NVRTC failed for " << arch << ":\n" << e.log() << "\n" << e.source();
    }
  }
}

// Note [Layout conversion kernels]: one transpose kernel per float dtype, compiled by NVRTC for
// both archs, named by content and deterministic; no kernel for other dtypes.
TEST(EmitCuda, TransposeKernels) {
  std::set<std::string> names;
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
    KernelSource ks = emitTranspose(dt);
    EXPECT_EQ(ks.source, emitTranspose(dt).source);
    EXPECT_TRUE(contains(ks.name, std::string("kiln_transpose_") + std::string(ir::toString(dt))))
        << ks.name;
    EXPECT_TRUE(contains(ks.source, "kiln_batched_transpose<")) << ks.source;
    names.insert(ks.name);
    expectCompilesForSm80AndSm90(ks);
  }
  EXPECT_EQ(names.size(), 3u);
  EXPECT_THROW(emitTranspose(DType::kInt64), Unsupported);
}

// Note [Fold kernel]: one batchnorm fold kernel per (weight, params, out) dtypes and eps, compiled
// by NVRTC for both archs, named by content; eps is exact in the text; none for other dtypes.
TEST(EmitCuda, ConvBnFoldKernels) {
  std::set<std::string> names;
  const std::vector<std::array<DType, 3>> combos = {
      {DType::kFloat16, DType::kFloat16, DType::kFloat16},
      {DType::kBFloat16, DType::kBFloat16, DType::kBFloat16},
      {DType::kFloat32, DType::kFloat32, DType::kFloat32},
      {DType::kFloat32, DType::kFloat32, DType::kFloat16},    // Note [Precision]: retyped
      {DType::kFloat16, DType::kFloat32, DType::kBFloat16}};  // every header at once
  for (const auto& [w, p, o] : combos) {
    KernelSource ks = emitConvBnFold(w, p, o, 1e-5f);
    EXPECT_EQ(ks.source, emitConvBnFold(w, p, o, 1e-5f).source);
    EXPECT_TRUE(contains(ks.name, "kiln_fold_conv_bn_")) << ks.name;
    EXPECT_TRUE(contains(ks.source, "1.00000001e-05f") || contains(ks.source, "9.99999975e-06f"))
        << ks.source;
    names.insert(ks.name);
    expectCompilesForSm80AndSm90(ks);
  }
  EXPECT_EQ(names.size(), combos.size());
  EXPECT_NE(emitConvBnFold(DType::kFloat16, DType::kFloat16, DType::kFloat16, 1e-3f).name,
            emitConvBnFold(DType::kFloat16, DType::kFloat16, DType::kFloat16, 1e-5f).name);
  EXPECT_THROW(emitConvBnFold(DType::kInt64, DType::kFloat32, DType::kFloat32, 1e-5f), Unsupported);
  EXPECT_THROW(emitConvBnFold(DType::kFloat32, DType::kFloat32, DType::kFloat32, INFINITY),
               Unsupported);
}

// Note [Kiln GEMM]: the wgmma kernel compiles for sm_90a in both 16-bit dtypes, with and without
// a bias, named by content and deterministic, without register spills (its accumulators stay in
// registers); no kernel for f32.
TEST(EmitCuda, GemmKernels) {
  std::set<std::string> names;
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    for (bool bias : {true, false}) {
      GemmSpec spec;
      spec.dtype = dt;
      spec.activation = GemmActivation::kGeluErf;
      spec.hasBias = bias;
      KernelSource ks = emitGemm(spec);
      EXPECT_EQ(ks.source, emitGemm(spec).source);
      EXPECT_TRUE(contains(ks.name, "kiln_gemm_" + std::string(ir::toString(dt)) + "_gelu"))
          << ks.name;
      EXPECT_TRUE(contains(ks.source, "__expf(-q * t)")) << ks.source;
      EXPECT_FALSE(contains(ks.source, "erff(")) << "Note [Branch-free erf gelu]";
      // The kernel's tiling is the one the host sizes shared memory, grids and TMA boxes for.
      for (const auto& [macro, value] : {std::pair<std::string, int>{"BM", kGemmTileM},
                                         {"BN", kGemmTileN},
                                         {"BK", kGemmTileK},
                                         {"STAGES", kGemmStages},
                                         {"THREADS", kGemmThreads}})
        EXPECT_TRUE(contains(ks.source, "#define KILN_GEMM_" + macro + " " + std::to_string(value)))
            << macro;
      names.insert(ks.name);
      try {
        jit::CompileOptions options;
        options.extra = {"--ptxas-options=-v"};
        jit::CompiledKernel ck =
            jit::compileToCubin(ks.source, ks.name, std::string(kGemmArch), options);
        EXPECT_FALSE(ck.cubin.empty());
        EXPECT_TRUE(contains(ck.log, "0 bytes spill stores")) << ck.log;
      } catch (const CompileError& e) {
        ADD_FAILURE() << "NVRTC failed:\n" << e.log() << "\n" << e.source();
      }
    }
  }
  GemmSpec plain;
  plain.activation = GemmActivation::kNone;
  EXPECT_FALSE(contains(emitGemm(plain).source, "__expf(")) << emitGemm(plain).source;
  names.insert(emitGemm(plain).name);
  EXPECT_EQ(names.size(), 5u);
  GemmSpec f32;
  f32.dtype = DType::kFloat32;
  EXPECT_THROW(emitGemm(f32), Unsupported);
}

// Note [Branch-free erf gelu]: the GEMM epilogue's gelu against the exact one, in double, over
// [-9, 9]: within the bounds the note gives, and never further from it than float erff's formula.
TEST(EmitCuda, GemmGeluApproximation) {
  double maxAbs = 0, maxRel = 0, eagerAbs = 0;
  for (int i = -900000; i <= 900000; ++i) {
    const float v = static_cast<float>(i) * 1e-5f;
    const double exact = 0.5 * v * std::erfc(-static_cast<double>(v) / std::sqrt(2.0));
    const double got = codegen::geluErfApprox(v);
    const double eager = 0.5f * v * (1.f + std::erf(v * 0.70710678118654752f));
    maxAbs = std::max(maxAbs, std::abs(got - exact));
    eagerAbs = std::max(eagerAbs, std::abs(eager - exact));
    if (std::abs(v) < 5)
      maxRel = std::max(maxRel, std::abs(got - exact) / std::abs(exact + 1e-300));
  }
  EXPECT_LT(maxAbs, 4e-7);
  EXPECT_LT(maxRel, 4e-6);
  EXPECT_LE(maxAbs, eagerAbs * 1.01) << "eager's float formula: " << eagerAbs;
  EXPECT_EQ(codegen::geluErfApprox(0.f), 0.f);
  EXPECT_EQ(codegen::geluErfApprox(20.f), 20.f);
}

TEST(EmitCuda, GoldenPointwise) {
  auto c = makeCase(R"(graph(%x: f16[s0, 256], %b: f16[256] param) {
      %0: f16[s0, 256] = add(%x, %b)
      %1: f16[s0, 256] = silu(%0)
      return(%1)
    })",
                    GroupKind::kPointwise);
  checkGolden(
      "pointwise_add_silu.cu",
      emitCuda(*c.graph, c.group, defaultSchedule(c.group, bucket({8})), bucket({8})).source);
}

TEST(EmitCuda, GoldenLayerNorm) {
  auto c = makeCase(R"(graph(%x: f32[s0, 256], %w: f32[256] param, %b: f32[256] param) {
      %0: f32[s0, 256] = layer_norm(%x, %w, %b) {eps = 1e-05, normalized_ndim = 1}
      return(%0)
    })",
                    GroupKind::kRow, 1);
  checkGolden(
      "row_layer_norm.cu",
      emitCuda(*c.graph, c.group, defaultSchedule(c.group, bucket({8})), bucket({8})).source);
}

// --- NVRTC ---

TEST(Nvrtc, CompileErrorCarriesLogSourceAndOptions) {
  const std::string bad = "extern \"C\" __global__ void broken() { undeclared_thing = 1; }\n";
  try {
    jit::compileToCubin(bad, "broken", "sm_90");
    FAIL() << "expected CompileError";
  } catch (const CompileError& e) {
    EXPECT_TRUE(contains(e.log(), "undeclared_thing")) << e.log();
    EXPECT_EQ(e.source(), bad);
    EXPECT_EQ(e.options().front(), "--gpu-architecture=sm_90");
  }
  EXPECT_THROW(jit::nvrtcOptions("compute_90"), UserError);
  EXPECT_GE(jit::nvrtcVersion(), 11000);
}

TEST(Nvrtc, ArchesAreCheckedAgainstWhatThisNvrtcSupports) {
  // Issue 20: sm_1000 passed the form check and then failed every compile.
  const std::vector<int> supported = jit::nvrtcSupportedArchs();
  ASSERT_FALSE(supported.empty());
  EXPECT_NE(std::find(supported.begin(), supported.end(), 90), supported.end());
  EXPECT_NO_THROW(jit::checkArch("--arch", "sm_90"));
  EXPECT_NO_THROW(jit::checkArch("--arch", "sm_90a"));
  for (const char* bad : {"sm_1000", "sm_10", "sm_9", "hopper", "sm_90b"}) {
    try {
      jit::checkArch("--arch", bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const UserError& e) {
      EXPECT_TRUE(contains(e.what(), "--arch")) << e.what();
      EXPECT_TRUE(contains(e.what(), bad)) << e.what();
    }
  }
  try {
    jit::checkArch("KILN_ARCH", "sm_1000");
  } catch (const UserError& e) {
    EXPECT_TRUE(contains(e.what(), "sm_90")) << "the message lists what is supported: " << e.what();
  }
  EXPECT_THROW(jit::nvrtcOptions("sm_1000"), UserError);
}

}  // namespace
}  // namespace kiln::codegen

// Every fused pattern against LibTorch eager on the GPU: f32/f16/bf16, odd sizes, broadcasts,
// non-contiguous and unaligned inputs. Kernel outputs are poisoned (NaN) before each launch, and
// each test checks that the kernels really ran (no silent eager fallback).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <kiln/kiln.h>

#include "jit/runtime/fold_conv_bn.h"
#include "jit/runtime/gemm_kernels.h"
#include "jit/runtime/layout_kernels.h"
#include "jit/runtime/library_prewarm.h"
#include "tests/support/temp_dir.h"

namespace {

using torch::indexing::None;
using torch::indexing::Slice;

kiln::Session& gpuSession() {
  static kiln::Session* s = [] {
    // f32 comparisons are made with TF32 off (issue 9): with it on, cuDNN and cuBLAS round f32
    // operands to 10 mantissa bits, and a rewrite that changes a library call's operands (a
    // batchnorm folded into conv weights) moves the result by that much, as eager's own error.
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
    kiln::Options o;
    o.poisonOutputs = true;
    o.diskCache = false;
    o.kilnGemm = true;  // the default; Note [Kiln GEMM]: tested wherever there is an sm_90 device
    return new kiln::Session(o);
  }();
  return *s;
}

bool haveGpu(std::string* why) {
  if (!torch::cuda::is_available()) {
    *why = "no CUDA device visible to LibTorch";
    return false;
  }
  if (gpuSession().cudaEnvironment().devices.empty()) {
    *why = gpuSession().cudaEnvironment().reason;
    return false;
  }
  return true;
}

#define REQUIRE_GPU()                                      \
  do {                                                     \
    std::string why;                                       \
    if (!haveGpu(&why)) GTEST_SKIP() << "no GPU: " << why; \
  } while (0)

double tolerance(torch::ScalarType t, int64_t reduction) {
  double base = t == torch::kFloat ? 2e-5 : (t == torch::kHalf ? 4e-3 : 3e-2);
  return base * (1.0 + std::log2(static_cast<double>(std::max<int64_t>(reduction, 1))) / 4);
}

const char* name(torch::ScalarType t) {
  return t == torch::kFloat ? "f32" : (t == torch::kHalf ? "f16" : "bf16");
}

void expectClose(const torch::Tensor& got, const torch::Tensor& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  if (got.scalar_type() == torch::kBool) {
    EXPECT_TRUE(torch::equal(got, want)) << what;
    return;
  }
  auto g = got.to(torch::kDouble), w = want.to(torch::kDouble);
  EXPECT_FALSE(g.isnan().any().item<bool>() && !w.isnan().any().item<bool>())
      << what << ": NaN in kiln output (an element was not written?)";
  double err = ((g - w).abs() / (w.abs() + 1.0)).max().item<double>();
  EXPECT_LE(err, tol) << what << ": max rel error " << err;
}

struct Case {
  std::string source;  // TorchScript `def forward(self, ...)`
  std::vector<std::pair<std::string, torch::Tensor>> params;
};

torch::jit::Module makeModule(const Case& c, torch::ScalarType dtype) {
  torch::jit::Module m("M");
  for (const auto& [n, t] : c.params) m.register_parameter(n, t.to(torch::kCUDA, dtype), false);
  m.define(c.source);
  m.eval();
  return m;
}

// Runs the case through kiln and eager; expects `minLaunches` kernel launches and no fallback.
void checkCase(const Case& c, const std::vector<torch::Tensor>& inputs, torch::ScalarType dtype,
               int64_t reduction, const std::string& what, bool expectKernels = true) {
  torch::NoGradGuard ng;
  torch::jit::Module m = makeModule(c, dtype);
  std::vector<torch::IValue> in(inputs.begin(), inputs.end());
  kiln::jit::Options opt;
  opt.session = &gpuSession();
  auto fast = kiln::jit::optimize(m, opt);
  for (int rep = 0; rep < 2; ++rep) {  // second call: plan hit, same answer
    torch::Tensor got = fast.forward(in).toTensor();
    torch::Tensor want = m.forward(in).toTensor();
    c10::cuda::device_synchronize();
    expectClose(got, want, tolerance(dtype, reduction), what + " rep " + std::to_string(rep));
  }
  auto st = fast.stats();
  EXPECT_EQ(st.planMisses, 1u) << what;
  EXPECT_EQ(st.planHits, 1u) << what;
  if (expectKernels) {
    EXPECT_GT(st.kernelLaunches, 0u) << what << "\n" << fast.explain();
    EXPECT_EQ(st.groupFallbacks, 0u) << what << "\n" << fast.explain();
  }
}

torch::Tensor rnd(std::vector<int64_t> shape, torch::ScalarType dt) {
  return torch::randn(shape, torch::TensorOptions().device(torch::kCUDA)).to(dt);
}

const std::vector<torch::ScalarType> kDtypes = {torch::kFloat, torch::kHalf, torch::kBFloat16};
const std::vector<int64_t> kCols = {1, 3, 1000, 4097};

TEST(GpuFusion, PointwiseChainWithBroadcast) {
  REQUIRE_GPU();
  for (auto dt : kDtypes)
    for (int64_t cols : kCols) {
      Case c{R"(
def forward(self, x):
    return torch.gelu(x * self.w + self.b) * torch.sigmoid(x) + x
)",
             {{"w", torch::randn({cols})}, {"b", torch::randn({cols})}}};
      checkCase(c, {rnd({7, cols}, dt)}, dt, 1,
                std::string("pointwise ") + name(dt) + " cols " + std::to_string(cols));
    }
}

TEST(GpuFusion, AddLayerNormGelu) {
  REQUIRE_GPU();
  for (auto dt : kDtypes)
    for (int64_t cols : kCols) {
      Case c{R"(
def forward(self, x, r):
    return torch.gelu(torch.layer_norm(x + r, [x.size(-1)], self.w, self.b, 1e-5))
)",
             {{"w", torch::randn({cols})}, {"b", torch::randn({cols})}}};
      checkCase(c, {rnd({5, cols}, dt), rnd({5, cols}, dt)}, dt, cols,
                std::string("add+layernorm+gelu ") + name(dt) + " cols " + std::to_string(cols));
    }
}

TEST(GpuFusion, ScaleMaskSoftmax) {
  REQUIRE_GPU();
  for (auto dt : kDtypes)
    for (int64_t cols : kCols) {
      Case c{R"(
def forward(self, x, m):
    return torch.softmax(x * 0.125 + m, -1)
)",
             {}};
      checkCase(c, {rnd({2, 3, cols}, dt), rnd({2, 1, cols}, dt)}, dt, cols,
                std::string("softmax ") + name(dt) + " cols " + std::to_string(cols));
    }
}

TEST(GpuFusion, LogSoftmaxAndReductions) {
  REQUIRE_GPU();
  for (auto dt : kDtypes)
    for (int64_t cols : {3, 1000, 4097}) {
      Case ls{R"(
def forward(self, x):
    return torch.log_softmax(x, -1)
)",
              {}};
      checkCase(ls, {rnd({4, cols}, dt)}, dt, cols, std::string("log_softmax ") + name(dt));
      Case red{R"(
def forward(self, x):
    return x.sum(-1, keepdim=True) + x.mean(-1, keepdim=True) * x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)
)",
               {}};
      checkCase(red, {rnd({4, cols}, dt)}, dt, cols * 4, std::string("reductions ") + name(dt));
    }
}

TEST(GpuFusion, RmsNormWrittenOut) {
  REQUIRE_GPU();
  for (auto dt : kDtypes) {
    Case c{R"(
def forward(self, x):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * self.w
)",
           {{"w", torch::randn({4096})}}};
    checkCase(c, {rnd({9, 4096}, dt)}, dt, 4096, std::string("rmsnorm ") + name(dt));
  }
}

TEST(GpuFusion, UnaryOps) {
  REQUIRE_GPU();
  for (auto dt : kDtypes) {
    Case c{R"(
def forward(self, x):
    a = torch.neg(x) + torch.abs(x) + torch.exp(x * 0.1) + torch.log(torch.abs(x) + 1.0)
    b = torch.sqrt(torch.abs(x)) + torch.rsqrt(torch.abs(x) + 1.0) + torch.tanh(x) + torch.relu(x)
    c = torch.gelu(x, approximate='tanh') + x * torch.sigmoid(x) + torch.erf(x)
    d = torch.clamp(x, -0.5, 0.5) + torch.clamp_min(x, 0.1) + torch.pow(x, 2.0) + x / 3.0 - x
    e = torch.sin(x) + torch.cos(x)
    return a + b + c + d + e
)",
           {}};
    checkCase(c, {rnd({3, 1000}, dt)}, dt, 1, std::string("unary ") + name(dt));
  }
}

TEST(GpuFusion, WhereComparisonsCasts) {
  REQUIRE_GPU();
  for (auto dt : kDtypes) {
    Case c{R"(
def forward(self, x, y):
    m = (x > y) | (x == 0.0)
    z = torch.where(m, x, y * 2.0)
    return z.float() + (x <= y).float()
)",
           {}};
    checkCase(c, {rnd({6, 1001}, dt), rnd({6, 1001}, dt)}, dt, 1,
              std::string("where/compare/cast ") + name(dt));
  }
}

TEST(GpuFusion, NonContiguousAndUnalignedInputs) {
  REQUIRE_GPU();
  for (auto dt : kDtypes) {
    Case c{R"(
def forward(self, x, r):
    return torch.layer_norm(x * 2.0 + r, [x.size(-1)], None, None, 1e-5)
)",
           {}};
    torch::Tensor base = rnd({1000, 65}, dt);
    torch::Tensor transposed = base.t();  // [65, 1000], strides (1, 65)
    torch::Tensor unaligned = rnd({65, 1001}, dt).index({Slice(), Slice(1, None)});  // offset 1
    checkCase(c, {transposed, unaligned}, dt, 1000, std::string("strided ") + name(dt));
    // Expanded inputs: stride 0 along a dim of size > 1. Along the innermost dim that is the
    // scalar path (Note [Splat loads]); along the outer one the vector path still applies.
    torch::Tensor col = rnd({64, 1}, dt).expand({64, 1024});    // strides (1, 0)
    torch::Tensor row = rnd({1, 1024}, dt).expand({64, 1024});  // strides (0, 1)
    checkCase(c, {col, row}, dt, 1024, std::string("expanded ") + name(dt));
    checkCase(c, {row, col}, dt, 1024, std::string("expanded, swapped ") + name(dt));
    Case p{R"(
def forward(self, x, r):
    return torch.sigmoid(x) * r + x
)",
           {}};
    checkCase(p, {col, row}, dt, 1, std::string("expanded pointwise ") + name(dt));
    checkCase(p, {row, rnd({64, 1024}, dt)}, dt, 1, std::string("expanded rows ") + name(dt));
  }
}

// Note [Cats written in place]: a rotary embedding's two halves are one kernel whose outputs are
// strided views into the cat's buffer (Note [Pointwise ops through cat]). Head dim 64 takes the
// vector path; head dim 6 (halves of 3 elements) the scalar one; a strided x (a slice of a wider
// projection, as merged q/k/v give) too.
TEST(GpuFusion, RotaryHalvesWrittenIntoTheCat) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  for (auto dt : kDtypes)
    for (int64_t d : {64, 6})
      for (bool strided : {false, true}) {
        const int64_t h = d / 2;
        Case c{fmt::format(R"(
def forward(self, x, cos, sin):
    r = torch.cat((-x[..., {}:], x[..., :{}]), dim=-1)
    return x * cos + r * sin
)",
                           h, h),
               {}};
        torch::jit::Module m = makeModule(c, dt);
        kiln::jit::Options opt;
        opt.session = &gpuSession();
        auto fast = kiln::jit::optimize(m, opt);
        torch::Tensor x = strided ? rnd({3, 37, 4, 3 * d}, dt)
                                        .index({Slice(), Slice(), Slice(), Slice(d, 2 * d)})
                                        .permute({0, 2, 1, 3})
                                  : rnd({3, 4, 37, d}, dt);
        std::vector<torch::IValue> in{x, rnd({37, d}, dt), rnd({37, d}, dt)};
        const std::string what =
            fmt::format("rotary {} d {}{}", name(dt), d, strided ? " strided" : "");
        for (int rep = 0; rep < 2; ++rep) {
          torch::Tensor got = fast.forward(in).toTensor();
          torch::Tensor want = m.forward(in).toTensor();
          c10::cuda::device_synchronize();
          expectClose(got, want, tolerance(dt, 2), what);
          EXPECT_TRUE(got.is_contiguous()) << what;
        }
        const std::string why = fast.explain();
        EXPECT_NE(why.find("cats written in place: 2 operands"), std::string::npos) << what << "\n"
                                                                                    << why;
        EXPECT_EQ(fast.stats().groupFallbacks, 0u) << what << "\n" << why;
        EXPECT_GT(fast.stats().kernelLaunches, 0u) << what << "\n" << why;
      }
}

TEST(GpuModels, MlpBlock) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  for (auto dt : {torch::kFloat, torch::kHalf}) {
    auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/mlp.pt");
    m.to(torch::kCUDA, dt);
    m.eval();
    kiln::jit::Options opt;
    opt.session = &gpuSession();
    auto fast = kiln::jit::optimize(m, opt);
    std::vector<torch::IValue> in{rnd({4, 33, 1024}, dt)};
    expectClose(fast.forward(in).toTensor(), m.forward(in).toTensor(), tolerance(dt, 4096) * 4,
                std::string("mlp ") + name(dt));
    EXPECT_GT(fast.stats().kernelLaunches, 0u) << fast.explain();
  }
}

TEST(GpuModels, EncoderBlock) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  // Dynamic batch and sequence, odd sizes, batch 1, and a random additive mask: q, k and v reach
  // SDPA as strided views of the QKV projection and the output projection reads attention's rows
  // as written (src/passes/layout_views.h).
  for (auto dt : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/encoder_block.pt");
    m.to(torch::kCUDA, dt);
    m.eval();
    kiln::jit::Options opt;
    opt.session = &gpuSession();
    opt.inputNames = {"x", "mask"};
    opt.dynamicDims = {{"x", 0, "batch"},
                       {"mask", 0, "batch"},
                       {"x", 1, "seq"},
                       {"mask", 2, "seq"},
                       {"mask", 3, "seq"}};
    auto fast = kiln::jit::optimize(m, opt);
    for (auto [batch, seq] : {std::pair<int64_t, int64_t>{3, 37}, {1, 16}, {5, 128}}) {
      torch::Tensor mask = rnd({batch, 1, seq, seq}, dt);
      std::vector<torch::IValue> in{rnd({batch, seq, 768}, dt), mask};
      expectClose(fast.forward(in).toTensor(), m.forward(in).toTensor(), tolerance(dt, 3072) * 4,
                  fmt::format("encoder {} batch {} seq {}", name(dt), batch, seq));
    }
    EXPECT_GT(fast.stats().kernelLaunches, 0u) << fast.explain();
    EXPECT_EQ(fast.explain().find("12*batch"), std::string::npos) << fast.explain();
  }
}

// `net` on the GPU in `dt`, optimized by kiln with its input's first dim dynamic ("rows").
kiln::jit::OptimizedModule optimizeWithDynamicRows(torch::nn::Sequential& net,
                                                   torch::ScalarType dt) {
  net->to(torch::kCUDA, dt);
  net->eval();
  kiln::jit::Options opt;
  opt.session = &gpuSession();
  opt.dynamicDims = {{"input0", 0, "rows"}};
  return kiln::jit::optimize(net, opt);
}

// relu and tanh-gelu after a linear run in cuBLASLt's epilogue (Note [Library epilogues]): the
// activation applies to the fp32 accumulator before the one rounding, so tanh-gelu may differ
// from eager's (round, activate, round) by one rounding; relu gives the same bits.
TEST(GpuEpilogues, LinearReluAndTanhGeluMatchEager) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  for (auto dt : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    torch::nn::Sequential net(
        torch::nn::Linear(64, 256), torch::nn::ReLU(), torch::nn::Linear(256, 128),
        torch::nn::GELU(torch::nn::GELUOptions().approximate("tanh")), torch::nn::Linear(128, 32));
    auto fast = optimizeWithDynamicRows(net, dt);
    for (int64_t rows : {1, 37, 4096}) {
      torch::Tensor x = rnd({rows, 64}, dt);
      expectClose(fast.forward({x}).toTensor(), net->forward(x), tolerance(dt, 256) * 4,
                  fmt::format("linear epilogues {} rows {}", name(dt), rows));
    }
    const std::string explain = fast.explain();
    EXPECT_NE(explain.find("activation = \"relu\""), std::string::npos) << explain;
    EXPECT_NE(explain.find("activation = \"gelu_tanh\""), std::string::npos) << explain;
  }
}

// Note [Kiln GEMM]: erf gelu after a 16-bit linear runs in kiln's own sm_90 GEMM, bias and gelu
// applied to the fp32 accumulators before one rounding (eager rounds twice: within a rounding).
// Odd row counts, batch 1, partial tiles in N and K, and calls the kernel cannot take (a strided
// input TMA cannot describe) falling back to ATen with the same answer.
TEST(GpuGemm, ErfGeluLinearMatchesEager) {
  REQUIRE_GPU();
  if (gpuSession().cudaEnvironment().devices.front().major != 9)
    GTEST_SKIP() << "kiln's GEMM needs an sm_90 device";
  torch::NoGradGuard ng;
  for (auto dt : {torch::kHalf, torch::kBFloat16, torch::kFloat}) {
    for (auto [k, n] : {std::pair<int64_t, int64_t>{64, 256}, {72, 200}, {1024, 4096}, {24, 8}}) {
      torch::nn::Sequential net(torch::nn::Linear(k, n), torch::nn::GELU(),
                                torch::nn::Linear(n, 16));
      auto fast = optimizeWithDynamicRows(net, dt);
      for (int64_t rows : {1, 37, 130, 4096}) {
        torch::Tensor x = rnd({rows, k}, dt);
        expectClose(fast.forward({x}).toTensor(), net->forward(x), tolerance(dt, k) * 4,
                    fmt::format("linear+gelu {} k {} n {} rows {}", name(dt), k, n, rows));
        // A column slice: its row stride, (k + 4) * 2 bytes, is no multiple of 16, so TMA cannot
        // describe it and the linear runs through ATen.
        torch::Tensor wide = rnd({rows, k + 4}, dt);
        torch::Tensor sliced = wide.index({Slice(), Slice(0, k)});
        expectClose(fast.forward({sliced}).toTensor(), net->forward(sliced), tolerance(dt, k) * 4,
                    fmt::format("linear+gelu sliced {} k {} n {} rows {}", name(dt), k, n, rows));
      }
      const std::string explain = fast.explain();
      if (dt == torch::kFloat) {
        EXPECT_EQ(explain.find("kiln GEMM"), std::string::npos) << explain;
      } else {
        EXPECT_NE(explain.find("kiln GEMM kiln_gemm_"), std::string::npos) << explain;
        EXPECT_GT(fast.stats().kernelLaunches, 0u) << explain;
      }
    }
  }
}

// Note [Kiln GEMM while cuBLAS loads]: while the prewarm's cuBLAS load is held as running, plain
// 16-bit linears (with and without a bias) run on the stand-in kiln GEMM, match eager, and no graph
// is captured; once the load is over they go back to ATen (three launches fewer a call) and
// graphs are captured again. The real prewarm clears its flag when its job ends.
TEST(GpuGemm, StandInWhileCublasLoadsMatchesEager) {
  REQUIRE_GPU();
  if (gpuSession().cudaEnvironment().devices.front().major != 9)
    GTEST_SKIP() << "kiln's GEMM needs an sm_90 device";
  torch::NoGradGuard ng;
  const int device = 0;
  struct Release {
    ~Release() { kiln::jit::holdGemmLibraryLoadingForTesting(0, false); }
  } release;
  for (auto dt : {torch::kHalf, torch::kBFloat16}) {
    SCOPED_TRACE(name(dt));
    // Five launching steps, enough for graphs (GraphReplay::kMinStepsForGraphs).
    torch::nn::Sequential net(torch::nn::Linear(256, 512), torch::nn::Tanh(),
                              torch::nn::Linear(512, 256), torch::nn::Sigmoid(),
                              torch::nn::Linear(torch::nn::LinearOptions(256, 72).bias(false)));
    {  // The stand-in's kernel is only read from the cache: the first program compiles it there.
      auto first = optimizeWithDynamicRows(net, dt);
      first.forward({rnd({3, 256}, dt)});
      gpuSession().waitForBackground();
    }
    auto fast = optimizeWithDynamicRows(net, dt);
    kiln::jit::holdGemmLibraryLoadingForTesting(device, true);
    uint64_t launchesHeld = 0;
    for (int64_t rows : {1, 37, 300, 300, 300, 300}) {
      torch::Tensor x = rnd({rows, 256}, dt);
      const uint64_t before = fast.stats().kernelLaunches;
      expectClose(fast.forward({x}).toTensor(), net->forward(x), tolerance(dt, 512) * 4,
                  fmt::format("held rows {}", rows));
      launchesHeld = fast.stats().kernelLaunches - before;
    }
    const std::string held = fast.explain();
    EXPECT_NE(held.find("3 linear(s) run on kiln GEMM kiln_gemm_"), std::string::npos) << held;
    EXPECT_NE(held.find("cuBLAS is loading now"), std::string::npos) << held;
    EXPECT_EQ(fast.stats().graphCaptures, 0u) << "no graph while a stand-in runs\n" << held;
    kiln::jit::holdGemmLibraryLoadingForTesting(device, false);
    gpuSession().waitForBackground();  // the real prewarm, and the bucket's kernels
    ASSERT_FALSE(kiln::jit::gemmLibraryLoading(device)) << "the prewarm's flag outlived its job";
    torch::Tensor x = rnd({301, 256}, dt);
    const uint64_t before = fast.stats().kernelLaunches;
    expectClose(fast.forward({x}).toTensor(), net->forward(x), tolerance(dt, 512) * 4, "released");
    EXPECT_EQ(launchesHeld, fast.stats().kernelLaunches - before + 3) << fast.explain();
    for (int i = 0; i < 4; ++i) fast.forward({x});
    EXPECT_GT(fast.stats().graphCaptures, 0u) << fast.explain();
    EXPECT_NE(fast.explain().find("cuBLAS is loaded, so they run in ATen"), std::string::npos);
  }
}

// The kernel alone against float64 on awkward operands: M not a multiple of the 128-row tile, N
// of the 128-column tile, K of the 64-deep step (TMA zero-fills the parts of a box outside the
// operands). Each case's output is checked in full, so a missed or misplaced element shows up.
TEST(GpuGemm, KernelAgainstFloat64) {
  REQUIRE_GPU();
  if (gpuSession().cudaEnvironment().devices.front().major != 9)
    GTEST_SKIP() << "kiln's GEMM needs an sm_90 device";
  torch::NoGradGuard ng;
  for (auto dt : {torch::kHalf, torch::kBFloat16}) {
    kiln::codegen::GemmSpec spec;
    spec.dtype = dt == torch::kHalf ? kiln::ir::DType::kFloat16 : kiln::ir::DType::kBFloat16;
    spec.activation = kiln::codegen::GemmActivation::kGeluErf;
    kiln::jit::KilnGemm gemm(gpuSession(), spec);
    ASSERT_TRUE(gemm.hasKernel()) << gemm.reason();
    // Rows of out that are a multiple of 16 bytes go through TMA stores, clipped at partial
    // tiles; others (n = 100, 37) through the kernel's bounds-checked stores. 5000 x 1000 gives
    // each consumer several tiles, so the stage ring and turn barriers go round many phases.
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 8, 8},
                           {129, 264, 72},
                           {1000, 520, 200},
                           {4096, 4096, 1024},
                           {3, 1000, 4096},
                           {130, 100, 64},
                           {257, 37, 24},
                           {5000, 1000, 136}}) {
      torch::Tensor x = rnd({m, k}, dt), w = rnd({n, k}, dt) / std::sqrt(double(k));
      torch::Tensor b = rnd({n}, dt);
      std::optional<torch::Tensor> got = gemm.run(x, w, &b);
      ASSERT_TRUE(got.has_value()) << m << "x" << n << "x" << k;
      torch::Tensor want = torch::gelu(
          torch::linear(x.to(torch::kDouble), w.to(torch::kDouble), b.to(torch::kDouble)));
      c10::cuda::device_synchronize();
      // One rounding of the output (fp32 accumulation error is far below it).
      const double ulp = dt == torch::kHalf ? 1.0 / 1024 : 1.0 / 128;
      const double err =
          ((got->to(torch::kDouble) - want).abs() / (want.abs() + 1.0)).max().item<double>();
      EXPECT_LE(err, ulp) << name(dt) << " " << m << "x" << n << "x" << k;
    }
    // Calls it cannot take come back empty (the plan then runs ATen).
    torch::Tensor x = rnd({4, 20}, dt), w = rnd({8, 20}, dt), b = rnd({8}, dt);
    EXPECT_FALSE(gemm.run(x, w, &b).has_value()) << "K * 2 bytes not a multiple of 16";
    EXPECT_FALSE(gemm.run(x.cpu(), w.cpu(), &b).has_value()) << "CPU tensors";
    EXPECT_FALSE(
        gemm.run(rnd({4, 16}, torch::kFloat), rnd({8, 16}, torch::kFloat), nullptr).has_value())
        << "f32";
  }
}

// Issue 20's stress test of the default sm_90 GEMM: eight threads share one kernel, half of them
// on streams of their own, each with random odd M, N and K (K a multiple of 8: TMA needs 16-byte
// rows), operands whose rows are padded (a row stride other than K), bases off 16-byte alignment
// and transposed weights. Every call the kernel takes must match float64 to one rounding; every
// call it cannot take must come back empty rather than launch.
TEST(GpuGemm, StressOddShapesStridesAndThreads) {
  REQUIRE_GPU();
  if (gpuSession().cudaEnvironment().devices.front().major != 9)
    GTEST_SKIP() << "kiln's GEMM needs an sm_90 device";
  kiln::codegen::GemmSpec spec;
  spec.dtype = kiln::ir::DType::kFloat16;
  spec.activation = kiln::codegen::GemmActivation::kGeluErf;
  kiln::jit::KilnGemm gemm(gpuSession(), spec);
  ASSERT_TRUE(gemm.hasKernel()) << gemm.reason();
  std::atomic<int> ran{0}, declined{0}, bad{0};
  std::mutex whyMutex;
  std::string lastBad;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      torch::NoGradGuard ng;
      std::optional<c10::cuda::CUDAStreamGuard> own;
      if (t % 2 == 1) own.emplace(c10::cuda::getStreamFromPool());
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 3u);
      auto pick = [&](int64_t lo, int64_t hi) {
        return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
      };
      for (int i = 0; i < 24; ++i) {
        const int64_t m = pick(1, 2500), n = pick(1, 1500), k = 8 * pick(1, 160);
        const int layout = static_cast<int>(pick(0, 3));  // plain, padded rows, misaligned, w^T
        const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kHalf);
        torch::Tensor x, w = torch::randn({n, k}, opts) / std::sqrt(double(k));
        const torch::Tensor b = torch::randn({n}, opts);
        if (layout == 1) {
          x = torch::randn({m, k + 8 * pick(1, 4)}, opts).index({Slice(), Slice(0, k)});
        } else if (layout == 2) {
          x = torch::randn({m * k + 1}, opts).index({Slice(1, None)}).view({m, k});
        } else {
          x = torch::randn({m, k}, opts);
        }
        if (layout == 3) w = w.t().contiguous().t();  // stride(1) != 1: not for TMA
        const std::optional<torch::Tensor> got = gemm.run(x, w, &b);
        const bool takeable = layout == 0 || layout == 1;
        if (!got.has_value()) {
          declined++;
          if (takeable) {
            bad++;
            std::lock_guard<std::mutex> lock(whyMutex);
            lastBad = fmt::format("declined a plain call {}x{}x{} layout {}", m, n, k, layout);
          }
          continue;
        }
        ran++;
        const torch::Tensor want = torch::gelu(
            torch::linear(x.to(torch::kDouble), w.to(torch::kDouble), b.to(torch::kDouble)));
        const double err =
            ((got->to(torch::kDouble) - want).abs() / (want.abs() + 1.0)).max().item<double>();
        if (!takeable || !(err <= 1.0 / 1024)) {
          bad++;
          std::lock_guard<std::mutex> lock(whyMutex);
          lastBad = fmt::format("{}x{}x{} layout {} thread {}: max rel error {}", m, n, k, layout,
                                t, err);
        }
      }
    });
  for (auto& th : threads) th.join();
  c10::cuda::device_synchronize();
  EXPECT_EQ(bad.load(), 0) << lastBad;
  EXPECT_GT(ran.load(), 50) << "calls the kernel ran";
  EXPECT_GT(declined.load(), 0) << "calls it declined";
  std::printf("[gemm stress] %d calls ran on the kernel, %d declined\n", ran.load(),
              declined.load());
}

// The CNN block against eager. Batchnorm is folded into the conv weights (Note [Folding batchnorm
// into convolutions]), which changes cuDNN's operands: in f32 kiln and eager then differ by the
// conv algorithm's own rounding (~5e-4 relative on the H200, TF32 off). So f32 results are
// compared with a float64 run of the module, and kiln must be about as close to it as eager is.
// `vsDouble`: 16-bit results too are held to "about as close to float64 as eager" (deeper stacks
// of convs, where kiln's and eager's roundings drift apart further than one block's tolerance).
void checkCnnBlock(const kiln::jit::OptimizedModule& fast, torch::jit::Module& m,
                   torch::jit::Module& m64, torch::ScalarType dt, int64_t batch,
                   const std::string& what, bool vsDouble = false,
                   torch::MemoryFormat format = torch::MemoryFormat::Contiguous) {
  std::vector<torch::IValue> in{rnd({batch, 64, 15, 15}, dt).contiguous(format)};
  const torch::Tensor got = fast.forward(in).toTensor();
  const torch::Tensor want = m.forward(in).toTensor();
  const std::string label = fmt::format("cnn block {} batch {} {}", name(dt), batch, what);
  // The strides eager gives (Note [Channels-last convolutions]): callers may .view() the result.
  EXPECT_EQ(got.strides(), want.strides()) << label;
  if (dt != torch::kFloat && !vsDouble) {
    expectClose(got, want, tolerance(dt, 576) * 4, label);
    return;
  }
  const torch::Tensor ref = m64.forward({in[0].toTensor().to(torch::kDouble)}).toTensor();
  auto err = [&](const torch::Tensor& t) {
    return ((t.to(torch::kDouble) - ref).abs() / (ref.abs() + 1)).max().item<double>();
  };
  const double ek = err(got), ee = err(want);
  EXPECT_FALSE(got.isnan().any().item<bool>()) << label;
  EXPECT_LE(ek, std::max(2.0 * ee, tolerance(dt, 576) * 4))
      << label << ": max rel error from float64: kiln " << ek << ", eager " << ee;
}

torch::jit::Module loadCnnBlock(torch::ScalarType dt, const std::string& file = "cnn_block.pt") {
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/" + file);
  m.to(torch::kCUDA, dt);
  m.eval();
  return m;
}

// Note [Layout conversion kernels]: kiln's transpose kernel against ATen's copy, bit for bit, in
// both directions, for odd, tile-sized and degenerate shapes and every float dtype.
TEST(GpuLayout, TransposeKernelMatchesAten) {
  REQUIRE_GPU();
  const auto cl = torch::MemoryFormat::ChannelsLast;
  for (auto dt : kDtypes) {
    kiln::jit::LayoutConverter converter(gpuSession(), dt);
    ASSERT_TRUE(converter.hasKernel()) << name(dt);
    for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
             // odd sizes (one element an access), even ones in partial 64 x 64 tiles (pairs of
             // 16-bit elements), tile-sized, and shapes where both layouts coincide
             {3, 5, 7, 9},
             {1, 33, 1, 65},
             {3, 6, 10, 14},
             {2, 130, 5, 6},
             {2, 64, 56, 56},
             {1, 64, 32, 32},
             {4, 1, 3, 3},
             {2, 3, 1, 1}}) {
      const std::string label = fmt::format("{} {}", name(dt), fmt::join(shape, "x"));
      const torch::Tensor x = rnd(shape, dt);
      const torch::Tensor toCl = converter.convert(x, cl);
      EXPECT_TRUE(toCl.is_contiguous(cl)) << label;
      EXPECT_EQ(toCl.strides(), x.contiguous(cl).strides()) << label;
      EXPECT_TRUE(torch::equal(toCl, x)) << label;
      const torch::Tensor back = converter.convert(toCl, torch::MemoryFormat::Contiguous);
      EXPECT_TRUE(back.is_contiguous()) << label;
      EXPECT_TRUE(torch::equal(back, x)) << label;
    }
    // Not a dense tensor in the other layout: ATen converts it, with the same result.
    const torch::Tensor sliced =
        rnd({2, 8, 9, 9}, dt).index({torch::indexing::Slice(), torch::indexing::Slice(0, 4)});
    EXPECT_TRUE(torch::equal(converter.convert(sliced, cl), sliced));
  }
}

// Note [Fold kernel]: kiln's fold kernel gives what the ATen fold gives (the same float
// arithmetic; an FMA may differ in the last bit of float32) for each dtype mix, with and without
// the optional tensors, into NCHW and channels-last, from a weight of either layout. Both writes of
// the kernel (W' and shift') are poisoned first, so an element it missed cannot pass.
TEST(GpuFold, KernelMatchesAten) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  struct Mix {
    torch::ScalarType weight, params, out;
  };
  for (const Mix& mix : {Mix{torch::kHalf, torch::kHalf, torch::kHalf},
                         Mix{torch::kBFloat16, torch::kBFloat16, torch::kBFloat16},
                         Mix{torch::kFloat, torch::kFloat, torch::kFloat},
                         Mix{torch::kFloat, torch::kFloat, torch::kHalf}})
    for (bool optional : {true, false})
      for (auto out : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast})
        for (auto in : {torch::MemoryFormat::Contiguous, torch::MemoryFormat::ChannelsLast}) {
          const std::string label =
              fmt::format("{}/{}->{} optional={} out={} in={}", name(mix.weight), name(mix.params),
                          name(mix.out), optional, out == torch::MemoryFormat::ChannelsLast,
                          in == torch::MemoryFormat::ChannelsLast);
          const int64_t c = 37;
          auto opts = [](torch::ScalarType t) {
            return torch::TensorOptions().device(torch::kCUDA).dtype(t);
          };
          kiln::jit::ConvBnFold f;
          f.convWeight = torch::randn({c, 5, 3, 3}, opts(mix.weight)).contiguous(in);
          f.mean = torch::randn({c}, opts(mix.params));
          f.var = torch::rand({c}, opts(mix.params)) + 0.5;
          if (optional) {
            f.convBias = torch::randn({c}, opts(mix.params));
            f.bnWeight = torch::randn({c}, opts(mix.params));
            f.bnBias = torch::randn({c}, opts(mix.params));
          }
          f.eps = 1e-5;
          f.dtype = mix.out;
          f.weightFormat = out;
          {
            // A kernel not in the cache yet: ATen folds, and the kernel compiles in the background.
            kiln::jit::FoldedParams first({f}, &gpuSession());
            gpuSession().waitForBackground();
          }
          kiln::jit::FoldedParams byKernel({f}, &gpuSession());
          kiln::jit::FoldedParams byAten({f}, nullptr);
          ASSERT_EQ(byKernel.kernelFolds(), 1u) << label;
          ASSERT_EQ(byAten.kernelFolds(), 0u) << label;
          const kiln::jit::ConvBnFold& k = byKernel.folds()[0];
          const kiln::jit::ConvBnFold& a = byAten.folds()[0];
          EXPECT_TRUE(k.weight.is_contiguous(out)) << label;
          EXPECT_EQ(k.weight.strides(), a.weight.strides()) << label;
          EXPECT_EQ(k.shift.sizes(), a.shift.sizes()) << label;
          EXPECT_EQ(k.weight.scalar_type(), mix.out) << label;
          const double tol =
              mix.out == torch::kFloat ? 2e-6 : (mix.out == torch::kHalf ? 1e-3 : 8e-3);
          expectClose(k.weight, a.weight, tol, label + " weight");
          expectClose(k.shift, a.shift, tol, label + " shift");
          // refresh() recomputes into the same tensors: poison them, change a source, refresh.
          k.weight.fill_(std::numeric_limits<double>::quiet_NaN());
          k.shift.fill_(std::numeric_limits<double>::quiet_NaN());
          f.var.mul_(2);
          EXPECT_EQ(byKernel.refresh(), 1) << label;
          EXPECT_EQ(byAten.refresh(), 1) << label;
          expectClose(k.weight, a.weight, tol, label + " weight after refresh");
          expectClose(k.shift, a.shift, tol, label + " shift after refresh");
        }
}

// Note [Channels-last convolutions]: the six convs of the CNN stage run channels-last by default
// and NCHW when forced; so do the CNN block's two, and a single conv stays NCHW. Both layouts match
// eager (against float64), give eager's strides for NCHW and channels-last inputs, and see in-place
// updates of weights folded channels-last.
TEST(GpuModels, ChannelsLastConvs) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  kiln::Options o = gpuSession().options();
  o.convLayout = kiln::ConvLayout::kContiguous;
  kiln::Session nchwSession(o);
  const auto cl = torch::MemoryFormat::ChannelsLast;
  for (auto dt : kDtypes) {
    torch::jit::Module m = loadCnnBlock(dt, "cnn_stage.pt");
    torch::jit::Module m64 = loadCnnBlock(torch::kDouble, "cnn_stage.pt");
    kiln::jit::Options opt;
    opt.session = &gpuSession();
    opt.inputNames = {"x"};
    opt.dynamicDims = {{"x", 0, "batch"}};
    auto fast = kiln::jit::optimize(m, opt);
    opt.session = &nchwSession;
    auto nchw = kiln::jit::optimize(m, opt);
    for (int64_t batch : {1, 3, 32}) {
      checkCnnBlock(fast, m, m64, dt, batch, "channels-last", true);
      checkCnnBlock(nchw, m, m64, dt, batch, "forced NCHW", true);
      checkCnnBlock(fast, m, m64, dt, batch, "channels-last input", true, cl);
    }
    // A sliced NCHW input (dense in neither layout): eager's output is NCHW, and so is kiln's.
    const torch::Tensor sliced =
        rnd({3, 64, 15, 20}, dt).index({Slice(), Slice(), Slice(), Slice(0, 15)});
    const torch::Tensor fromSliced = fast.forward({sliced}).toTensor();
    EXPECT_EQ(fromSliced.strides(), m.forward({sliced}).toTensor().strides()) << name(dt);
    expectClose(fromSliced, m.forward({sliced}).toTensor(),
                0.05 * fromSliced.abs().max().item<double>(),
                fmt::format("sliced input {}", name(dt)));
    EXPECT_NE(fast.explain().find("conv layout: channels-last (6 convs)"), std::string::npos)
        << fast.explain();
    EXPECT_NE(nchw.explain().find("conv layout: NCHW (KILN_CONV_LAYOUT=contiguous)"),
              std::string::npos)
        << nchw.explain();
    for (auto* mod : {&m, &m64})
      for (const auto& p : mod->named_parameters())
        if (p.name == "blocks.1.conv2.weight") p.value.add_(0.01);
    for (int64_t batch : {1, 3}) checkCnnBlock(fast, m, m64, dt, batch, "after an update", true);
    EXPECT_EQ(fast.stats().groupFallbacks, 0u) << fast.explain();

    // Two convs pay for the conversions; one does not.
    torch::jit::Module block = loadCnnBlock(dt);
    opt.session = &gpuSession();
    auto fastBlock = kiln::jit::optimize(block, opt);
    fastBlock.forward({rnd({2, 64, 15, 15}, dt)});
    EXPECT_NE(fastBlock.explain().find("conv layout: channels-last (2 convs)"), std::string::npos)
        << fastBlock.explain();
    torch::jit::Module single("Single");
    single.register_parameter("w", rnd({8, 4, 3, 3}, dt), false);
    single.define(
        "def forward(self, x):\n    return torch.relu(torch.conv2d(x, self.w, None, 1, 1))\n");
    auto fastSingle = kiln::jit::optimize(single, opt);
    const torch::Tensor x = rnd({2, 4, 9, 9}, dt);
    expectClose(fastSingle.forward({x}).toTensor(), single.forward({x}).toTensor(),
                tolerance(dt, 36) * 4, fmt::format("single conv {}", name(dt)));
    EXPECT_NE(fastSingle.explain().find("conv layout: NCHW (1 conv, fewer than the 2"),
              std::string::npos)
        << fastSingle.explain();
  }
}

// Note [Pointwise ops in channels-last programs]: a SiLU and a squeeze-and-excitation product
// between two channels-last convs run as one kiln kernel over [batch, H, W, C], read and written in
// memory order; results match eager at odd and larger batches, with eager's output strides.
TEST(GpuModels, PointwiseBetweenChannelsLastConvs) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  for (auto dt : kDtypes) {
    torch::jit::Module m("SiluSe");
    m.register_parameter("w1", rnd({16, 8, 3, 3}, dt) * 0.2, false);
    m.register_parameter("b1", rnd({16}, dt), false);
    m.register_parameter("w2", rnd({8, 16, 1, 1}, dt) * 0.2, false);
    m.define(R"(
def forward(self, x, e):
    y = torch.conv2d(x, self.w1, self.b1, 1, 1)
    y = y * torch.sigmoid(y) * e
    return torch.conv2d(y, self.w2, None, 1, 0)
)");
    kiln::jit::Options opt;
    opt.session = &gpuSession();
    opt.inputNames = {"x", "e"};
    opt.dynamicDims = {{"x", 0, "batch"}, {"e", 0, "batch"}};
    auto fast = kiln::jit::optimize(m, opt);
    for (int64_t batch : {1, 3, 32}) {
      const torch::Tensor x = rnd({batch, 8, 9, 11}, dt);
      const torch::Tensor e = torch::sigmoid(rnd({batch, 16, 1, 1}, dt));
      const torch::Tensor want = m.forward({x, e}).toTensor();
      for (int call = 0; call < 3; ++call) {  // the third call replays a CUDA graph
        const torch::Tensor got = fast.forward({x, e}).toTensor();
        EXPECT_EQ(got.strides(), want.strides()) << name(dt) << " batch " << batch;
        expectClose(got, want, tolerance(dt, 16 * 9) * 4,
                    fmt::format("{} batch {} call {}", name(dt), batch, call));
      }
    }
    const std::string explain = fast.explain();
    EXPECT_NE(explain.find("conv layout: channels-last (2 convs)"), std::string::npos) << explain;
    EXPECT_NE(explain.find("pointwise domain=[batch, 9, 11, 16]"), std::string::npos) << explain;
    EXPECT_EQ(fast.stats().groupFallbacks, 0u) << explain;
  }
}

// Note [Embeddings in kernels]: token rows gathered by ids inside kiln's kernels. Hidden 64 takes
// the row kernel's vector path (the token rows plus the position rows, normalized) and hidden 50 a
// narrower vector; the second output is a pointwise use of the gathered rows. int64 and int32 ids,
// odd sizes, batch 1, and ids that are a transposed (non-contiguous) view, against eager; every id
// is in range (one out of range fails a device-side assertion, as eager's kernel does).
TEST(GpuModels, TokenEmbeddingsMatchEager) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  for (auto dt : kDtypes) {
    for (int64_t hidden : {64, 50}) {
      torch::jit::Module m("Embed");
      m.register_parameter("tokens", rnd({1000, hidden}, dt), false);
      m.register_parameter("positions", rnd({128, hidden}, dt), false);
      m.register_parameter("g", rnd({hidden}, dt), false);
      m.register_parameter("b", rnd({hidden}, dt), false);
      m.define(fmt::format(R"(
def forward(self, ids):
    n = ids.size(1)
    h = torch.embedding(self.tokens, ids) + self.positions[0:n]
    return torch.layer_norm(h, [{}], self.g, self.b, 1e-12), h * 2.0
)",
                           hidden));
      kiln::jit::Options opt;
      opt.session = &gpuSession();
      opt.inputNames = {"ids"};
      opt.dynamicDims = {{"ids", 0, "batch"}, {"ids", 1, "seq"}};
      auto fast = kiln::jit::optimize(m, opt);
      for (auto [batch, seq] :
           std::vector<std::pair<int64_t, int64_t>>{{3, 77}, {1, 5}, {8, 128}}) {
        for (auto idt : {torch::kLong, torch::kInt}) {
          const auto on = torch::TensorOptions().device(torch::kCUDA).dtype(idt);
          for (bool transposed : {false, true}) {
            const torch::Tensor ids = transposed ? torch::randint(0, 1000, {seq, batch}, on).t()
                                                 : torch::randint(0, 1000, {batch, seq}, on);
            const auto want = m.forward({ids}).toTuple()->elements();
            const auto got = fast.forward({ids}).toTuple()->elements();
            const std::string what =
                fmt::format("{} hidden {} batch {} seq {} {} ids{}", name(dt), hidden, batch, seq,
                            c10::toString(idt), transposed ? " (transposed)" : "");
            expectClose(got[0].toTensor(), want[0].toTensor(), tolerance(dt, hidden) * 4, what);
            expectClose(got[1].toTensor(), want[1].toTensor(), tolerance(dt, 2), what);
          }
        }
      }
      const std::string explain = fast.explain();
      EXPECT_NE(explain.find("= embedding("), std::string::npos) << explain;
      EXPECT_EQ(explain.find(": eager "), std::string::npos) << explain;
      EXPECT_EQ(fast.stats().groupFallbacks, 0u) << explain;
    }
  }
}

TEST(GpuModels, CnnBlock) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  for (auto dt : kDtypes) {
    torch::jit::Module m = loadCnnBlock(dt), m64 = loadCnnBlock(torch::kDouble);
    kiln::jit::Options opt;
    opt.session = &gpuSession();
    auto fast = kiln::jit::optimize(m, opt);
    for (int64_t batch : {1, 3}) checkCnnBlock(fast, m, m64, dt, batch, "");
    // Both convs take their shift, residual and relu in cuDNN's epilogue (library_epilogues.h):
    // no kiln kernel is left in this block.
    const std::string explain = fast.explain();
    EXPECT_NE(explain.find("{activation = \"relu\""), std::string::npos) << explain;
  }
}

// Masked attention runs the memory-efficient kernel directly (Note [Attention without per-shape
// plans] in jit/eval/attention.cpp): additive and boolean masks, shared across heads or not,
// odd sequence lengths, batch 1, against eager.
TEST(GpuAttention, MaskedSdpaMatchesEager) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  // TorchScript text cannot name F.scaled_dot_product_attention from C++: trace a C++ forward.
  auto holder = std::make_shared<torch::nn::Module>();
  auto sdpa = [](const std::vector<torch::IValue>& in) -> torch::IValue {
    return at::scaled_dot_product_attention(in[0].toTensor(), in[1].toTensor(), in[2].toTensor(),
                                            in[3].toTensor());
  };
  kiln::jit::Options opt;
  opt.session = &gpuSession();
  auto fast = kiln::jit::optimize(holder, sdpa, opt);
  for (auto dt : kDtypes)
    for (int64_t seq : {1, 37, 64, 129})
      for (int64_t batch : {1, 3})
        for (int kind = 0; kind < 3; ++kind) {
          auto q = rnd({batch, 4, seq, 64}, dt), k = rnd({batch, 4, seq + 3, 64}, dt),
               v = rnd({batch, 4, seq + 3, 64}, dt);
          torch::Tensor mask;
          if (kind == 0) mask = rnd({batch, 1, seq, seq + 3}, dt);  // shared across heads
          if (kind == 1) mask = rnd({batch, 4, seq, seq + 3}, dt);  // per head
          if (kind == 2) mask = rnd({1, 1, seq, seq + 3}, torch::kFloat).gt(-1.0);  // bool
          std::vector<torch::IValue> in{q, k, v, mask};
          expectClose(
              fast.forward(in).toTensor(), sdpa(in).toTensor(), tolerance(dt, seq) * 4,
              fmt::format("sdpa {} seq {} batch {} mask kind {}", name(dt), seq, batch, kind));
        }
}

// Issue 5 on the GPU: 8 threads call one module with mixed row lengths while new buckets are
// served by generic kernels and their own kernels compile and swap in; every result is checked
// against eager, and every group must have run as a kernel (no silent fallback).
TEST(GpuBuckets, SwapUnderLoadFromEightThreads) {
  REQUIRE_GPU();
  kiln::Options o;
  o.poisonOutputs = true;
  o.diskCache = false;
  kiln::Session session(o);
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x, r):
    return torch.softmax(x * 0.125 + r, -1) * x
)");
  kiln::jit::Options opt;
  opt.session = &session;
  opt.inputNames = {"x", "r"};
  opt.dynamicDims = {{"x", 1, "n"}, {"r", 1, "n"}};
  auto fast = kiln::jit::optimize(m, opt);
  {
    torch::NoGradGuard ng;
    std::vector<torch::IValue> in{rnd({16, 3}, torch::kHalf), rnd({16, 3}, torch::kHalf)};
    fast.forward(in);
  }
  session.waitForBackground();  // the generic kernels exist from here on
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      torch::NoGradGuard ng;
      std::mt19937 rng(static_cast<unsigned>(t) + 11);
      std::uniform_int_distribution<int64_t> cols(2, 3000);
      for (int i = 0; i < 30; ++i) {
        const int64_t n = cols(rng);
        std::vector<torch::IValue> in{rnd({16, n}, torch::kHalf), rnd({16, n}, torch::kHalf)};
        torch::Tensor got = fast.forward(in).toTensor();
        torch::Tensor want = m.forward(in).toTensor();
        auto g = got.to(torch::kFloat), w = want.to(torch::kFloat);
        if (g.isnan().any().item<bool>() ||
            ((g - w).abs() / (w.abs() + 1)).max().item<double>() > tolerance(torch::kHalf, n) * 4)
          bad++;
      }
    });
  for (auto& th : threads) th.join();
  session.waitForBackground();
  auto st = fast.stats();
  EXPECT_EQ(bad.load(), 0) << st.toString();
  EXPECT_EQ(st.calls, 241u);
  EXPECT_GT(st.plansServedGeneric, 0u) << st.toString();
  EXPECT_EQ(st.swaps, st.plansServedGeneric) << st.toString();
  EXPECT_EQ(st.groupFallbacks, 0u) << fast.explain();
}

// Issue 9's attention rewrite (src/passes/fuse_attention.h) on the GPU: the explicit form
// (BERT-style, scale by division, additive mask) against eager, odd lengths, batch 1.
TEST(GpuAttention, ExplicitAttentionRewriteMatchesEager) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, q, k, v, mask):
    scores = torch.matmul(q, k.transpose(-1, -2)) / 8.0 + mask
    return torch.matmul(torch.softmax(scores, -1), v)
)");
  kiln::jit::Options opt;
  opt.session = &gpuSession();
  auto fast = kiln::jit::optimize(m, opt);
  for (auto dt : kDtypes)
    for (int64_t seq : {1, 37, 128})
      for (int64_t batch : {1, 2}) {
        std::vector<torch::IValue> in{rnd({batch, 12, seq, 64}, dt), rnd({batch, 12, seq, 64}, dt),
                                      rnd({batch, 12, seq, 64}, dt), rnd({batch, 1, 1, seq}, dt)};
        expectClose(fast.forward(in).toTensor(), m.forward(in).toTensor(), tolerance(dt, seq) * 4,
                    fmt::format("explicit attention {} seq {} batch {}", name(dt), seq, batch));
      }
  EXPECT_NE(fast.explain().find("library sdpa"), std::string::npos) << fast.explain();
}

// Note [Folding batchnorm into convolutions] (jit/runtime/fold_conv_bn.h): the CNN block's plan is
// conv2d, add+relu, conv2d, add+add+relu with real kernels, and weights updated in place after
// optimize() are seen (Note [Folded params are snapshots]).
TEST(GpuModels, CnnBlockFoldsBatchNormIntoConvs) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  for (auto dt : kDtypes) {
    torch::jit::Module m = loadCnnBlock(dt), m64 = loadCnnBlock(torch::kDouble);
    auto update = [](torch::jit::Module& mod) {
      for (const auto& b : mod.named_buffers())
        if (b.name == "bn1.running_var") b.value.mul_(2);
      for (const auto& p : mod.named_parameters()) {
        if (p.name == "conv2.weight") p.value.add_(0.01);
        if (p.name == "bn2.bias") p.value.fill_(0.1);
      }
    };
    kiln::jit::Options opt;
    opt.session = &gpuSession();
    opt.inputNames = {"x"};
    opt.dynamicDims = {{"x", 0, "batch"}};
    auto fast = kiln::jit::optimize(m, opt);
    // batch 1 is a family (and a fold) of its own
    for (int64_t batch : {1, 3, 32}) checkCnnBlock(fast, m, m64, dt, batch, "as loaded");
    const std::string explain = fast.explain();
    EXPECT_EQ(explain.find("rsqrt"), std::string::npos) << explain;
    EXPECT_NE(explain.find("conv2d(%x, %conv1.weight_bn1.folded, %"), std::string::npos) << explain;
    // Note [Folded params are snapshots]: recomputed on the next call.
    update(m);
    update(m64);
    for (int64_t batch : {1, 3, 32})
      checkCnnBlock(fast, m, m64, dt, batch, "after in-place updates");
    EXPECT_EQ(fast.stats().groupFallbacks, 0u) << fast.explain();
  }
}

// Issue 7 on the GPU: KILN_TUNE=eager runs the device lab (jit/tuner/tuner.cpp) on the plan
// of a bucket that reached the threshold: variants compile, run on synthetic data on a side
// stream and are compared with the incumbent; whatever is swapped in must still match eager. A
// replaced kernel's record is reused by a new session over the same disk cache.
TEST(GpuTuner, EagerTuningKeepsResultsAndPersistsWinners) {
  REQUIRE_GPU();
  torch::NoGradGuard ng;
  kiln::testing::ScratchDir dir("kiln-gpu-tune");
  kiln::Options o;
  o.poisonOutputs = true;
  o.cacheDir = dir.path();
  o.tune = kiln::TuneMode::kEager;
  o.tuneThreshold = 3;
  o.tuneMaxVariants = 8;
  const Case softmax{R"(
def forward(self, x, m):
    return torch.softmax(x * 0.125 + m, -1)
)",
                     {}};
  const Case pointwise{R"(
def forward(self, x):
    return torch.gelu(x * self.w + self.b) * torch.sigmoid(x) + x
)",
                       {{"w", torch::randn({4096})}, {"b", torch::randn({4096})}}};
  struct Run {
    const Case* c;
    std::vector<int64_t> shape;
    int inputs;
  };
  uint64_t replaced = 0;
  for (const Run& r : {Run{&softmax, {4096, 1024}, 2}, Run{&pointwise, {4096, 4096}, 1}})
    for (auto dt : {torch::kHalf, torch::kFloat}) {
      const std::string what = fmt::format("{} {}", r.c->source.substr(1, 40), name(dt));
      torch::jit::Module m = makeModule(*r.c, dt);
      std::vector<torch::IValue> in;
      for (int i = 0; i < r.inputs; ++i) in.push_back(rnd(r.shape, dt));
      const torch::Tensor want = m.forward(in).toTensor();
      std::string tunedExplain;
      {
        kiln::Session session(o);
        kiln::jit::Options opt;
        opt.session = &session;
        auto fast = kiln::jit::optimize(m, opt);
        for (int call = 0; call < 5; ++call)  // the third call tunes
          expectClose(fast.forward(in).toTensor(), want, tolerance(dt, r.shape[1]),
                      what + " call " + std::to_string(call));
        auto st = fast.stats();
        EXPECT_EQ(st.tuningJobs, 1u) << what << " " << st.toString();
        EXPECT_GT(st.variantsTried, 0u) << what << "\n" << fast.explain();
        EXPECT_EQ(st.groupFallbacks, 0u) << what << "\n" << fast.explain();
        std::printf("[tuner] %s: %s\n%s\n", what.c_str(), st.toString().c_str(),
                    fast.explain().c_str());
        replaced += st.kernelsTuned;
        if (st.kernelsTuned == 0) continue;
      }
      // A new process (session) over the same cache starts from the winner's record.
      kiln::Session session(o);
      kiln::jit::Options opt;
      opt.session = &session;
      auto fast = kiln::jit::optimize(m, opt);
      expectClose(fast.forward(in).toTensor(), want, tolerance(dt, r.shape[1]), what + " reloaded");
      EXPECT_NE(fast.explain().find(", tuned"), std::string::npos) << what << "\n"
                                                                   << fast.explain();
    }
  std::printf("[tuner] kernels replaced in all: %llu\n", static_cast<unsigned long long>(replaced));
}

}  // namespace

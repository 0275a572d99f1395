#pragma once
// Note [Kiln GEMM]
// cuBLASLt's epilogues cover bias, relu and tanh gelu (Note [Library epilogues] in
// jit/eval/aten_eval_ops.cpp) but not erf gelu, nn.GELU's default. There, a GEMM's output used to
// be written by cuBLAS and read back by a kiln kernel for the activation: on a BERT-size MLP
// (32768 x 1024 -> 4096, fp16) that round trip is 0.5 GB and ~0.14 ms of a ~1 ms block.
// On sm_90 (Options::kilnGemm, KILN_GEMM), kiln runs such linears with its own GEMM
// (runtime/kiln_gemm_sm90.cuh) and applies the bias and activation to the fp32 accumulators before
// the one rounding to the output dtype (like cuBLASLt's own epilogues, so within one rounding of
// eager, which rounds the GEMM's result and then the activation's). The kernel:
// - TMA loads of 128 x 64 tiles of x and w into a 4-stage ring of 128B-swizzled shared memory,
//   issued by a producer warpgroup;
// - two consumer warpgroups in ping-pong: each takes every other 128 x 128 output tile of the
//   CTA (two wgmma.m64n128k16 per k slice), so one consumer's epilogue overlaps the other's
//   mainloop. With K = 1024 a tile has only 16 k-steps; the first version, a 128 x 256 tile
//   shared by both consumers, left the tensor cores idle during every epilogue (~340 TFLOP/s);
// - the epilogue stages the tile in shared memory and stores it with TMA (whole lines, async,
//   clipped at the edges) where out's rows are a multiple of 16 bytes, else with bounds-checked
//   stores; the gelu is branch-free (Note [Branch-free erf gelu]);
// - persistent: one CTA an SM walking the tiles in row-major order.
// On the H200 (bench/RESULTS.md, 2026-12-03), fc1 + gelu of that MLP: 0.506 ms alone (543
// TFLOP/s; without the activation 0.41 ms, 669 TFLOP/s, as fast as cuBLAS), 0.57-0.58 ms inside
// the block against 0.61-0.62 ms for cuBLASLt + kiln's gelu kernel. The gelu epilogue still slows
// the other consumer's mainloop by ~30% (ALU work beside wgmma), which is where more is to gain.
//
// The kernel: `extern "C" __global__ void kiln_gemm_<dtype>_<act>_<hash>(const __grid_constant__
// KilnGemmArgs args)`, 384 threads, kGemmSharedBytes of dynamic shared memory, any grid.
// Operands: x [M, K] and w [N, K] row-major (TMA maps built by the runtime: K * element size a
// multiple of 16 bytes, 16-byte aligned bases), bias [N] or none, out [M, ldo].
// jit/runtime/gemm_kernels.h builds the maps and launches it.
#include <array>
#include <string_view>

#include "codegen/kernel_source.h"

namespace kiln::codegen {

enum class GemmActivation : uint8_t { kNone, kGeluErf };
std::string_view toString(GemmActivation act);

struct GemmSpec {
  ir::DType dtype = ir::DType::kFloat16;  // of x, w, bias and out: kFloat16 or kBFloat16
  GemmActivation activation = GemmActivation::kNone;
  bool hasBias = true;
};

// Throws Unsupported for other dtypes.
KernelSource emitGemm(const GemmSpec& spec);

// Note [Branch-free erf gelu]
// gelu(v) = v/2 (1 + erf(v/sqrt2)). CUDA's erff branches on |x| < 1; in an epilogue that runs it
// on 128 unrolled accumulators a thread, each divergent branch serializes what would otherwise
// interleave, and it cost the GEMM a fifth of its speed. Instead, with t = |v|/sqrt2,
// 1 - erf(t) = exp(-t q(t)), where q(t) = -log(erfc(t))/t is smooth on [0, 4] (q(0) = 2/sqrt(pi));
// kGeluErfQ holds q's degree-9 fit there (least squares on Chebyshev nodes, rounded to float), in
// rising powers. Then 1 + erf(v/sqrt2) is 2 - e for v >= 0 and e itself for v < 0, so the negative
// tail has no cancellation. Past |v| = 4 sqrt2 the clamp leaves e = 1.5e-8, which is what float
// 1 + erff(x) gives there too. In float against the exact gelu over [-8, 8]: absolute error below
// 4e-7, relative below 4e-6 for |v| < 5 (eager's float 0.5 v (1 + erff(v/sqrt2)) loses up to 5e-2
// relative in that tail, by cancellation); tests/codegen checks those bounds on geluErfApprox.
inline constexpr std::array<float, 10> kGeluErfQ = {
    1.1283793449401855f,     6.366093158721924e-01f,  1.0285789519548416e-01f,
    -1.939122937619686e-02f, 1.7951230984181166e-04f, 1.4151681680232286e-03f,
    -5.404290859587491e-04f, 1.0678773105610162e-04f, -1.1481623005238362e-05f,
    5.294814400258474e-07f};
// The kernel's gelu evaluated on the host (std::exp in place of __expf).
float geluErfApprox(float v);

// The arch the kernel needs (wgmma, setmaxnreg): compiled for it whatever sm_90 arch is targeted.
inline constexpr std::string_view kGemmArch = "sm_90a";
inline constexpr int kGemmThreads = 384;
inline constexpr int kGemmTileM = 128;
inline constexpr int kGemmTileN = 128;
inline constexpr int kGemmTileK = 64;
inline constexpr int kGemmStages = 4;
// Stages of x and w tiles, the two consumers' output tiles (staged for TMA stores) and bias
// slices, 1024 bytes of alignment slack, the full/empty barriers of the stages and the consumers'
// two turn barriers.
inline constexpr int kGemmSharedBytes = kGemmStages * (kGemmTileM + kGemmTileN) * kGemmTileK * 2 +
                                        2 * (kGemmTileM * kGemmTileN + kGemmTileN) * 2 + 1024 +
                                        (2 * kGemmStages + 2) * 8;
static_assert(kGemmSharedBytes <= 232448, "sm_90 allows at most 227 KiB of shared memory a block");

}  // namespace kiln::codegen

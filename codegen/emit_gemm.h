#pragma once
// Note [Kiln GEMM]
// cuBLASLt's epilogues cover bias, relu and tanh gelu (Note [Library epilogues] in
// jit/eval/aten_eval_ops.cpp) but not erf gelu, nn.GELU's default. There, a GEMM's output used to
// be written by cuBLAS and read back by a kiln kernel for the activation: on a BERT-size MLP
// (32768 x 1024 -> 4096, fp16) that round trip is 0.5 GB and ~0.13 ms of a ~1 ms block.
// On sm_90 with KILN_GEMM=1 (Options::kilnGemm; off by default: the kernel reaches ~340 TFLOP/s
// against cuBLAS's ~590 on that MLP, and so loses more than the round trip saves, see
// bench/RESULTS.md), kiln runs such linears with its own GEMM (runtime/kiln_gemm_sm90.cuh): TMA
// loads into 128B-swizzled shared memory, wgmma with fp32 accumulators, warp-specialized and
// persistent, and the bias and activation applied to the accumulators before the one rounding
// to the output dtype (like cuBLASLt's own epilogues, so within one rounding of eager, which
// rounds the GEMM's result and then the activation's).
//
// The kernel: `extern "C" __global__ void kiln_gemm_<dtype>_<act>_<hash>(const __grid_constant__
// KilnGemmArgs args)`, 384 threads (a producer and two consumer warpgroups), kGemmSharedBytes of
// dynamic shared memory, any grid (a grid-stride loop over 128 x 256 output tiles). Operands:
// x [M, K] and w [N, K] row-major (TMA maps built by the runtime: K * element size a multiple of
// 16 bytes, 16-byte aligned bases), bias [N] or none, out [M, ldo]. jit/runtime/gemm_kernels.h
// builds the maps and launches it.
#include <string_view>

#include "codegen/emit_cuda.h"

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

// The arch the kernel needs (wgmma, setmaxnreg): compiled for it whatever sm_90 arch is targeted.
inline constexpr std::string_view kGemmArch = "sm_90a";
inline constexpr int kGemmThreads = 384;
inline constexpr int kGemmTileM = 128;
inline constexpr int kGemmTileN = 256;
inline constexpr int kGemmTileK = 64;
inline constexpr int kGemmStages = 4;
// Stages of x and w tiles, 1024 bytes of alignment slack and the full/empty barriers.
inline constexpr int kGemmSharedBytes =
    kGemmStages * (kGemmTileM + kGemmTileN) * kGemmTileK * 2 + 1024 + 2 * kGemmStages * 8;

}  // namespace kiln::codegen

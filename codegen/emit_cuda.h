#pragma once
// CUDA C++ for one fusion group: emitCuda(graph, group, params, bucket) -> KernelSource.
//
// Note [Generated kernels]
// One kernel per group, `extern "C" __global__ void kiln_<pw|row>_<hash>(const KilnArgs args)`
// (Note [Kernel ABI] in kernel_abi.h). Each input element is loaded once (row kernels: once per
// pass unless the row is cached in registers), all math is done in float for f16/bf16/f32 (int and
// bool values keep their own types), and each output is stored once, rounded to its dtype.
// Explicit casts round to their dtype. kConstant values are inlined as literals in the operation's
// compute type. The text is a pure function of the inputs: values are named by their position in
// the group (not by graph ids), the kernel's name is a hash of its text, and the device helpers
// (codegen/runtime/*.cuh, embedded at build time) are prepended, so NVRTC gets one self-contained
// string that includes only cuda_fp16.h / cuda_bf16.h (and only when the group uses them).
#include <string>

#include "codegen/kernel_abi.h"
#include "codegen/kernel_source.h"
#include "codegen/schedule.h"
#include "src/ir/graph.h"
#include "src/partition/partition.h"

namespace kiln::codegen {

// Throws Unsupported for groups or ops it cannot generate (the runtime runs them eagerly), with
// the reason; InternalError for inconsistent groups.
KernelSource emitCuda(const ir::Graph& graph, const partition::FusionGroup& group,
                      const ScheduleParams& params, const BucketInfo& bucket);

// Note [Layout conversion kernels]
// Converting [N, C, H, W] between NCHW and channels-last (Note [Channels-last convolutions] in
// jit/runtime/conv_layout.h) is a batched 2-d transpose, and ATen's strided copy does it at a
// fifth of copy bandwidth (0.034 ms for 12.8 MB on an H200). kiln_batched_transpose
// (runtime/kiln_transpose.cuh) moves 32 x 32 tiles through shared memory instead. One kernel per
// dtype serves both directions: `kiln_transpose_<dtype>_<hash>`, KilnArgs ptr[0] = in [B, R, K],
// ptr[1] = out [B, K, R], sizes = {B, R, K}; 256-thread blocks, any grid (a grid-stride loop over
// tiles). 16-bit elements move in pairs when R and K are even. f16, bf16 and f32 only
// (Unsupported otherwise).
KernelSource emitTranspose(ir::DType dtype);
inline constexpr int kTransposeBlock = 256;
inline constexpr int kTransposeTile = 32;

// Note [Fold kernel]
// Folding batchnorm into a conv (Note [Folding batchnorm into convolutions] in
// jit/runtime/fold_conv_bn.h) through ATen took about a dozen ops per conv, and on a fresh process
// most of its time was the first use of each of those ATen kernels: 60 ms of ResNet-50's first
// call on an H200 (2026-12-06), where the convs themselves use none of them. kiln_fold_conv_bn
// (runtime/kiln_fold.cuh) computes W' (in any layout, by strides) and shift' of one conv in one
// launch, from the conv weight of dtype `weight`, per-channel params of dtype `params` (conv
// bias, mean, var, bn weight, bn bias: one dtype), into `out`. eps is part of the text (a float
// literal, as ATen's float arithmetic rounds it). `kiln_fold_conv_bn_<hash>`; 256-thread blocks,
// any grid. f16, bf16 and f32 only (Unsupported otherwise). The runtime uses the kernel when its
// cubin is in the kernel cache; otherwise that build folds through ATen and the kernel compiles on
// the background arena for the next build or process (a first call never waits for NVRTC), or at
// once in a session without background compiles (kiln-warmup's on a GPU); a session with an arch
// but no driver compiles them ahead for a GPU process (Note [Fold kernels compiled ahead] in
// jit/runtime/fold_conv_bn.cpp). On by default (KILN_FOLD_KERNEL=off folds through ATen). On an
// H100 (2026-12-07) GpuFold.KernelMatchesAten passed, clean under memcheck, and ResNet-50's warm
// first call had passes of 11-14 ms against 82-108 ms through ATen; the first run grew by part
// of that, as the cuDNN load the ATen fold had paid moved into the first conv (first call,
// median of four: 332 ms against 370 ms).
KernelSource emitConvBnFold(ir::DType weight, ir::DType params, ir::DType out, float eps);
inline constexpr int kFoldBlock = 256;

}  // namespace kiln::codegen

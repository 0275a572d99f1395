#pragma once
// Note [Channels-last convolutions]
// cuDNN's tensor-core convolutions work in NHWC. Given NCHW tensors, it transposes around the
// kernel: on an H200 (bench/probe_library.py, bench/RESULTS.md 2026-12-02, fourth session) the
// CNN block's two 3x3 convs (64 ch, 56x56, batch 32, relu/residual epilogues in cuDNN) take
// 0.133 ms in fp16 and 0.182 ms in fp32 on NCHW tensors, and 0.079 / 0.144 ms on channels-last
// ones. Converting the block's input to channels-last and its output back costs 0.056 / 0.054 ms
// through ATen (a strided copy), so kiln converts with its own tiled transpose kernel (Note [Layout
// conversion kernels] in codegen/emit_cuda.h; LayoutConverter in layout_kernels.h), and a program
// gains when it has enough convolutions to pay for its boundary. Measured on the H200 with it
// (bench/RESULTS.md, 2026-12-02 fourth session, call 3): the 2-conv block runs 0.101 ms fp16 /
// 0.140 ms fp32 at batch 32 channels-last against 0.131 / 0.180 NCHW, and 0.047 / 0.048 against
// 0.066 / 0.054 at batch 1 (the fused cuDNN call costs less host time channels-last); the
// 6-conv stage 0.207 / 0.319 against 0.391 / 0.539. One conv alone would not pay for the
// conversions (~0.025 ms each way for 12.8 MB in fp16), so the threshold is two convs.
//
// kiln decides once per program (Program::build), from the graph and the conv weights' device:
// channels-last on CUDA, with cuDNN enabled, when the program has at least two conv2d ops;
// KILN_CONV_LAYOUT / Options::convLayout can force either layout (channels_last still only on
// CUDA). Under channels-last:
//   - graph inputs that a conv reads directly (as its input or its residual) are converted once
//     at the start of the call by the transpose kernel, so a residual costs no second conversion;
//   - folded weights (Note [Folding batchnorm into convolutions]) are stored channels-last;
//     other conv weights are converted by ATen on each call (they are bound by reference);
//   - convs produce channels-last outputs, which the next conv reads as they are;
//   - kiln kernels read channels-last values through their strides (correct, but not vectorized)
//     and write contiguous outputs; eager ops take any layout;
//   - a 4-d output that came out channels-last is made contiguous again unless the converted
//     inputs already were channels-last (transpose kernel again), so callers get the strides
//     eager would have given them (a .view() on the result must keep working).
// Values never change: the layout is a stride choice, and the GPU tests compare both layouts
// against eager.
#include <string>
#include <vector>

#include "jit/capture/capture.h"
#include "src/ir/graph.h"
#include "src/support/options.h"

namespace kiln::jit {

struct ConvLayoutChoice {
  bool channelsLast = false;
  std::string reason;  // for explain(): "channels-last (6 convs, f16)", "NCHW: on the CPU"
};

// The choice for `captured` before any rewrite (folding keeps the number of convs).
ConvLayoutChoice chooseConvLayout(const CapturedGraph& captured, ConvLayout policy);

// Value ids of the graph inputs a conv2d reads directly (input 0, or the residual operand 3).
std::vector<int> convEntryInputs(const ir::Graph& graph);

}  // namespace kiln::jit

#pragma once
// kiln's own GEMM for linears whose epilogue no library has (Note [Kiln GEMM] in
// codegen/emit_gemm.h): compiled once per program and spec through the kernel cache, launched
// with TMA descriptors built per call.
//
// Note [Kiln GEMM while cuBLAS loads]
// A process's first cuBLAS GEMM waits for the library's one-time load: about 90 ms on an H100,
// and the largest part of a warm first call of BERT-base at batch 1 (bench/RESULTS.md,
// 2026-12-07: linear 86-114 ms of 180-222 ms). The prewarm (Note [Library prewarm] in
// library_prewarm.h) starts that load on a background thread right after capture, but a warm
// first call reaches its first linear sooner than the load ends, and then waits for it.
// kiln's GEMM needs nothing loaded but its own cubin, which a warm process reads from the kernel
// cache. So every 16-bit linear that the GEMM can take (x [..., K] and w [N, K] row-major, no
// activation, or erf gelu, with or without a bias: the specs it is compiled for) also gets a
// kernel for its spec (one per dtype and bias, shared by the program's steps), and while the
// prewarm's cuBLAS load is queued or running on the call's device (gemmLibraryLoading), the plan
// runs those linears on it instead of waiting; afterwards they go back to cuBLAS (or to what the
// tuner chose: Note [Library or kiln GEMM on the plan]). Linears with a cuBLASLt epilogue (relu,
// tanh gelu) and other GEMMs (addmm, matmul, bmm) are left to cuBLAS. Results may differ from
// cuBLAS's by the rounding of a different summation order, as the tuner's swaps do; both round
// the fp32 sum (+ bias) once. No CUDA graph is captured while a step runs this way (a replay would
// keep the stand-in GEMM for good). Options::firstCallGemm (KILN_FIRST_CALL_GEMM=auto|off) turns
// it off; it needs kilnGemmTarget(). The stand-in's kernel is only read from the kernel cache: a
// process that does not find it there compiles it in the background for the next one (so the
// cold first call does not wait for NVRTC for a kernel it has no use for) and kiln-warmup fills
// it in.
#include <memory>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "codegen/emit_gemm.h"
#include "jit/runtime/kernel_launcher.h"

namespace kiln {
class Session;
}

namespace kiln::jit {

// Whether linears may run on kiln's GEMM for this session: an sm_90 target (the kernel uses
// wgmma) and Options::kilnGemm (on unless KILN_GEMM=0). Without a driver the kernel is still
// compiled into the cache (kiln-warmup with --arch sm_90), and the linears run through ATen.
bool kilnGemmTarget(const Session& session);

class KilnGemm {
 public:
  // Compiles (through the session's kernel cache) the kernel of `spec` when kilnGemmTarget holds;
  // loads it when there is a driver. Never throws for a failed compile: the reason is logged once
  // and kept, and every call then goes through ATen.
  // `standIn` (Note [Kiln GEMM while cuBLAS loads]): only a kernel already in the kernel cache is
  // loaded; one that is not is compiled on the session's background arena for later processes
  // (a cold first call gains nothing from it, and would wait for NVRTC), with no kernel here.
  KilnGemm(const Session& session, const codegen::GemmSpec& spec, bool standIn = false);

  // act(x w^T + b) for x [..., K], w [N, K], b [N] (when the spec has a bias), or nullopt when
  // this call cannot run on the kernel (no kernel, CPU or mixed devices, another dtype, sizes or
  // strides TMA cannot describe): the caller runs it through ATen. With Options::poisonOutputs
  // the output is filled with NaN before the launch, as for kiln's other kernels.
  std::optional<at::Tensor> run(const at::Tensor& x, const at::Tensor& w,
                                const at::Tensor* bias) const;

  bool hasKernel() const { return kernel_ != nullptr; }
  const std::string& name() const { return name_; }
  // Why there is no kernel (empty when there is one).
  const std::string& reason() const { return reason_; }
  const codegen::GemmSpec& spec() const { return spec_; }

 private:
  codegen::GemmSpec spec_;
  std::string name_;
  std::string reason_;
  bool poisonOutputs_ = false;
  const cuda::DriverApi* api_ = nullptr;
  std::shared_ptr<LoadedKernel> kernel_;
};

}  // namespace kiln::jit

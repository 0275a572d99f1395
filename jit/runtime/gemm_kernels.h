#pragma once
// kiln's own GEMM for linears whose epilogue no library has (Note [Kiln GEMM] in
// codegen/emit_gemm.h): compiled once per program and spec through the kernel cache, launched
// with TMA descriptors built per call.
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
  KilnGemm(const Session& session, const codegen::GemmSpec& spec);

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

#pragma once
// Layout conversions of 4-d tensors between NCHW and channels-last for programs whose convs run
// channels-last (Note [Channels-last convolutions] in conv_layout.h), with kiln's tiled transpose
// kernel (Note [Layout conversion kernels] in codegen/emit_cuda.h), or through ATen where it has
// none (no arch or driver, another dtype, a compile failure: logged once).
#include <memory>

#include <ATen/ATen.h>

#include "jit/runtime/kernel_launcher.h"

namespace kiln {
class Session;
}

namespace kiln::jit {

class LayoutConverter {
 public:
  // Compiles (through the session's kernel cache) the transpose kernel for `dtype` and the
  // session's target arch; without one, every conversion goes through ATen.
  LayoutConverter(const Session& session, at::ScalarType dtype);

  // `t` in `format` (ChannelsLast or Contiguous): `t` itself when it already is; a new tensor,
  // written by the kernel when `t` is a dense 4-d CUDA tensor of the kernel's dtype in the other
  // layout, else by ATen.
  at::Tensor convert(const at::Tensor& t, at::MemoryFormat format) const;
  bool hasKernel() const { return kernel_ != nullptr; }

 private:
  at::ScalarType dtype_;
  std::shared_ptr<LoadedKernel> kernel_;
};

}  // namespace kiln::jit

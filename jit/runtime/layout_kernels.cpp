#include "jit/runtime/layout_kernels.h"

#include <algorithm>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>

#include "codegen/emit_cuda.h"
#include "jit/eval/aten_eval.h"
#include "jit/nvrtc.h"
#include "jit/runtime/kernel_build.h"
#include "jit/runtime/session.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

LayoutConverter::LayoutConverter(const Session& session, at::ScalarType dtype) : dtype_(dtype) {
  const std::optional<std::string> arch = session.targetArch();
  const cuda::DriverApi* api = session.driver();
  if (!arch || api == nullptr) return;
  ir::DType irType;
  switch (dtype) {
    case at::kHalf:
      irType = ir::DType::kFloat16;
      break;
    case at::kBFloat16:
      irType = ir::DType::kBFloat16;
      break;
    case at::kFloat:
      irType = ir::DType::kFloat32;
      break;
    default:
      return;
  }
  codegen::KernelSource src = codegen::emitTranspose(irType);
  try {
    std::string binary = cubinThroughCache(session, kernelKey(src.source, *arch), src.source,
                                           src.name, *arch, "layout", /*background=*/false);
    kernel_ = std::make_shared<LoadedKernel>(*api, src.name, std::move(binary));
  } catch (const CompileError& e) {
    logOnce(LogLevel::kWarn, "compile." + src.name,
            fmt::format("kiln: layout kernel {} failed to compile; converting through ATen: {}\n{}",
                        src.name, e.what(), e.log()));
  }
}

at::Tensor LayoutConverter::convert(const at::Tensor& t, at::MemoryFormat format) const {
  if (t.is_contiguous(format)) return t;
  const bool toChannelsLast = format == at::MemoryFormat::ChannelsLast;
  const bool dense =
      toChannelsLast ? t.is_contiguous() : t.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (kernel_ == nullptr || !dense || t.dim() != 4 || !t.is_cuda() || t.scalar_type() != dtype_ ||
      t.numel() == 0)
    return t.contiguous(format);
  at::Tensor out = at::empty(t.sizes(), t.options().memory_format(format));
  const int64_t n = t.size(0), c = t.size(1), hw = t.size(2) * t.size(3);
  codegen::KilnArgs args{};
  args.ptr[0] = t.data_ptr();
  args.ptr[1] = out.data_ptr();
  // [N, C, HW] -> [N, HW, C] to channels-last; [N, HW, C] -> [N, C, HW] back.
  args.sizes[0] = n;
  args.sizes[1] = toChannelsLast ? c : hw;
  args.sizes[2] = toChannelsLast ? hw : c;
  args.numel = t.numel();
  const int device = t.device().index();
  c10::cuda::CUDAGuard guard(t.device());
  const int64_t tile = codegen::kTransposeTile;
  const int64_t tiles =
      n * ((args.sizes[1] + tile - 1) / tile) * ((args.sizes[2] + tile - 1) / tile);
  codegen::LaunchDims dims;
  dims.blockX = codegen::kTransposeBlock;
  // Enough blocks to fill the device (8 resident per SM); the kernel loops over the rest.
  dims.gridX = std::min<int64_t>(tiles, int64_t{8} * std::max(1, kernel_->multiprocessors(device)));
  kernel_->launch(device, dims, args, at::cuda::getCurrentCUDAStream(device).stream());
  return out;
}

}  // namespace kiln::jit

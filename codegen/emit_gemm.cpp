#include "codegen/emit_gemm.h"

#include <fmt/format.h>

#include "codegen/kernel_text.h"
#include "src/support/error.h"

namespace kiln::codegen {

std::string_view toString(GemmActivation act) {
  switch (act) {
    case GemmActivation::kNone:
      return "none";
    case GemmActivation::kGeluErf:
      return "gelu";
  }
  return "?";
}

namespace {

// wgmma.m64n256k16 with fp32 accumulators: 128 registers a thread, listed one by one.
std::string wgmmaFunction(std::string_view ptxType) {
  std::string regs, operands;
  for (int i = 0; i < kGemmTileN / 2; ++i) {
    regs += fmt::format("{}%{}", i == 0 ? "" : ", ", i);
    operands += fmt::format("{}\"+f\"(d[{}])", i == 0 ? "" : ", ", i);
  }
  return fmt::format(
      "__device__ __forceinline__ void kiln_wgmma_256(float (&d)[{0}], unsigned long long da,\n"
      "                                               unsigned long long db) {{\n"
      "  asm volatile(\"wgmma.mma_async.sync.aligned.m64n256k16.f32.{1}.{1} {{{2}}}, %{0}, "
      "%{3}, 1, 1, 1, 0, 0;\"\n"
      "               : {4}\n"
      "               : \"l\"(da), \"l\"(db));\n"
      "}}\n",
      kGemmTileN / 2, ptxType, regs, kGemmTileN / 2 + 1, operands);
}

std::string activationFunction(GemmActivation act) {
  switch (act) {
    case GemmActivation::kNone:
      return "__device__ __forceinline__ float kiln_gemm_act(float v) { return v; }\n";
    case GemmActivation::kGeluErf:
      return "__device__ __forceinline__ float kiln_gemm_act(float v) {\n"
             "  return 0.5f * v * (1.f + erff(v * 0.7071067811865476f));\n}\n";
  }
  return {};
}

}  // namespace

KernelSource emitGemm(const GemmSpec& spec) {
  std::string_view cType, cType2, ptxType, header;
  switch (spec.dtype) {
    case ir::DType::kFloat16:
      cType = "__half", cType2 = "__half2", ptxType = "f16", header = "cuda_fp16.h";
      break;
    case ir::DType::kBFloat16:
      cType = "__nv_bfloat16", cType2 = "__nv_bfloat162", ptxType = "bf16", header = "cuda_bf16.h";
      break;
    default:
      throw Unsupported(fmt::format("kiln GEMM: no kernel for {}", ir::toString(spec.dtype)));
  }
  std::string body = fmt::format("// kiln GEMM (codegen v{}), {}, activation {}, {}\n",
                                 kCodegenVersion, ir::toString(spec.dtype),
                                 toString(spec.activation), spec.hasBias ? "bias" : "no bias");
  body += fmt::format("#include <{}>\ntypedef {} kiln_gemm_t;\ntypedef {} kiln_gemm_t2;\n", header,
                      cType, cType2);
  body += wgmmaFunction(ptxType);
  body += activationFunction(spec.activation);
  const std::string_view text = helperText("kiln_gemm_sm90.cuh");
  KILN_CHECK(!text.empty(), "device helper kiln_gemm_sm90.cuh is not embedded");
  body += text;
  if (body.back() != '\n') body += '\n';
  body += fmt::format(
      "\nextern \"C\" __global__ void __launch_bounds__({}, 1)\n{}(const __grid_constant__ "
      "KilnGemmArgs args) {{\n  kiln_gemm_sm90<{}>(args);\n}}\n",
      kGemmThreads, kNamePlaceholder, spec.hasBias ? "true" : "false");
  return finishKernelSource(
      std::move(body),
      fmt::format("kiln_gemm_{}_{}", ir::toString(spec.dtype), toString(spec.activation)));
}

}  // namespace kiln::codegen

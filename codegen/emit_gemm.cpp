#include "codegen/emit_gemm.h"

#include <cmath>

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

// wgmma.m64n128k16 with fp32 accumulators: 64 registers a thread, listed one by one.
std::string wgmmaFunction(std::string_view ptxType) {
  std::string regs, operands;
  for (int i = 0; i < kGemmTileN / 2; ++i) {
    regs += fmt::format("{}%{}", i == 0 ? "" : ", ", i);
    operands += fmt::format("{}\"+f\"(d[{}])", i == 0 ? "" : ", ", i);
  }
  return fmt::format(
      "__device__ __forceinline__ void kiln_wgmma_128(float (&d)[{0}], unsigned long long da,\n"
      "                                               unsigned long long db) {{\n"
      "  asm volatile(\"wgmma.mma_async.sync.aligned.m64n128k16.f32.{1}.{1} {{{2}}}, %{0}, "
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
    case GemmActivation::kGeluErf: {
      std::string text =
          "__device__ __forceinline__ float kiln_gemm_act(float v) {\n"
          "  const float t = fminf(fabsf(v) * 0.70710678118654752f, 4.f);\n";
      text += fmt::format("  float q = {:.9g}f;\n", kGeluErfQ.back());
      for (size_t i = kGeluErfQ.size() - 1; i-- > 0;)
        text += fmt::format("  q = fmaf(q, t, {:.9g}f);\n", kGeluErfQ[i]);
      text +=
          "  const float e = __expf(-q * t);  // 1 - erf(t)\n"
          "  return 0.5f * v * (v >= 0.f ? 2.f - e : e);\n"
          "}\n";
      return text;
    }
  }
  return {};
}

}  // namespace

float geluErfApprox(float v) {
  const float t = std::fmin(std::fabs(v) * 0.70710678118654752f, 4.f);
  float q = kGeluErfQ.back();
  for (size_t i = kGeluErfQ.size() - 1; i-- > 0;) q = std::fma(q, t, kGeluErfQ[i]);
  const float e = std::exp(-q * t);
  return 0.5f * v * (v >= 0.f ? 2.f - e : e);
}

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

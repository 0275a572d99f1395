#pragma once
// NVRTC: CUDA C++ source -> cubin for one SM architecture.
//
// Note [NVRTC options]
// Kernels are compiled to a cubin (nvrtcGetCUBIN) for the exact arch (--gpu-architecture=sm_XX),
// never to PTX, so loading them needs no JIT in the driver and the cache key's arch names the
// binary exactly. Options, in this order: --gpu-architecture=sm_XX, --std=c++17, -default-device,
// -I<toolkit include> (Note [NVRTC include path] in nvrtc.cpp: cuda_fp16.h/cuda_bf16.h come from
// the toolkit, since this NVRTC has no builtin copies), then --use_fast_math only when requested
// (kernels that allow it; none by default), then any extra options. The options vector is part of
// the cache key. NVRTC programs are independent objects; nvrtcCompileProgram is documented
// thread-safe for distinct programs, so compiles run concurrently (TBB tasks) without a lock.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "codegen/kernel_source.h"

namespace kiln::jit {

struct CompileOptions {
  bool fastMath = false;
  bool lineInfo = false;           // -lineinfo, for profilers
  std::vector<std::string> extra;  // appended verbatim
};

struct CompiledKernel {
  std::string name;                  // the kernel function to look up (cuModuleGetFunction)
  std::string arch;                  // "sm_90"
  std::vector<std::string> options;  // exactly what NVRTC got
  std::vector<char> cubin;
  std::string log;  // NVRTC's log (warnings), possibly empty
};

// NVRTC's version as major * 1000 + minor * 10 (13000 for 13.0), like CUDA_VERSION.
int nvrtcVersion();
// "13.0": the form the cache key stores.
std::string nvrtcVersionString();

// The architectures this NVRTC compiles for, as compute capabilities (75, 80, ..., 90, 100, ...).
std::vector<int> nvrtcSupportedArchs();
// UserError naming `what` (KILN_ARCH, --arch) unless `arch` has the form sm_XX[a|f] and this NVRTC
// supports XX; the message lists what it supports. An arch it lacks would fail every compile.
void checkArch(std::string_view what, const std::string& arch);

// The options compileToCubin passes for `arch` (Note [NVRTC options]).
std::vector<std::string> nvrtcOptions(const std::string& arch, const CompileOptions& options = {});

// Throws CompileError (source, options, log) when NVRTC rejects the source; UserError for a
// malformed arch ("sm_90", "sm_80a" style expected).
CompiledKernel compileToCubin(const std::string& source, const std::string& name,
                              const std::string& arch, const CompileOptions& options = {});
// A generated kernel: its own name and fast-math permission.
inline CompiledKernel compileToCubin(const codegen::KernelSource& kernel, const std::string& arch,
                                     CompileOptions options = {}) {
  options.fastMath = options.fastMath && kernel.fastMath;
  return compileToCubin(kernel.source, kernel.name, arch, options);
}

}  // namespace kiln::jit

#include "jit/nvrtc.h"

#include <nvrtc.h>

#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "src/support/error.h"

namespace kiln::jit {

namespace {

struct ProgramDeleter {
  void operator()(nvrtcProgram* p) const {
    if (p != nullptr && *p != nullptr) nvrtcDestroyProgram(p);
    delete p;
  }
};

// The compute capability of a well-formed "sm_90a", or -1.
int archNumber(const std::string& arch) {
  bool ok = arch.size() >= 5 && arch.size() <= 12 && arch.compare(0, 3, "sm_") == 0;
  size_t digits = 0;
  for (size_t i = 3; ok && i < arch.size(); ++i) {
    const bool digit = std::isdigit(static_cast<unsigned char>(arch[i])) != 0;
    const bool suffix = i + 1 == arch.size() && (arch[i] == 'a' || arch[i] == 'f');
    ok = digit || (suffix && i > 4);
    digits += digit ? 1 : 0;
  }
  return ok ? std::stoi(arch.substr(3, digits)) : -1;
}

void validateArch(const std::string& arch) { checkArch("GPU architecture", arch); }

// Note [NVRTC include path]
// This NVRTC (13.0) has no builtin cuda_fp16.h/cuda_bf16.h, so kernels that use them need the
// toolkit's include dir. It is found once: next to the loaded libnvrtc (<prefix>/lib/../include,
// also the targets/<arch>/include layout), then $CUDA_HOME, $CUDA_PATH, /usr/local/cuda. The path
// becomes an option and so part of the cache key (a binary compiled against other headers is
// another entry). Empty when none has cuda_fp16.h; kernels without half types still compile.
const std::string& toolkitIncludeDir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    std::vector<fs::path> candidates;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&::nvrtcVersion), &info) != 0 && info.dli_fname != nullptr) {
      const fs::path lib = fs::weakly_canonical(fs::path(info.dli_fname)).parent_path();
      candidates.push_back(lib.parent_path() / "include");
      candidates.push_back(lib.parent_path().parent_path() / "include");
    }
    for (const char* env : {"CUDA_HOME", "CUDA_PATH"})
      if (const char* v = std::getenv(env); v != nullptr && *v != '\0')
        candidates.push_back(fs::path(v) / "include");
    candidates.push_back("/usr/local/cuda/include");
    for (const auto& c : candidates) {
      std::error_code ec;
      if (fs::exists(c / "cuda_fp16.h", ec)) return c.string();
    }
    return std::string();
  }();
  return dir;
}

}  // namespace

int nvrtcVersion() {
  int major = 0;
  int minor = 0;
  if (::nvrtcVersion(&major, &minor) != NVRTC_SUCCESS) return 0;
  return major * 1000 + minor * 10;
}

std::string nvrtcVersionString() {
  const int v = nvrtcVersion();
  return fmt::format("{}.{}", v / 1000, (v % 1000) / 10);
}

std::vector<int> nvrtcSupportedArchs() {
  static const std::vector<int> archs = [] {
    int n = 0;
    std::vector<int> out;
    if (::nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0) return out;
    out.resize(static_cast<size_t>(n));
    if (::nvrtcGetSupportedArchs(out.data()) != NVRTC_SUCCESS) out.clear();
    return out;
  }();
  return archs;
}

void checkArch(std::string_view what, const std::string& arch) {
  const int number = archNumber(arch);
  KILN_USER_CHECK(number >= 0, "{}: expected the form sm_90, got \"{}\"", what, arch);
  const std::vector<int> supported = nvrtcSupportedArchs();
  if (supported.empty() || std::find(supported.begin(), supported.end(), number) != supported.end())
    return;
  std::vector<std::string> names;
  for (int a : supported) names.push_back(fmt::format("sm_{}", a));
  throw UserError(fmt::format("{}: NVRTC {} cannot compile for \"{}\"; it supports {}", what,
                              nvrtcVersionString(), arch, fmt::join(names, ", ")));
}

std::vector<std::string> nvrtcOptions(const std::string& arch, const CompileOptions& options) {
  validateArch(arch);
  std::vector<std::string> out = {
      "--gpu-architecture=" + arch,
      "--std=c++17",
      "-default-device",
  };
  if (const std::string& inc = toolkitIncludeDir(); !inc.empty()) out.push_back("-I" + inc);
  if (options.fastMath) out.push_back("--use_fast_math");
  if (options.lineInfo) out.push_back("-lineinfo");
  out.insert(out.end(), options.extra.begin(), options.extra.end());
  return out;
}

CompiledKernel compileToCubin(const std::string& source, const std::string& name,
                              const std::string& arch, const CompileOptions& options) {
  CompiledKernel result;
  result.name = name;
  result.arch = arch;
  result.options = nvrtcOptions(arch, options);

  std::unique_ptr<nvrtcProgram, ProgramDeleter> program(new nvrtcProgram(nullptr));
  const std::string fileName = name.empty() ? "kiln_kernel.cu" : name + ".cu";
  nvrtcResult rc =
      nvrtcCreateProgram(program.get(), source.c_str(), fileName.c_str(), 0, nullptr, nullptr);
  if (rc != NVRTC_SUCCESS)
    throw CompileError(fmt::format("nvrtcCreateProgram for {}: {}", name, nvrtcGetErrorString(rc)),
                       source, result.options, "");

  std::vector<const char*> argv;
  argv.reserve(result.options.size());
  for (const auto& o : result.options) argv.push_back(o.c_str());
  rc = nvrtcCompileProgram(*program, static_cast<int>(argv.size()), argv.data());

  size_t logSize = 0;
  if (nvrtcGetProgramLogSize(*program, &logSize) == NVRTC_SUCCESS && logSize > 1) {
    result.log.resize(logSize);
    if (nvrtcGetProgramLog(*program, result.log.data()) != NVRTC_SUCCESS) result.log.clear();
    while (!result.log.empty() && (result.log.back() == '\0' || result.log.back() == '\n'))
      result.log.pop_back();
  }
  if (rc != NVRTC_SUCCESS)
    throw CompileError(fmt::format("NVRTC failed to compile {} for {}: {}\n{}", name, arch,
                                   nvrtcGetErrorString(rc), result.log),
                       source, result.options, result.log);

  size_t cubinSize = 0;
  rc = nvrtcGetCUBINSize(*program, &cubinSize);
  if (rc == NVRTC_SUCCESS && cubinSize > 0) {
    result.cubin.resize(cubinSize);
    rc = nvrtcGetCUBIN(*program, result.cubin.data());
  }
  if (rc != NVRTC_SUCCESS || cubinSize == 0)
    throw CompileError(fmt::format("NVRTC produced no cubin for {} ({}): {}", name, arch,
                                   rc != NVRTC_SUCCESS ? nvrtcGetErrorString(rc) : "empty"),
                       source, result.options, result.log);
  return result;
}

}  // namespace kiln::jit

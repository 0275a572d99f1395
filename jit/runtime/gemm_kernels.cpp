#include "jit/runtime/gemm_kernels.h"

#include <algorithm>
#include <cstddef>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>

#include "cache/kernel_cache.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/kernel_build.h"
#include "jit/runtime/session.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {

// Layout shared with KilnGemmArgs in codegen/runtime/kiln_gemm_sm90.cuh.
struct GemmArgs {
  CUtensorMap x;
  CUtensorMap w;
  CUtensorMap o;
  void* out;
  const void* bias;
  int64_t m, n, k, ldo;
  int32_t tmaStore;
};
static_assert(sizeof(CUtensorMap) == 128 && alignof(CUtensorMap) == 128);
static_assert(sizeof(GemmArgs) == 512 && offsetof(GemmArgs, tmaStore) == 432,
              "GemmArgs layout is shared with kiln_gemm_sm90.cuh");

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// A 2-d row-major [rows, cols] tensor map read in boxes of boxCols x boxRows, 128B-swizzled.
CUresult encode(const cuda::DriverApi& api, CUtensorMap& map, CUtensorMapDataType type,
                const void* base, int64_t rows, int64_t cols, int64_t rowStrideBytes, int boxRows,
                int boxCols) {
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(rowStrideBytes)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(boxCols), static_cast<cuuint32_t>(boxRows)};
  const cuuint32_t elementStrides[2] = {1, 1};
  return api.cuTensorMapEncodeTiled(&map, type, 2, const_cast<void*>(base), dims, strides, box,
                                    elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                    CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

// Stand-in kernels compiling in the background now, by key text, process-wide: every program built
// before the first compile ends (new buckets, other modules) asks for the same missing kernel, and
// queues it only once. The claim ends with the job (run, or dropped by a stopping session), so a
// later miss (another cache directory, a failed compile) queues it again.
std::mutex gStandInMutex;
std::set<std::string> gStandInsCompiling;

class StandInClaim {
 public:
  explicit StandInClaim(std::string keyText) : keyText_(std::move(keyText)) {}
  StandInClaim(const StandInClaim&) = delete;
  StandInClaim& operator=(const StandInClaim&) = delete;
  ~StandInClaim() {
    std::lock_guard<std::mutex> lock(gStandInMutex);
    gStandInsCompiling.erase(keyText_);
  }
  // A claim on `keyText`, or null when another program holds one.
  static std::shared_ptr<StandInClaim> take(const std::string& keyText) {
    {
      std::lock_guard<std::mutex> lock(gStandInMutex);
      if (!gStandInsCompiling.insert(keyText).second) return nullptr;
    }
    return std::make_shared<StandInClaim>(keyText);
  }

 private:
  std::string keyText_;
};

}  // namespace

bool kilnGemmTarget(const Session& session) {
  const std::optional<std::string> arch = session.targetArch();
  return session.options().kilnGemm && arch && (*arch == "sm_90" || *arch == "sm_90a");
}

KilnGemm::KilnGemm(const Session& session, const codegen::GemmSpec& spec, bool standIn)
    : spec_(spec), poisonOutputs_(session.options().poisonOutputs) {
  if (!kilnGemmTarget(session)) {
    reason_ = "needs an sm_90 target, and Options::kilnGemm (KILN_GEMM) not turned off";
    return;
  }
  codegen::KernelSource src = codegen::emitGemm(spec);
  name_ = src.name;
  const std::string arch(codegen::kGemmArch);
  const cache::CacheKey key = kernelKey(src.source, arch);
  // A stand-in's lookup is its load: the binary found here is the one loaded below.
  std::optional<std::string> cached;
  if (standIn) cached = session.kernelCache().get(key);
  if (standIn && !cached) {
    reason_ = "not in the kernel cache yet (compiled in the background, for the next process)";
    std::shared_ptr<StandInClaim> claim = StandInClaim::take(key.keyText());
    if (claim == nullptr) return;  // already compiling for another program
    const Session* s = &session;
    session.runInBackground([s, key, src, arch, claim] {
      try {
        (void)cubinThroughCache(*s, key, src.source, src.name, arch, "gemm", /*background=*/true);
      } catch (const CompileError& e) {
        logOnce(LogLevel::kWarn, "compile." + src.name,
                fmt::format("kiln: GEMM kernel {} failed to compile: {}\n{}", src.name, e.what(),
                            e.log()));
      }
    });
    return;
  }
  try {
    std::string binary = cached ? std::move(*cached)
                                : cubinThroughCache(session, key, src.source, src.name, arch,
                                                    "gemm", /*background=*/false);
    api_ = session.driver();
    if (api_ == nullptr || api_->cuTensorMapEncodeTiled == nullptr) {
      reason_ = "compiled, but no CUDA driver (with cuTensorMapEncodeTiled) to run it";
      return;
    }
    kernel_ = std::make_shared<LoadedKernel>(*api_, src.name, std::move(binary));
  } catch (const CompileError& e) {
    reason_ = fmt::format("NVRTC: {}", e.what());
    logOnce(LogLevel::kWarn, "compile." + src.name,
            fmt::format("kiln: GEMM kernel {} failed to compile; its linears run through ATen: "
                        "{}\n{}",
                        src.name, e.what(), e.log()));
  }
}

std::optional<at::Tensor> KilnGemm::run(const at::Tensor& x, const at::Tensor& w,
                                        const at::Tensor* bias) const {
  const at::ScalarType dtype = toAtenDType(spec_.dtype);
  if (kernel_ == nullptr || !x.is_cuda() || x.dim() < 1 || w.dim() != 2 ||
      x.scalar_type() != dtype || w.scalar_type() != dtype || w.device() != x.device())
    return std::nullopt;
  if (spec_.hasBias != (bias != nullptr)) return std::nullopt;
  if (bias != nullptr &&
      (bias->dim() != 1 || bias->scalar_type() != dtype || bias->device() != x.device() ||
       !bias->is_contiguous() || bias->size(0) != w.size(0)))
    return std::nullopt;
  const int64_t k = w.size(1), n = w.size(0);
  if (x.size(-1) != k || k == 0 || n == 0) return std::nullopt;
  constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
  const int64_t elem = static_cast<int64_t>(x.element_size());
  // TMA: 16-byte aligned bases and row strides; the kernel: 32-bit tile coordinates.
  const at::Tensor x2 = x.reshape({-1, k});
  const int64_t m = x2.size(0);
  if (x2.stride(1) != 1 || w.stride(1) != 1 || !aligned16(x2.data_ptr()) ||
      !aligned16(w.data_ptr()) || (x2.stride(0) * elem) % 16 != 0 ||
      (w.stride(0) * elem) % 16 != 0 || m > kMax32 || n > kMax32 || k > kMax32)
    return std::nullopt;
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = n;
  at::Tensor out = at::empty(sizes, x.options());
  if (m == 0) return out;
  if (poisonOutputs_) out.fill_(std::numeric_limits<double>::quiet_NaN());

  GemmArgs args{};
  const CUtensorMapDataType type = spec_.dtype == ir::DType::kFloat16
                                       ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                       : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  if (encode(*api_, args.x, type, x2.data_ptr(), m, k, x2.stride(0) * elem, codegen::kGemmTileM,
             codegen::kGemmTileK) != CUDA_SUCCESS ||
      encode(*api_, args.w, type, w.data_ptr(), n, k, w.stride(0) * elem, codegen::kGemmTileN,
             codegen::kGemmTileK) != CUDA_SUCCESS) {
    logOnce(LogLevel::kInfo, "tmap." + name_,
            fmt::format("kiln: {} cannot describe operands [{}, {}] x [{}, {}] with TMA; running "
                        "through ATen",
                        name_, m, k, n, k));
    return std::nullopt;
  }
  // The output through TMA stores where its rows allow a tensor map (n * element size a multiple
  // of 16 bytes), else through the kernel's bounds-checked stores.
  args.tmaStore = (n * elem) % 16 == 0 && encode(*api_, args.o, type, out.data_ptr(), m, n,
                                                 n * elem, codegen::kGemmTileM, 64) == CUDA_SUCCESS;
  args.out = out.data_ptr();
  args.bias = bias != nullptr ? bias->data_ptr() : nullptr;
  args.m = m;
  args.n = n;
  args.k = k;
  args.ldo = n;
  const int device = x.device().index();
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t tiles = ((m + codegen::kGemmTileM - 1) / codegen::kGemmTileM) *
                        ((n + codegen::kGemmTileN - 1) / codegen::kGemmTileN);
  // Persistent: one CTA an SM (the shared memory allows no more), looping over tiles.
  const int64_t grid = std::min<int64_t>(tiles, kernel_->multiprocessors(device));
  kernel_->launch(device, grid, codegen::kGemmThreads, codegen::kGemmSharedBytes, &args,
                  at::cuda::getCurrentCUDAStream(device).stream());
  return out;
}

}  // namespace kiln::jit

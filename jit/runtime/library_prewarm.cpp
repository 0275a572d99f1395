#include "jit/runtime/library_prewarm.h"

#include <array>
#include <atomic>
#include <memory>
#include <optional>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "jit/cuda_api.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/session.h"
#include "src/ir/graph.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {

// In the order the job loads them (Note [Library prewarm]): cuBLAS last.
enum Library : size_t { kSdpa, kConv, kGemm, kLibraries };
constexpr auto kMaxDevices = static_cast<size_t>(cuda::kMaxDevices);

// Whether library `lib` was prewarmed (or is being) on device `d` in this process.
std::atomic<bool>& claimed(size_t lib, size_t d) {
  static std::array<std::array<std::atomic<bool>, kMaxDevices>, kLibraries> flags{};
  return flags[lib][d];
}

// Whether the prewarm of library `lib` on device `d` is queued or running (claimed, not done).
std::atomic<bool>& loading(size_t lib, size_t d) {
  static std::array<std::array<std::atomic<bool>, kMaxDevices>, kLibraries> flags{};
  return flags[lib][d];
}

std::atomic<bool>& heldForTesting(size_t d) {
  static std::array<std::atomic<bool>, kMaxDevices> flags{};
  return flags[d];
}

void warmGemm(const at::TensorOptions& o) {
  const at::Tensor a = at::ones({64, 64}, o);
  const at::Tensor bias = at::zeros({64}, o);
  (void)at::mm(a, a);            // cuBLAS
  (void)at::linear(a, a, bias);  // cuBLASLt (GEMM with a bias epilogue)
  (void)at::bmm(a.unsqueeze(0), a.unsqueeze(0));
}

void warmConv(const at::TensorOptions& o, bool channelsLast) {
  const auto format = channelsLast ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = at::ones({1, 16, 8, 8}, o).contiguous(format);
  const at::Tensor w = at::ones({16, 16, 3, 3}, o).contiguous(format);
  (void)at::conv2d(x, w, {}, 1, 1);
}

void warmSdpa(const at::TensorOptions& o) {
  const at::Tensor q = at::ones({1, 2, 16, 64}, o);
  (void)at::scaled_dot_product_attention(q, q, q);
}

}  // namespace

void prewarmLibraries(const Session& session, const ir::Graph& graph, at::Device device,
                      bool channelsLast) {
  if (!device.is_cuda() || device.index() < 0 || static_cast<size_t>(device.index()) >= kMaxDevices)
    return;
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) return;
  std::array<std::optional<at::ScalarType>, kLibraries> wanted;
  for (const auto& n : graph.nodes()) {
    std::optional<size_t> lib;
    switch (n->kind()) {
      case ir::OpKind::kMatMul:
      case ir::OpKind::kLinear:
      case ir::OpKind::kAddmm:
      case ir::OpKind::kBmm:
      case ir::OpKind::kBaddbmm:
        lib = kGemm;
        break;
      case ir::OpKind::kConv2d:
        lib = kConv;
        break;
      case ir::OpKind::kSdpa:
        lib = kSdpa;
        break;
      default:
        break;
    }
    if (!lib || wanted[*lib] || n->outputs().empty()) continue;
    const at::ScalarType t = toAtenDType(n->output()->dtype());
    if (at::isFloatingType(t)) wanted[*lib] = t;
  }
  const size_t d = static_cast<size_t>(device.index());
  std::array<std::optional<at::ScalarType>, kLibraries> jobs;
  bool any = false;
  for (size_t lib = 0; lib < kLibraries; ++lib)
    if (wanted[lib] && !claimed(lib, d).exchange(true)) {
      jobs[lib] = wanted[lib];
      loading(lib, d).store(true, std::memory_order_release);
      any = true;
    }
  if (!any) return;
  // The loading flags are cleared as each library finishes, and by this holder's release for any
  // the job never reached: a job skipped at shutdown, or one that threw.
  std::shared_ptr<void> clearFlags(nullptr, [jobs, d](void*) {
    for (size_t lib = 0; lib < kLibraries; ++lib)
      if (jobs[lib]) loading(lib, d).store(false, std::memory_order_release);
  });
  session.runInBackground([jobs, device, channelsLast, d, clearFlags] {
    const c10::cuda::CUDAGuard guard(device);
    const c10::cuda::CUDAStream stream =
        c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    const c10::cuda::CUDAStreamGuard onStream(stream);
    for (size_t lib = 0; lib < kLibraries; ++lib) {
      if (!jobs[lib]) continue;
      const at::TensorOptions o = at::TensorOptions().dtype(*jobs[lib]).device(device);
      try {
        if (lib == kGemm) warmGemm(o);
        if (lib == kConv) warmConv(o, channelsLast);
        if (lib == kSdpa) warmSdpa(o);
      } catch (const std::exception& e) {
        KILN_LOG_DEBUG("kiln: library prewarm {} failed: {}", lib, e.what());
      }
      try {
        stream.synchronize();
      } catch (const std::exception& e) {
        KILN_LOG_DEBUG("kiln: library prewarm {}: synchronize failed: {}", lib, e.what());
      }
      loading(lib, d).store(false, std::memory_order_release);
    }
  });
}

bool gemmLibraryLoading(int device) {
  if (device < 0) {
    for (int d = 0; d < static_cast<int>(kMaxDevices); ++d)
      if (gemmLibraryLoading(d)) return true;
    return false;
  }
  if (static_cast<size_t>(device) >= kMaxDevices) return false;
  const auto d = static_cast<size_t>(device);
  return heldForTesting(d).load(std::memory_order_relaxed) ||
         loading(kGemm, d).load(std::memory_order_acquire);
}

void holdGemmLibraryLoadingForTesting(int device, bool on) {
  if (device >= 0 && static_cast<size_t>(device) < kMaxDevices)
    heldForTesting(static_cast<size_t>(device)).store(on);
}

}  // namespace kiln::jit

#include "jit/runtime/retyped_params.h"

#include <limits>

#include <c10/core/GradMode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <fmt/format.h>

#include "jit/capture/capture.h"
#include "jit/runtime/fold_conv_bn.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

namespace {

int64_t versionOf(const at::Tensor& t) {
  return t.is_inference() ? 0 : t._version();
}

}  // namespace

at::Tensor retypeTensor(const at::Tensor& source, at::ScalarType dtype) {
  c10::InferenceMode notInference(/*enabled=*/false);
  c10::NoGradGuard noGrad;
  const double floatMax = std::numeric_limits<float>::max();
  at::Tensor s = source.detach();
  const at::Tensor extreme = s.abs() == floatMax;
  if (extreme.any().item<bool>())
    s = at::where(extreme, s.sign() * retypedFloat(floatMax, dtype), s);
  return s.to(dtype);
}

at::Tensor RetypedParams::add(std::string name, const at::Tensor& source, at::ScalarType dtype) {
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->source = source;
  const int64_t version = versionOf(source);
  const void* data = source.const_data_ptr();
  e->converted = retypeTensor(source, dtype);
  stamp(*e, version, data);
  at::Tensor out = e->converted;
  entries_.push_back(std::move(e));
  return out;
}

bool RetypedParams::entryStale(const Entry& e) {
  return versionOf(e.source) != e.version.load(std::memory_order_acquire) ||
         e.source.const_data_ptr() != e.data.load(std::memory_order_acquire);
}

void RetypedParams::stamp(Entry& e, int64_t version, const void* data) {
  e.version.store(version, std::memory_order_release);
  e.data.store(data, std::memory_order_release);
}

bool RetypedParams::stale() const {
  for (const auto& e : entries_)
    if (entryStale(*e)) return true;
  return false;
}

int RetypedParams::refresh() const {
  if (!stale()) return 0;
  std::lock_guard<std::mutex> lock(refreshMutex_);
  int refreshed = 0;
  for (const auto& e : entries_) {
    if (!entryStale(*e)) continue;  // or another thread refreshed it meanwhile
    const bool cuda = e->converted.is_cuda() || e->source.is_cuda();
    try {
      // As for folded params: kernels already queued may read the converted tensor.
      if (cuda) c10::cuda::device_synchronize();
      const int64_t version = versionOf(e->source);
      const void* data = e->source.const_data_ptr();
      overwriteSnapshot(e->converted, retypeTensor(e->source, e->converted.scalar_type()));
      if (cuda) c10::cuda::device_synchronize();
      stamp(*e, version, data);
    } catch (const c10::Error& err) {
      throw UserError(fmt::format(
          "param '{}' changed in place and could not be converted to {} again: {}", e->name,
          c10::toString(e->converted.scalar_type()), err.what_without_backtrace()));
    }
    ++refreshed;
  }
  if (refreshed > 0)
    KILN_LOG_INFO("kiln: params changed in place; converted {} of them again", refreshed);
  return refreshed;
}

int64_t RetypedParams::bytes() const {
  int64_t total = 0;
  for (const auto& e : entries_) total += static_cast<int64_t>(e->converted.nbytes());
  return total;
}

}  // namespace kiln::jit

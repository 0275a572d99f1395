#include "jit/runtime/derived_params.h"

#include <limits>

#include <c10/core/GradMode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <fmt/format.h>

#include "jit/capture/capture.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/fold_conv_bn.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

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

at::Tensor DerivedParams::compute(const Entry& e, at::ScalarType dtype) {
  c10::InferenceMode notInference(/*enabled=*/false);
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> parts;
  parts.reserve(e.sources.size());
  for (const at::Tensor& s : e.sources)
    parts.push_back(s.scalar_type() == dtype ? s.detach() : retypeTensor(s, dtype));
  return parts.size() == 1 ? parts.front() : at::cat(parts, 0);
}

at::Tensor DerivedParams::add(std::string name, std::vector<at::Tensor> sources,
                              at::ScalarType dtype) {
  KILN_CHECK(!sources.empty(), "derived param '{}' has no sources", name);
  auto e = std::make_unique<Entry>();
  e->name = std::move(name);
  e->sources = std::move(sources);
  const size_t n = e->sources.size();
  e->versions = std::make_unique<std::atomic<int64_t>[]>(n);
  e->data = std::make_unique<std::atomic<const void*>[]>(n);
  // Stamped before computing: a write racing the computation makes the entry stale, not wrong.
  for (size_t i = 0; i < n; ++i) {
    e->versions[i].store(tensorVersion(e->sources[i]), std::memory_order_relaxed);
    e->data[i].store(e->sources[i].const_data_ptr(), std::memory_order_relaxed);
  }
  e->value = compute(*e, dtype);
  at::Tensor out = e->value;
  entries_.push_back(std::move(e));
  return out;
}

bool DerivedParams::entryStale(const Entry& e) {
  for (size_t i = 0; i < e.sources.size(); ++i)
    if (tensorVersion(e.sources[i]) != e.versions[i].load(std::memory_order_acquire) ||
        e.sources[i].const_data_ptr() != e.data[i].load(std::memory_order_acquire))
      return true;
  return false;
}

bool DerivedParams::stale() const {
  for (const auto& e : entries_)
    if (entryStale(*e)) return true;
  return false;
}

int DerivedParams::refresh() const {
  if (!stale()) return 0;
  std::lock_guard<std::mutex> lock(refreshMutex_);
  int refreshed = 0;
  for (const auto& e : entries_) {
    if (!entryStale(*e)) continue;  // or another thread refreshed it meanwhile
    bool cuda = e->value.is_cuda();
    for (const at::Tensor& s : e->sources) cuda = cuda || s.is_cuda();
    try {
      // As for folded params: kernels already queued may read the value.
      if (cuda) c10::cuda::device_synchronize();
      const size_t n = e->sources.size();
      std::vector<int64_t> versions(n);
      std::vector<const void*> data(n);
      for (size_t i = 0; i < n; ++i) {
        versions[i] = tensorVersion(e->sources[i]);
        data[i] = e->sources[i].const_data_ptr();
      }
      overwriteSnapshot(e->value, compute(*e, e->value.scalar_type()));
      if (cuda) c10::cuda::device_synchronize();
      for (size_t i = 0; i < n; ++i) {
        e->versions[i].store(versions[i], std::memory_order_release);
        e->data[i].store(data[i], std::memory_order_release);
      }
    } catch (const c10::Error& err) {
      throw UserError(fmt::format(
          "param '{}' changed in place and could not be computed in {} again: {}", e->name,
          c10::toString(e->value.scalar_type()), err.what_without_backtrace()));
    }
    ++refreshed;
  }
  if (refreshed > 0)
    KILN_LOG_INFO("kiln: params changed in place; computed {} of kiln's copies again", refreshed);
  return refreshed;
}

int64_t DerivedParams::bytes() const {
  int64_t total = 0;
  for (const auto& e : entries_) total += static_cast<int64_t>(e->value.nbytes());
  return total;
}

}  // namespace kiln::jit

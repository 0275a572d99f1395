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

// One derived param: its sources, its value, and each source's stamp as of the last computation.
struct DerivedEntry {
  std::string name;
  std::vector<at::Tensor> sources;
  at::Tensor value;
  std::unique_ptr<std::atomic<int64_t>[]> versions;
  std::unique_ptr<std::atomic<const void*>[]> data;
  std::mutex refreshMutex;
};

namespace {

at::Tensor compute(const DerivedEntry& e, at::ScalarType dtype) {
  c10::InferenceMode notInference(/*enabled=*/false);
  c10::NoGradGuard noGrad;
  std::vector<at::Tensor> parts;
  parts.reserve(e.sources.size());
  for (const at::Tensor& s : e.sources)
    parts.push_back(s.scalar_type() == dtype ? s.detach() : retypeTensor(s, dtype));
  return parts.size() == 1 ? parts.front() : at::cat(parts, 0);
}

std::shared_ptr<DerivedEntry> makeEntry(std::string name, std::vector<at::Tensor> sources,
                                        at::ScalarType dtype) {
  auto e = std::make_shared<DerivedEntry>();
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
  return e;
}

bool entryStale(const DerivedEntry& e) {
  for (size_t i = 0; i < e.sources.size(); ++i)
    if (tensorVersion(e.sources[i]) != e.versions[i].load(std::memory_order_acquire) ||
        e.sources[i].const_data_ptr() != e.data[i].load(std::memory_order_acquire))
      return true;
  return false;
}

// Computes `e` again if it is still stale under its lock; true if it did.
bool refreshEntry(DerivedEntry& e) {
  std::lock_guard<std::mutex> lock(e.refreshMutex);
  if (!entryStale(e)) return false;  // another thread (or plan) refreshed it meanwhile
  bool cuda = e.value.is_cuda();
  for (const at::Tensor& s : e.sources) cuda = cuda || s.is_cuda();
  try {
    // As for folded params: kernels already queued may read the value.
    if (cuda) c10::cuda::device_synchronize();
    const size_t n = e.sources.size();
    std::vector<int64_t> versions(n);
    std::vector<const void*> data(n);
    for (size_t i = 0; i < n; ++i) {
      versions[i] = tensorVersion(e.sources[i]);
      data[i] = e.sources[i].const_data_ptr();
    }
    overwriteSnapshot(e.value, compute(e, e.value.scalar_type()));
    if (cuda) c10::cuda::device_synchronize();
    for (size_t i = 0; i < n; ++i) {
      e.versions[i].store(versions[i], std::memory_order_release);
      e.data[i].store(data[i], std::memory_order_release);
    }
  } catch (const c10::Error& err) {
    throw UserError(
        fmt::format("param '{}' changed in place and could not be computed in {} again: {}", e.name,
                    c10::toString(e.value.scalar_type()), err.what_without_backtrace()));
  }
  return true;
}

}  // namespace

std::shared_ptr<const FoldedParams> DerivedPool::folds(
    const std::string& key, const std::function<std::shared_ptr<const FoldedParams>()>& make) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (std::shared_ptr<const FoldedParams> alive = folds_[key].lock()) return alive;
  std::erase_if(folds_, [](const auto& kv) { return kv.second.expired(); });
  std::shared_ptr<const FoldedParams> made = make();
  if (made != nullptr) folds_[key] = made;
  return made;
}

DerivedParams::~DerivedParams() = default;

at::Tensor DerivedParams::add(std::string name, std::vector<at::Tensor> sources,
                              at::ScalarType dtype) {
  KILN_CHECK(!sources.empty(), "derived param '{}' has no sources", name);
  if (pool_ == nullptr) {
    entries_.push_back(makeEntry(std::move(name), std::move(sources), dtype));
    return entries_.back()->value;
  }
  DerivedPool::Key key{{}, static_cast<int>(dtype)};
  for (const at::Tensor& s : sources) key.first.push_back(s.unsafeGetTensorImpl());
  // Under the pool's lock: two families building at once compute one copy. (A module builds one
  // family at a time; the lock is for modules that share a pool.)
  std::lock_guard<std::mutex> lock(pool_->mutex_);
  std::shared_ptr<DerivedEntry> e = pool_->entries_[key].lock();
  if (e == nullptr) {
    std::erase_if(pool_->entries_, [](const auto& kv) { return kv.second.expired(); });
    e = makeEntry(std::move(name), std::move(sources), dtype);
    pool_->entries_[key] = e;
  }
  entries_.push_back(e);
  return e->value;
}

bool DerivedParams::stale() const {
  for (const auto& e : entries_)
    if (entryStale(*e)) return true;
  return false;
}

int DerivedParams::refresh() const {
  if (!stale()) return 0;
  int refreshed = 0;
  for (const auto& e : entries_)
    if (entryStale(*e) && refreshEntry(*e)) ++refreshed;
  if (refreshed > 0)
    KILN_LOG_INFO("kiln: params changed in place; computed {} of kiln's copies again", refreshed);
  return refreshed;
}

std::vector<at::Tensor> DerivedParams::values() const {
  std::vector<at::Tensor> out;
  for (const auto& e : entries_) out.push_back(e->value);
  return out;
}

int64_t DerivedParams::bytes() const {
  int64_t total = 0;
  for (const auto& e : entries_) total += static_cast<int64_t>(e->value.nbytes());
  return total;
}

}  // namespace kiln::jit

#pragma once
// Params kiln computes from module tensors: float32 module tensors that the graph reads in float16
// or bfloat16 (Note [Precision] in optimize.h), and the concatenated weights of merged linears
// (Note [Merged linears] in src/passes/merge_linears.h).
//
// Note [Derived params are snapshots]
// Params are bound by reference (Note [Params by reference] in capture.h), but a float32 weight
// read in float16 must be converted, and converting it at every call would cost what the call
// does; a merged weight is a copy of its sources. So each is computed once, into a tensor every
// plan of the program binds, and stamped with each source's version counter and data pointer, as
// folded params are (Note [Folded params are snapshots] in fold_conv_bn.h): Plan::run calls
// refresh() first, which computes again, into the same TensorImpl, whatever changed in place since
// (load_state_dict, optimizer steps, module.to()). The check is two loads per source per call.
// Inference tensors have no version counter: for them only a new data pointer is seen.
// Conversion saturates +-FLT_MAX to the new dtype's largest finite value (Note [Tracing in
// float32] in capture.h); everything else rounds as Tensor::to does.
//
// Note [Derived params shared by families]
// Every guard family of a module builds its own Program (batch 1 is a family of its own: Note
// [Guards and plans] in optimize.h), from the same module tensors, so each used to compute its
// own copies: on an H100 (2026-12-07), BERT-base's merged q/k/v took 83 MB over its batch-1 and
// batch-8/32 plans, twice the 40 MiB of one copy. A DerivedPool, one per optimized module, keeps
// one entry per (source tensors, dtype): every Program of the module binds the same tensor, and
// whichever plan sees it stale first refreshes it, under the entry's own lock. Folded batchnorms
// (Note [Folded params are snapshots] in fold_conv_bn.h) are shared the same way, a Program's
// whole FoldedParams at once, keyed by every fold's sources, eps, dtype and layout. The pool holds
// entries weakly; they go when the last Program that binds them does.
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace kiln::jit {

struct DerivedEntry;  // derived_params.cpp
class FoldedParams;   // jit/runtime/fold_conv_bn.h

// Note [Derived params shared by families]. Thread-safe.
class DerivedPool {
 public:
  DerivedPool() = default;
  DerivedPool(const DerivedPool&) = delete;
  DerivedPool& operator=(const DerivedPool&) = delete;

  // The folds alive under `key`, or else make()'s, which are kept under it (when not null).
  std::shared_ptr<const FoldedParams> folds(
      const std::string& key, const std::function<std::shared_ptr<const FoldedParams>()>& make);

 private:
  friend class DerivedParams;
  using Key = std::pair<std::vector<const void*>, int>;  // source TensorImpls, dtype
  mutable std::mutex mutex_;
  std::map<Key, std::weak_ptr<DerivedEntry>> entries_;
  std::map<std::string, std::weak_ptr<const FoldedParams>> folds_;
};

class DerivedParams {
 public:
  // Entries come from `pool` when given (and are added to it), else are this object's own.
  explicit DerivedParams(std::shared_ptr<DerivedPool> pool = nullptr) : pool_(std::move(pool)) {}
  DerivedParams(const DerivedParams&) = delete;
  DerivedParams& operator=(const DerivedParams&) = delete;
  ~DerivedParams();

  // `sources`, each converted to `dtype`, concatenated on dim 0 when there are several: computed
  // now, or the pool's tensor for the same sources and dtype. Returns what the program binds.
  at::Tensor add(std::string name, std::vector<at::Tensor> sources, at::ScalarType dtype);
  // Some source changed since it was computed. No lock, no allocation.
  bool stale() const;
  // Computes the stale ones again, in place. Returns how many.
  int refresh() const;
  size_t size() const { return entries_.size(); }
  int64_t bytes() const;  // of the computed tensors
  std::vector<at::Tensor> values() const;

 private:
  std::shared_ptr<DerivedPool> pool_;
  std::vector<std::shared_ptr<DerivedEntry>> entries_;
};

// `source` in `dtype` (float16 or bfloat16), +-FLT_MAX saturated (see the note).
at::Tensor retypeTensor(const at::Tensor& source, at::ScalarType dtype);

}  // namespace kiln::jit

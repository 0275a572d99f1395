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
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace kiln::jit {

class DerivedParams {
 public:
  DerivedParams() = default;
  DerivedParams(const DerivedParams&) = delete;
  DerivedParams& operator=(const DerivedParams&) = delete;

  // Computes `sources`, each converted to `dtype`, concatenated on dim 0 when there are several,
  // now, and returns the result, which the program binds.
  at::Tensor add(std::string name, std::vector<at::Tensor> sources, at::ScalarType dtype);
  // Some source changed since it was computed. No lock, no allocation.
  bool stale() const;
  // Computes the stale ones again, in place. Returns how many.
  int refresh() const;
  size_t size() const { return entries_.size(); }
  int64_t bytes() const;  // of the computed tensors

 private:
  struct Entry {
    std::string name;
    std::vector<at::Tensor> sources;
    at::Tensor value;
    // Per source, as of the last computation.
    std::unique_ptr<std::atomic<int64_t>[]> versions;
    std::unique_ptr<std::atomic<const void*>[]> data;
  };
  static bool entryStale(const Entry& e);
  static at::Tensor compute(const Entry& e, at::ScalarType dtype);

  std::vector<std::unique_ptr<Entry>> entries_;
  mutable std::mutex refreshMutex_;
};

// `source` in `dtype` (float16 or bfloat16), +-FLT_MAX saturated (see the note).
at::Tensor retypeTensor(const at::Tensor& source, at::ScalarType dtype);

}  // namespace kiln::jit

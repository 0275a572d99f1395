#pragma once
// The params of a retyped program (Note [Precision] in optimize.h): float32 module tensors that the
// graph reads in float16 or bfloat16.
//
// Note [Retyped params are snapshots]
// Params are bound by reference (Note [Params by reference] in capture.h), but a float32 weight
// read in float16 must be converted, and converting it at every call would cost what the call
// does. So each is converted once, into a tensor every plan of the program binds, and stamped
// with its source's version counter and data pointer, as folded params are (Note [Folded params
// are snapshots] in fold_conv_bn.h): Plan::run calls refresh() first, which converts again, into
// the same TensorImpl, whatever changed in place since (load_state_dict, optimizer steps,
// module.to()). The check is two loads per param per call. Inference tensors have no version
// counter: for them only a new data pointer is seen.
// Conversion saturates +-FLT_MAX to the new dtype's largest finite value (Note [Tracing in
// float32] in capture.h); everything else rounds as Tensor::to does.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace kiln::jit {

class RetypedParams {
 public:
  RetypedParams() = default;
  RetypedParams(const RetypedParams&) = delete;
  RetypedParams& operator=(const RetypedParams&) = delete;

  // Converts `source` to `dtype` now and returns the converted tensor, which the program binds.
  at::Tensor add(std::string name, const at::Tensor& source, at::ScalarType dtype);
  // Some source changed since it was converted. No lock, no allocation.
  bool stale() const;
  // Converts the stale ones again, in place. Returns how many.
  int refresh() const;
  size_t size() const { return entries_.size(); }
  int64_t bytes() const;  // of the converted tensors

 private:
  struct Entry {
    std::string name;
    at::Tensor source;
    at::Tensor converted;
    std::atomic<int64_t> version{0};
    std::atomic<const void*> data{nullptr};
  };
  static bool entryStale(const Entry& e);
  static void stamp(Entry& e, int64_t version, const void* data);

  std::vector<std::unique_ptr<Entry>> entries_;
  mutable std::mutex refreshMutex_;
};

// `source` in `dtype` (float16 or bfloat16), +-FLT_MAX saturated (see the note).
at::Tensor retypeTensor(const at::Tensor& source, at::ScalarType dtype);

}  // namespace kiln::jit

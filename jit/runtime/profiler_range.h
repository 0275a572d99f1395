#pragma once
// Note [Profiler ranges]
// kiln marks its work for the two profilers people attach to LibTorch inference: an NVTX range
// (Nsight Systems) and an at::RecordFunction (what RECORD_FUNCTION opens: torch.profiler and
// other RecordFunction callbacks see it). Names:
//   "kiln::forward"               OptimizedModule::forward, the whole call
//   "kiln::<step>"                each step of Plan::run: "kiln::group #3", "kiln::library
//                                 linear", "kiln::view reshape", "kiln::eager <op>"
//   "kiln::compile <kernel>"      each NVRTC compile (cubinThroughCache)
// Kernel launches, ATen ops and copies nest under the step that issued them. A step's name says
// what the step is, not which kernel runs it: the kernel set can be swapped under a running plan
// (explain() and profile() name the kernels).
// Cost when nothing listens: about 15 ns per range (2-core CPU build machine, 2026-12-05; 60 ns
// with an unconditional at::RecordFunction). Step names are built once per Program
// (Program::build), never per call; NVTX without a tool is an indirect call to a no-op (nvtx3 is
// header-only and looks for a tool once); the RecordFunction is only created when a callback is
// registered, the check the dispatcher makes before every op.
#include <optional>

#include <ATen/record_function.h>

namespace kiln::jit {

// Both ranges, for one scope. `name` must outlive the range.
class ProfilerRange {
 public:
  explicit ProfilerRange(const char* name);
  ~ProfilerRange();
  ProfilerRange(const ProfilerRange&) = delete;
  ProfilerRange& operator=(const ProfilerRange&) = delete;

 private:
  std::optional<at::RecordFunction> record_;
};

}  // namespace kiln::jit

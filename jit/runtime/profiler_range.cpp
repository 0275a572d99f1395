#include "jit/runtime/profiler_range.h"

#include <string_view>

#include <nvtx3/nvToolsExt.h>

namespace kiln::jit {

// RECORD_FUNCTION(name, {}) as the dispatcher does it: a RecordFunction only when a callback
// wants this scope. Held as a member so that the range spans the object's life.
ProfilerRange::ProfilerRange(const char* name) {
  if (std::optional<at::StepCallbacks> callbacks =
          at::getStepCallbacksUnlessEmpty(at::RecordScope::FUNCTION)) {
    record_.emplace(std::move(*callbacks));
    record_->before(std::string_view(name));
  }
  nvtxRangePushA(name);
}

ProfilerRange::~ProfilerRange() {
  nvtxRangePop();
}

}  // namespace kiln::jit

#pragma once
// Note [Capture cache]
// Tracing a module costs far more than running it (hundreds of milliseconds for an encoder block),
// so a fresh process whose kernels are all in the disk cache would still spend most of its first
// call in capture. The captured graph is therefore stored in the same disk cache (entry kind
// "capture"), as IR text plus what binds it back to a module: input names, output structure,
// example symbol values and the names of the params.
//   Key     the module's forward code (its TorchScript graph), the names, dtypes and shapes of its
//           parameters and buffers, its other attributes' values, the guard family (input dtypes,
//           devices, ranks, static sizes), the capture options and the payload format. Parameter
//           values are not in it: params are bound by name, by reference, on load (Note [Params by
//           reference]), so new weights in the same architecture reuse the entry; but whether a
//           small integer buffer holds one value or an arange is (Note [Buffers with known
//           contents] in capture.h), since the capture may rely on it.
//   Stored  only when nothing is lost: every param found by name among the module's parameters
//           and buffers, the text parses back to the same graph (same printed form, symbol order
//           and param names), and every eager call can be stored (Note [Eager calls in the
//           capture cache] in capture.h). The size assumptions (Note [Size assumptions]) and the
//           capture report's eager ops and reasons are stored with it.
//   Loaded  the entry is parsed and verified; anything unexpected (corrupt, stale, a param that is
//           gone or changed type) is logged once and the module is traced as usual.
// Only TorchScript modules are cached: a C++ frontend forward is a callable kiln cannot
// fingerprint.
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>

#include "jit/capture/capture.h"

namespace torch::jit {
struct Module;
}  // namespace torch::jit

namespace kiln::cache {
class KernelCache;
}  // namespace kiln::cache

namespace kiln::jit {

// 5: the IR op kEmbedding (Note [Embeddings in kernels] in codegen/emit_cuda.cpp). 6: kArange
// (Note [Aranges in kernels] in jit/capture/lower_indexing.cpp).
inline constexpr uint32_t kCaptureFormatVersion = 6;

// The key text for `module` traced under `family` (a guard-family signature) and `options`;
// nullopt when the module has an attribute kiln cannot fingerprint (it is then never cached).
std::optional<std::string> captureFingerprint(const torch::jit::Module& module,
                                              const std::string& family,
                                              const CaptureOptions& options);

// The payload for `captured`, or nullopt (and the reason in *why) when it cannot be stored
// faithfully (see the note).
std::optional<std::string> serializeCapture(const CapturedGraph& captured,
                                            const torch::jit::Module& module,
                                            std::string* why = nullptr);

// A CapturedGraph from a payload, its params bound to `module`'s tensors by name; nullopt (and a
// reason in *why) when the payload is malformed or does not fit the module. `retypedTo`: the
// capture's CaptureOptions::retypeTo (its params of that dtype are float32 in the module).
std::optional<CapturedGraph> deserializeCapture(const std::string& payload,
                                                const torch::jit::Module& module, std::string* why,
                                                std::optional<ir::DType> retypedTo = std::nullopt);

// Looks the capture up in `cache`; on a miss (or an unusable entry) runs `doCapture` and stores
// its result when it can. *fromCache tells which happened.
CapturedGraph cachedCapture(cache::KernelCache& cache, const torch::jit::Module& module,
                            const std::string& family, const CaptureOptions& options,
                            const std::function<CapturedGraph()>& doCapture, bool* fromCache);

}  // namespace kiln::jit

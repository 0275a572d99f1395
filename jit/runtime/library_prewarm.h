#pragma once
// Note [Library prewarm]
// A process's first cuBLAS GEMM, first cuDNN convolution and first SDPA each pay a one-time cost
// that has nothing to do with the call: the library loads its kernels and heuristics. On an H100
// with LibTorch 2.11 that was about 90 ms for the first fp16 GEMM, 70 ms for the first conv and,
// in the same process, 16 ms for the first SDPA (bench/RESULTS.md, first call). A warm kiln
// process otherwise reaches those steps only after capture, passes and its first steps, so that
// cost adds to the first call in full.
// prewarmLibraries() therefore starts, once per process, device and library, a background job that
// runs one tiny call of each library the captured graph uses (an fp16/bf16 GEMM with and without
// bias, a conv in the plan's layout, an SDPA) on a stream of its own, while the calling thread goes
// on with the passes, kernel loading and the first steps. The load is process-wide, so the
// caller's own first call of that library then finds it done, or waits for the rest of it. The
// results are discarded; nothing of the plan depends on the job, and a job that fails is logged
// at debug level and changes nothing else. CUDA devices only; never while the caller's stream is
// capturing a CUDA graph.
// The job loads SDPA and cuDNN first and cuBLAS last: while cuBLAS loads, the plan's linears can
// run on kiln's own GEMM instead (Note [Kiln GEMM while cuBLAS loads] in gemm_kernels.h), which
// nothing can do for SDPA and cuDNN.
#include <ATen/core/Tensor.h>

namespace kiln {
class Session;
}  // namespace kiln

namespace kiln::ir {
class Graph;
}  // namespace kiln::ir

namespace kiln::jit {

// Queues the prewarm job on `session`'s background arena for the libraries `graph` calls on
// `device` that this process has not prewarmed yet; returns at once. `channelsLast`: the plan's
// convolutions run channels-last (Note [Channels-last convolutions]).
void prewarmLibraries(const Session& session, const ir::Graph& graph, at::Device device,
                      bool channelsLast);

// Whether this process's cuBLAS prewarm on CUDA device `device` was queued and has not finished
// yet: a GEMM called now would wait for that load (Note [Kiln GEMM while cuBLAS loads]). False
// when no prewarm of cuBLAS was started (it was already loaded, or prewarm is off). A negative
// `device`: on any device.
bool gemmLibraryLoading(int device);

// Tests only: holds gemmLibraryLoading(device) true (on) or releases the hold (off), whatever
// the prewarm job does.
void holdGemmLibraryLoadingForTesting(int device, bool on);

}  // namespace kiln::jit

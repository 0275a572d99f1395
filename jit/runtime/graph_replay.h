#pragma once
// Note [CUDA graph replay]
// At small batch a plan's time goes to the host: every step is a launch (and an ATen dispatch for
// library and eager steps). Once a plan is warm, kiln captures it into a CUDA graph per exact input
// sizes and replays that graph instead: one launch a call.
//
// When. A call is replayed when all its inputs are CUDA tensors of one device, the caller's stream
// is not itself capturing, and the plan runs its own bucket's kernels (not the generic set, nothing
// compiling for it). The first call of given sizes runs step by step; the second captures; later
// ones replay. So one-off sizes never pay for a capture.
//
// Capture. On a stream of its own (so cuBLAS/cuDNN workspaces that the graph bakes in are not
// shared with other work): the call's real inputs run step by step there first (that is the call's
// result, and it initialises whatever the libraries set up lazily per stream), then the steps run
// again under stream capture over static input buffers, with the shape-only cache (Note
// [Shape-only steps]) bypassed so the graph recomputes those values. Memory comes from one private
// pool per plan, shared by its graphs. A capture that fails (an eager step that synchronizes, reads
// a tensor on the host, or makes a shape from data) turns graphs off for the plan, with the error
// as the reason in explain(). What can be seen up front turns them off before any capture: ops
// that draw random numbers (a replay would repeat one draw), ops known to read data on the host
// (nonzero, masked_select, unique, item, ...), scalars read from tensors at every call, and plans
// of fewer than kMinStepsForGraphs launching steps (the replay's input and output copies would cost
// more than the launches saved).
//
// Replay. Under the plan's replay lock: the caller's stream waits for the previous replay (which
// may have run on another stream), the inputs are copied into the static buffers, the graph is
// launched on the caller's stream, and the outputs are copied out of the pool, so a caller's
// tensors are never overwritten by a later replay. Params are read in place by the graph, so
// in-place updates are seen; a param whose storage moved (set_data, .to()) drops the plan's graphs.
//
// Invalidation. Graphs are keyed by the kernel set they launched: a swap (background specialization
// or the tuner) drops them, and they are captured again on the next calls. At most kGraphsPerPlan
// graphs per plan (LRU). KILN_CUDA_GRAPHS=auto|off (Options::cudaGraphs) turns it on or off; auto
// by default since its GPU tests and the real-models benchmark ran (bench/RESULTS.md, 2026-12-05).
//
// Not at::cuda::CUDAGraph. In torch 2.11 its capture_begin registers the device's default CUDA
// generator and marks it capturing for the whole process until capture_end: while kiln captured on
// one thread, a random op on any other thread threw "Offset increment outside graph capture
// encountered unexpectedly", and a capture that failed left the generator so for good (found on an
// H100, 2026-12-05). Plans with random ops are never captured, so kiln needs none of that: it
// captures with the runtime API and the caching allocator's pool calls (StreamGraph in
// graph_replay.cpp), and a random op that slipped through fails the capture, which turns graphs
// off.
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace kiln::jit {

class GraphReplay {
 public:
  static constexpr size_t kGraphsPerPlan = 8;
  // Calls of one exact input size before its graph is captured (the first runs step by step).
  static constexpr int kWarmCalls = 2;
  // Plans with fewer launching steps a call (fused groups, library and eager ops) stay ungraphed.
  static constexpr size_t kMinStepsForGraphs = 4;

  // `offReason` non-empty: graphs are off for this plan from the start, for that reason.
  explicit GraphReplay(std::string offReason = "");
  ~GraphReplay();
  GraphReplay(const GraphReplay&) = delete;
  GraphReplay& operator=(const GraphReplay&) = delete;

  // Runs the plan's steps: `bypassShapeOnly` under capture (Note [Shape-only steps]).
  using RunSteps =
      std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&, bool bypassShapeOnly)>;

  // The call's outputs through a graph (replayed, or just captured), or nullopt when this call
  // runs step by step. `generation`: the kernel set the call would launch (graphs of another set
  // are dropped); `ready`: whether that set may be captured (its own bucket's, nothing pending);
  // `params`: the plan's param tensors, whose storage a graph bakes in.
  std::optional<std::vector<at::Tensor>> run(const std::vector<at::Tensor>& inputs,
                                             const std::shared_ptr<const void>& generation,
                                             bool ready, const std::vector<at::Tensor>& params,
                                             const RunSteps& runSteps);

  // Empty while graphs are on; else why they are off for this plan.
  std::string offReason() const;
  uint64_t replays() const { return replays_.load(std::memory_order_relaxed); }
  uint64_t captures() const { return captures_.load(std::memory_order_relaxed); }
  size_t graphsAlive() const;

 private:
  struct Entry;
  struct Key {
    int device = 0;
    std::vector<int64_t> sizes;  // per input: its sizes, then its memory format
    bool operator==(const Key&) const = default;
  };
  static std::optional<Key> keyOf(const std::vector<at::Tensor>& inputs);
  std::vector<at::Tensor> capture(Entry& e, const std::vector<at::Tensor>& inputs,
                                  const std::vector<at::Tensor>& params, const RunSteps& runSteps);
  std::vector<at::Tensor> replay(Entry& e, const std::vector<at::Tensor>& inputs);
  void turnOff(std::string why);
  void dropGraphs();  // under mutex_
  void waitIdle();    // under mutex_: the last replay has finished on the device

  mutable std::mutex mutex_;
  std::list<Entry> entries_;  // front: most recent; under mutex_
  std::string off_;           // under mutex_
  std::atomic<bool> isOff_{false};
  struct DeviceState;
  std::unique_ptr<DeviceState> dev_;  // created at the first capture; under mutex_
  std::atomic<uint64_t> replays_{0};
  std::atomic<uint64_t> captures_{0};
};

}  // namespace kiln::jit

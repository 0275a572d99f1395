#include "jit/runtime/graph_replay.h"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>  // at::cuda::graph_pool_handle
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <atomic>
#include <stdexcept>

#include "src/support/log.h"

namespace kiln::jit {

namespace {

// One stream's capture, instantiated, with its share of the plan's private pool (Note [CUDA graph
// replay] says why not at::cuda::CUDAGraph). The allocator serves this capture's allocations from
// the pool between begin() and end(); the pool keeps them until the graph is destroyed.
class StreamGraph {
 public:
  StreamGraph(c10::DeviceIndex dev, c10::MempoolId_t pool) : dev_(dev), pool_(pool) {}
  StreamGraph(const StreamGraph&) = delete;
  StreamGraph& operator=(const StreamGraph&) = delete;

  ~StreamGraph() {
    if (state_ == State::kCapturing) abandon();
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (state_ == State::kReady) releasePool();
    (void)cudaGetLastError();
  }

  // Starts capturing `stream` (thread-local mode: other threads' CUDA calls stay legal).
  void begin(cudaStream_t stream) {
    stream_ = stream;
    // The filter runs on whichever thread allocates: only this capture's stream draws from the
    // pool.
    c10::cuda::CUDACachingAllocator::beginAllocateToPool(dev_, pool_, [this](cudaStream_t s) {
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      unsigned long long id = 0;
      return cudaStreamGetCaptureInfo(s, &status, &id) == cudaSuccess &&
             status == cudaStreamCaptureStatusActive && id == id_.load(std::memory_order_acquire);
    });
    state_ = State::kCapturing;
    cudaError_t err = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    unsigned long long id = 0;
    if (err == cudaSuccess) err = cudaStreamGetCaptureInfo(stream, &status, &id);
    if (err != cudaSuccess) {
      abandon();
      throw std::runtime_error(fmt::format("cudaStreamBeginCapture: {}", cudaGetErrorString(err)));
    }
    id_.store(id, std::memory_order_release);
  }

  // Ends the capture and instantiates the graph; throws (with the capture abandoned) on failure.
  void end() {
    cudaGraph_t graph = nullptr;
    cudaError_t err = cudaStreamEndCapture(stream_, &graph);
    c10::cuda::CUDACachingAllocator::endAllocateToPool(dev_, pool_);
    if (err == cudaSuccess && graph == nullptr) err = cudaErrorStreamCaptureInvalidated;
    if (err == cudaSuccess)
      err = cudaGraphInstantiateWithFlags(&exec_, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      exec_ = nullptr;
      state_ = State::kFailed;
      releasePool();
      throw std::runtime_error(fmt::format("ending the capture: {}", cudaGetErrorString(err)));
    }
    state_ = State::kReady;
  }

  // After a failure between begin() and end(): ends the capture if the stream is still in it and
  // gives the pool back, so the stream and the allocator work as before. Never throws.
  void abandon() noexcept {
    if (state_ != State::kCapturing) return;
    state_ = State::kFailed;
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream_, &status) == cudaSuccess &&
        status != cudaStreamCaptureStatusNone) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(stream_, &broken);
      if (broken != nullptr) cudaGraphDestroy(broken);
    }
    (void)cudaGetLastError();
    try {
      c10::cuda::CUDACachingAllocator::endAllocateToPool(dev_, pool_);
    } catch (const std::exception&) {
    }
    releasePool();
  }

  void launch(cudaStream_t stream) const {
    const cudaError_t err = cudaGraphLaunch(exec_, stream);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      throw std::runtime_error(fmt::format("cudaGraphLaunch: {}", cudaGetErrorString(err)));
    }
  }

 private:
  enum class State { kIdle, kCapturing, kReady, kFailed };

  void releasePool() noexcept {
    try {
      c10::cuda::CUDACachingAllocator::releasePool(dev_, pool_);
    } catch (const std::exception&) {
    }
  }

  c10::DeviceIndex dev_;
  c10::MempoolId_t pool_;
  cudaStream_t stream_ = nullptr;
  std::atomic<unsigned long long> id_{0};
  cudaGraphExec_t exec_ = nullptr;
  State state_ = State::kIdle;
};

}  // namespace

struct GraphReplay::Entry {
  Key key;
  int calls = 0;
  std::shared_ptr<const void> generation;  // the kernel set the graph launches
  std::unique_ptr<StreamGraph> graph;      // null until captured
  std::vector<at::Tensor> staticInputs;
  std::vector<at::Tensor> staticOutputs;  // in the pool
  std::vector<const void*> paramPtrs;     // the params' storage when captured
};

struct GraphReplay::DeviceState {
  int device = 0;
  cudaStream_t raw = nullptr;  // owned: the capture stream
  c10::cuda::CUDAStream stream;
  c10::MempoolId_t pool;
  at::cuda::CUDAEvent lastDone;  // recorded after each replay's outputs were copied out
  c10::StreamId lastStream = 0;  // where lastDone was recorded
  bool hasLast = false;

  DeviceState(int dev, cudaStream_t s)
      : device(dev),
        raw(s),
        stream(c10::cuda::getStreamFromExternal(s, static_cast<c10::DeviceIndex>(dev))),
        pool(at::cuda::graph_pool_handle()) {}
};

GraphReplay::GraphReplay(std::string offReason) : off_(std::move(offReason)) {
  isOff_.store(!off_.empty());
}

GraphReplay::~GraphReplay() {
  std::lock_guard<std::mutex> lock(mutex_);
  dropGraphs();
  if (dev_ != nullptr && dev_->raw != nullptr) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(dev_->device));
    cudaStreamSynchronize(dev_->raw);
    cudaStreamDestroy(dev_->raw);
    (void)cudaGetLastError();
  }
}

std::string GraphReplay::offReason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return off_;
}

size_t GraphReplay::graphsAlive() const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (const Entry& e : entries_) n += e.graph != nullptr;
  return n;
}

std::optional<GraphReplay::Key> GraphReplay::keyOf(const std::vector<at::Tensor>& inputs) {
  if (inputs.empty()) return std::nullopt;
  Key key;
  key.device = -1;
  for (const at::Tensor& t : inputs) {
    if (!t.defined() || !t.is_cuda()) return std::nullopt;
    if (key.device < 0) key.device = t.device().index();
    if (t.device().index() != key.device) return std::nullopt;
    key.sizes.insert(key.sizes.end(), t.sizes().begin(), t.sizes().end());
    key.sizes.push_back(static_cast<int64_t>(t.suggest_memory_format()));
  }
  return key;
}

void GraphReplay::waitIdle() {
  if (dev_ != nullptr && dev_->hasLast) dev_->lastDone.synchronize();
}

void GraphReplay::dropGraphs() {
  // Static buffers and the pool's blocks may still be read by a replay in flight.
  waitIdle();
  entries_.clear();
}

void GraphReplay::turnOff(std::string why) {
  dropGraphs();
  off_ = std::move(why);
  isOff_.store(true);
  logOnce(LogLevel::kInfo, "graphs." + off_,
          fmt::format("kiln: a plan runs without CUDA graphs: {}", off_));
}

std::optional<std::vector<at::Tensor>> GraphReplay::run(
    const std::vector<at::Tensor>& inputs, const std::shared_ptr<const void>& generation,
    bool ready, const std::vector<at::Tensor>& params, const RunSteps& runSteps) {
  if (isOff_.load(std::memory_order_relaxed)) return std::nullopt;
  std::optional<Key> key = keyOf(inputs);
  if (!key) return std::nullopt;
  const c10::DeviceIndex dev = static_cast<c10::DeviceIndex>(key->device);
  c10::cuda::CUDAGuard guard(dev);
  // The caller capturing its own graph gets the steps, which become part of it.
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None)
    return std::nullopt;

  std::lock_guard<std::mutex> lock(mutex_);
  if (isOff_.load(std::memory_order_relaxed)) return std::nullopt;
  auto it = entries_.begin();
  for (; it != entries_.end(); ++it)
    if (it->key == *key) break;
  if (it == entries_.end()) {
    entries_.emplace_front();
    entries_.front().key = std::move(*key);
    // Evict the least recent beyond the bound (its buffers once no replay reads them).
    if (entries_.size() > kGraphsPerPlan) {
      waitIdle();
      entries_.pop_back();
    }
    it = entries_.begin();
  } else {
    entries_.splice(entries_.begin(), entries_, it);
  }
  Entry& e = entries_.front();
  ++e.calls;
  if (e.graph != nullptr) {
    bool stale = e.generation != generation || e.paramPtrs.size() != params.size();
    for (size_t i = 0; !stale && i < params.size(); ++i)
      stale = params[i].defined() && params[i].data_ptr() != e.paramPtrs[i];
    if (!stale) return replay(e, inputs);
    // A swapped kernel set or a moved param: capture again (the sizes are warm already).
    waitIdle();
    e.staticOutputs.clear();  // pool blocks: before the graph gives its share of the pool back
    e.staticInputs.clear();
    e.graph.reset();
  }
  if (!ready || e.calls < kWarmCalls) return std::nullopt;
  e.generation = generation;
  return capture(e, inputs, params, runSteps);
}

namespace {

// dst <- src on `stream`: one cudaMemcpyAsync when both are dense with the same strides (the
// usual case; an ATen copy costs a dispatch more), else an ATen copy.
void copyInto(const at::Tensor& dst, const at::Tensor& src, cudaStream_t stream) {
  if (dst.scalar_type() == src.scalar_type() && dst.sizes() == src.sizes() &&
      dst.strides() == src.strides() && src.is_non_overlapping_and_dense()) {
    const size_t bytes = static_cast<size_t>(src.numel()) * src.element_size();
    if (bytes == 0 || cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), bytes,
                                      cudaMemcpyDeviceToDevice, stream) == cudaSuccess)
      return;
    (void)cudaGetLastError();
  }
  dst.copy_(src, /*non_blocking=*/true);
}

// A copy of a static output, with its strides, allocated on the caller's stream.
at::Tensor copyOut(const at::Tensor& t, cudaStream_t stream) {
  if (!t.is_cuda() || !t.is_non_overlapping_and_dense()) return t.clone();
  at::Tensor out = at::empty_strided(t.sizes(), t.strides(), t.options());
  copyInto(out, t, stream);
  return out;
}

}  // namespace

std::vector<at::Tensor> GraphReplay::replay(Entry& e, const std::vector<at::Tensor>& inputs) {
  at::cuda::CUDAStream stream = at::cuda::getCurrentCUDAStream(dev_->device);
  // The previous replay, on another stream, has copied its outputs out before this one
  // overwrites the static buffers (on the same stream, stream order says so already).
  if (dev_->hasLast && dev_->lastStream != stream.id()) dev_->lastDone.block(stream);
  for (size_t i = 0; i < inputs.size(); ++i) copyInto(e.staticInputs[i], inputs[i], stream);
  e.graph->launch(stream.stream());
  std::vector<at::Tensor> outs;
  outs.reserve(e.staticOutputs.size());
  for (const at::Tensor& t : e.staticOutputs) outs.push_back(copyOut(t, stream));
  dev_->lastDone.record(stream);
  dev_->lastStream = stream.id();
  dev_->hasLast = true;
  replays_.fetch_add(1, std::memory_order_relaxed);
  return outs;
}

std::vector<at::Tensor> GraphReplay::capture(Entry& e, const std::vector<at::Tensor>& inputs,
                                             const std::vector<at::Tensor>& params,
                                             const RunSteps& runSteps) {
  const int device = e.key.device;
  const c10::DeviceIndex dev = static_cast<c10::DeviceIndex>(device);
  if (dev_ == nullptr) {
    cudaStream_t raw = nullptr;
    if (cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking) != cudaSuccess) {
      (void)cudaGetLastError();
      turnOff("could not create a capture stream");
      return runSteps(inputs, false);
    }
    dev_ = std::make_unique<DeviceState>(device, raw);
  }
  if (dev_->device != device) {  // one device per plan; another device runs step by step
    return runSteps(inputs, false);
  }
  c10::cuda::CUDAStream caller = at::cuda::getCurrentCUDAStream(dev);
  c10::cuda::CUDAStream side = dev_->stream;
  // The capture stream waits for the caller's inputs and for the last replay (the pool, the
  // workspaces baked into graphs).
  at::cuda::CUDAEvent inputsReady;
  inputsReady.record(caller);
  inputsReady.block(side);
  if (dev_->hasLast) dev_->lastDone.block(side);

  std::vector<at::Tensor> outs;
  std::string failure;
  {
    c10::cuda::CUDAStreamGuard onSide(side);
    // The call itself, step by step: its result, and the libraries' lazy per-stream setup done
    // outside the capture. A failure here is the plan's own and propagates.
    outs = runSteps(inputs, false);
    e.staticInputs.clear();
    for (const at::Tensor& t : inputs) {
      at::Tensor s = at::empty(t.sizes(), t.options().memory_format(t.suggest_memory_format()));
      s.copy_(t, true);
      e.staticInputs.push_back(std::move(s));
    }
    // The allocator refuses to share a pool whose last graph was released: a fresh one then.
    bool anyAlive = false;
    for (const Entry& other : entries_) anyAlive |= other.graph != nullptr;
    if (!anyAlive) dev_->pool = at::cuda::graph_pool_handle();
    auto graph = std::make_unique<StreamGraph>(dev, dev_->pool);
    try {
      graph->begin(side.stream());
      e.staticOutputs = runSteps(e.staticInputs, true);
      graph->end();
    } catch (const c10::Error& ex) {
      failure = ex.what_without_backtrace();
    } catch (const std::exception& ex) {
      failure = ex.what();
    }
    if (!failure.empty()) {
      e.staticOutputs.clear();  // before the pool goes back
      graph->abandon();
      graph.reset();
    }
    if (failure.empty()) e.graph = std::move(graph);
  }
  // The caller's stream continues after the capture stream's work: this call's outputs.
  at::cuda::CUDAEvent done;
  done.record(side);
  done.block(caller);
  for (const at::Tensor& t : outs)
    if (t.defined() && t.is_cuda()) t.record_stream(caller);
  dev_->lastDone.record(side);
  dev_->lastStream = side.id();
  dev_->hasLast = true;
  if (!failure.empty()) {
    if (failure.size() > 300) failure = failure.substr(0, 300) + "...";
    turnOff(fmt::format("capturing it failed: {}", failure));
    return outs;
  }
  e.paramPtrs.clear();
  for (const at::Tensor& p : params) e.paramPtrs.push_back(p.defined() ? p.data_ptr() : nullptr);
  captures_.fetch_add(1, std::memory_order_relaxed);
  return outs;
}

}  // namespace kiln::jit

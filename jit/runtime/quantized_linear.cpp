#include "jit/runtime/quantized_linear.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include <ATen/cuda/CUDAContext.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <fmt/format.h>

#include "jit/eval/aten_eval.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {

namespace {

// The record's first word: a record another build wrote in another form is not restored.
constexpr std::string_view kRecordTag = "kiln-quant-v1";

at::ScalarType storageType(QuantFormat format) {
  return format == QuantFormat::kFp8 ? at::kFloat8_e4m3fn : at::kChar;
}

bool capturing(const at::Tensor& x) {
  return x.is_cuda() &&
         c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

at::Tensor applyActivation(at::Tensor y, std::string_view activation) {
  if (activation.empty()) return y;
  if (activation == "relu") return at::relu(y);
  if (activation == "gelu") return at::gelu(y);
  if (activation == "gelu_tanh") return at::gelu(y, "tanh");
  KILN_CHECK(false, "quantised linear: unknown fused activation '{}'", activation);
  return y;
}

}  // namespace

std::string_view toString(QuantFormat format) {
  return format == QuantFormat::kFp8 ? "fp8" : "int8";
}

float quantMax(QuantFormat format) {
  return format == QuantFormat::kFp8 ? 448.0f : 127.0f;
}

std::optional<std::string> quantizeBlocker(QuantFormat format, const at::Tensor& w) {
  if (!w.defined() || w.dim() != 2) return "its weight is not a 2-d param";
  if (w.scalar_type() != at::kHalf && w.scalar_type() != at::kBFloat16)
    return fmt::format("its weight is {}, not 16-bit", c10::toString(w.scalar_type()));
  // cuBLASLt's fp8 GEMM wants K and N multiples of 16; its int8 GEMM multiples of 8.
  const int64_t align = format == QuantFormat::kFp8 ? 16 : 8;
  const int64_t n = w.size(0), k = w.size(1);
  if (n % align != 0 || k % align != 0)
    return fmt::format("{} x {} weight: the {} GEMM needs both sizes multiples of {}", n, k,
                       toString(format), align);
  return std::nullopt;
}

at::Tensor quantizeTensor(QuantFormat format, const at::Tensor& t, const at::Tensor& scale) {
  const float q = quantMax(format);
  at::Tensor scaled = t.to(at::kFloat).div(scale);
  if (format == QuantFormat::kInt8) scaled.round_();
  // clamp_ saturates +-inf too; NaN stays NaN (as the 16-bit linear would propagate it).
  return scaled.clamp_(-q, q).to(storageType(format));
}

at::Tensor quantizeTensor(QuantFormat format, const at::Tensor& t, double scale) {
  const float q = quantMax(format);
  // In t's own 16-bit dtype: three passes over 16-bit data, no float32 copy. A product beyond the
  // dtype's range is +-inf, which the clamp saturates.
  at::Tensor scaled = t.mul(1.0 / scale);
  if (format == QuantFormat::kInt8) scaled.round_();
  return scaled.clamp_(-q, q).to(storageType(format));
}

QuantizedLinear::QuantizedLinear(QuantSettings settings, std::string label,
                                 std::function<void(const std::string&)> store)
    : settings_(settings), label_(std::move(label)), store_(std::move(store)) {}

bool QuantizedLinear::hardware(const at::Tensor& x) const {
  if (!x.is_cuda()) return false;
  const cudaDeviceProp* p = at::cuda::getDeviceProperties(x.device().index());
  return p->major * 10 + p->minor >= (settings_.format == QuantFormat::kFp8 ? 89 : 80);
}

bool QuantizedLinear::deviceCan(const at::Tensor& x) const {
  if (settings_.emulate || hardware(x)) return true;
  logOnce(LogLevel::kWarn, fmt::format("quant.device.{}", toString(settings_.format)),
          fmt::format("kiln: {} linears need a CUDA device of {} or newer; on {} they run in 16 "
                      "bits (KILN_QUANT_EMULATE=1 computes them in float32 instead)",
                      toString(settings_.format),
                      settings_.format == QuantFormat::kFp8 ? "sm_89" : "sm_80", x.device().str()));
  return false;
}

std::shared_ptr<const QuantizedLinear::Weights> QuantizedLinear::weightsFor(const at::Tensor& w) {
  std::shared_ptr<const Weights> cur = weights_.load(std::memory_order_acquire);
  if (cur != nullptr && cur->data == w.const_data_ptr() && cur->version == tensorVersion(w))
    return cur;
  std::lock_guard<std::mutex> lock(mutex_);
  cur = weights_.load(std::memory_order_acquire);
  if (cur != nullptr && cur->data == w.const_data_ptr() && cur->version == tensorVersion(w))
    return cur;
  c10::InferenceMode notInference(/*enabled=*/false);
  c10::NoGradGuard noGrad;
  // The old quantised weight may still be read by GEMMs queued on other streams.
  if (cur != nullptr && w.is_cuda()) c10::cuda::device_synchronize();
  auto next = std::make_shared<Weights>();
  next->data = w.const_data_ptr();
  next->version = tensorVersion(w);
  const at::Tensor amax = w.detach().to(at::kFloat).abs().amax(1);
  next->scale = amax.clamp_min(std::numeric_limits<float>::min()).div(quantMax(settings_.format));
  next->q = quantizeTensor(settings_.format, w.detach(), next->scale.unsqueeze(1)).contiguous();
  if (settings_.format == QuantFormat::kFp8)
    next->scaleB = next->scale.unsqueeze(0).contiguous();
  else
    next->scaleB = next->scale.mul(inputScale_);
  weights_.store(next, std::memory_order_release);
  return next;
}

at::Tensor QuantizedLinear::inputScaleRows(const at::Tensor& like, int64_t rows) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const at::Tensor& t : scaleRows_)
    if (t.device() == like.device() && t.size(0) >= rows) return t.narrow(0, 0, rows);
  int64_t cap = 256;
  for (const at::Tensor& t : scaleRows_)
    if (t.device() == like.device()) cap = std::max(cap, 2 * t.size(0));
  while (cap < rows) cap *= 2;
  // Filled on the host and copied synchronously: ready before any stream reads it.
  at::Tensor t = at::full({cap, 1}, inputScale_, at::TensorOptions().dtype(at::kFloat))
                     .to(like.device(), /*non_blocking=*/false);
  scaleRows_.push_back(t);
  return t.narrow(0, 0, rows);
}

at::Tensor QuantizedLinear::gemm(const at::Tensor& x2d, const Weights& wq, const at::Tensor* bias) {
  const at::ScalarType outType = x2d.scalar_type();
  const int64_t m = x2d.size(0);
  const at::Tensor xq = quantizeTensor(settings_.format, x2d, static_cast<double>(inputScale_));
  // _int_mm takes M > 16 only; smaller calls (and devices without the instructions: Options::
  // quantEmulate) emulate.
  if (hardware(x2d) && (settings_.format == QuantFormat::kFp8 || m > 16)) {
    if (settings_.format == QuantFormat::kFp8) {
      const at::Tensor rows = inputScaleRows(x2d, m);
      if (!bf16Out_.load(std::memory_order_relaxed)) {
        try {
          std::optional<at::Tensor> b;
          if (bias != nullptr) b = bias->to(outType);
          return at::_scaled_mm(xq, wq.q.t(), rows, wq.scaleB, b, std::nullopt, outType,
                                /*use_fast_accum=*/true);
        } catch (const c10::Error& e) {
          if (outType == at::kBFloat16) throw;
          logOnce(LogLevel::kInfo, "quant.bf16out",
                  fmt::format("kiln: this card's row-wise fp8 GEMM gives bfloat16 only; fp8 "
                              "linears cast its output to {} ({})",
                              c10::toString(outType), e.what_without_backtrace()));
          bf16Out_.store(true, std::memory_order_relaxed);
        }
      }
      std::optional<at::Tensor> b;
      if (bias != nullptr) b = bias->to(at::kBFloat16);
      return at::_scaled_mm(xq, wq.q.t(), rows, wq.scaleB, b, std::nullopt, at::kBFloat16,
                            /*use_fast_accum=*/true)
          .to(outType);
    }
    at::Tensor y = at::_int_mm(xq, wq.q.t()).mul(wq.scaleB);
    if (bias != nullptr) y.add_(*bias);
    return y.to(outType);
  }
  // Emulation: the same quantised operands and scales, multiplied in float32.
  at::Tensor y = at::matmul(xq.to(at::kFloat).mul(static_cast<double>(inputScale_)),
                            wq.q.to(at::kFloat).mul(wq.scale.unsqueeze(1)).t());
  if (bias != nullptr) y.add_(*bias);
  return y.to(outType);
}

void QuantizedLinear::observe(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias) {
  const float amax = x.numel() == 0 ? 0.0f : x.detach().abs().max().to(at::kFloat).item<float>();
  std::unique_lock<std::mutex> lock(mutex_);
  if (state_.load(std::memory_order_relaxed) != State::kCalibrating) return;
  if (std::isfinite(amax)) amax_ = std::max(amax_, amax);
  if (++observed_ < settings_.calibrationCalls || freezing_) return;
  freezing_ = true;  // one thread freezes; calls meanwhile keep running in 16 bits
  inputScale_ = std::max(amax_, std::numeric_limits<float>::min()) / quantMax(settings_.format);
  lock.unlock();
  // The accuracy check: this input both ways.
  double err = std::numeric_limits<double>::infinity();
  try {
    const at::Tensor x2d = x.reshape({-1, x.size(-1)}).contiguous();
    std::shared_ptr<const Weights> wq = weightsFor(w);
    const at::Tensor yq = gemm(x2d, *wq, bias).to(at::kFloat);
    const at::Tensor y = at::linear(x2d, w, bias != nullptr ? *bias : at::Tensor()).to(at::kFloat);
    const double ref = y.norm().item<double>();
    const double diff = (yq - y).norm().item<double>();
    err = ref > 0 ? diff / ref : (diff > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  } catch (const c10::Error& e) {
    KILN_LOG_WARN("kiln: {}: the {} GEMM failed ({}); it runs in 16 bits", label_,
                  toString(settings_.format), e.what_without_backtrace());
  }
  lock.lock();
  relError_ = err;
  const bool keep = !(err <= settings_.maxError);
  if (keep)
    KILN_LOG_INFO("kiln: {} stays in 16 bits: {} error {:.4f} > {}", label_,
                  toString(settings_.format), err, settings_.maxError);
  state_.store(keep ? State::kKept : State::kQuantized, std::memory_order_release);
  const std::string rec = record();
  lock.unlock();
  if (store_) store_(rec);
}

std::optional<at::Tensor> QuantizedLinear::run(const at::Tensor& x, const at::Tensor& w,
                                               const at::Tensor* bias,
                                               std::string_view activation) {
  const State state = state_.load(std::memory_order_acquire);
  if (state == State::kKept || !deviceCan(x)) return std::nullopt;
  if (state == State::kCalibrating) {
    if (!capturing(x)) observe(x, w, bias);
    return std::nullopt;
  }
  std::shared_ptr<const Weights> wq = weightsFor(w);
  const int64_t k = x.size(-1);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = wq->q.size(0);
  if (x.numel() == 0) return at::zeros(sizes, x.options());
  at::Tensor y = gemm(x.reshape({-1, k}).contiguous(), *wq, bias);
  return applyActivation(y.view(sizes), activation);
}

std::string QuantizedLinear::record() const {
  return fmt::format("{} {} {} {:a} {} {}", kRecordTag, toString(settings_.format),
                     state_.load() == State::kQuantized ? "quantized" : "kept", inputScale_,
                     relError_, observed_);
}

bool QuantizedLinear::restore(std::string_view record) {
  std::vector<std::string> words;
  size_t at = 0;
  while (at < record.size()) {
    size_t end = record.find(' ', at);
    if (end == std::string_view::npos) end = record.size();
    words.emplace_back(record.substr(at, end - at));
    at = end + 1;
  }
  if (words.size() != 6 || words[0] != kRecordTag || words[1] != toString(settings_.format) ||
      (words[2] != "quantized" && words[2] != "kept"))
    return false;
  char* end = nullptr;
  const float scale = std::strtof(words[3].c_str(), &end);
  if (end == words[3].c_str() || *end != '\0' || !(scale > 0) || !std::isfinite(scale))
    return false;
  const double err = std::strtod(words[4].c_str(), &end);
  if (end == words[4].c_str() || *end != '\0') return false;
  int observed = 0;
  if (std::from_chars(words[5].data(), words[5].data() + words[5].size(), observed).ec !=
      std::errc())
    return false;
  std::lock_guard<std::mutex> lock(mutex_);
  if (state_.load() != State::kCalibrating || !scaleRows_.empty()) return false;
  inputScale_ = scale;
  relError_ = err;
  observed_ = observed;
  fromRecord_ = true;
  state_.store(words[2] == "quantized" ? State::kQuantized : State::kKept,
               std::memory_order_release);
  return true;
}

QuantizedLinear::Report QuantizedLinear::report() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Report r;
  r.label = label_;
  r.relError = relError_;
  r.inputScale = inputScale_;
  r.fromRecord = fromRecord_;
  switch (state_.load()) {
    case State::kCalibrating:
      r.calibrating = true;
      r.state = fmt::format("calibrating ({} of {} calls)", observed_, settings_.calibrationCalls);
      break;
    case State::kQuantized:
      r.quantized = true;
      r.state = fmt::format("{}, error {:.4f}", toString(settings_.format), relError_);
      break;
    case State::kKept:
      r.state = fmt::format("16-bit: {} error {:.4f} > {}", toString(settings_.format), relError_,
                            settings_.maxError);
      break;
  }
  if (fromRecord_) r.state += " (from the tuning records)";
  return r;
}

std::pair<at::Tensor, at::Tensor> QuantizedLinear::weights() const {
  std::shared_ptr<const Weights> w = weights_.load(std::memory_order_acquire);
  if (w == nullptr) return {};
  return {w->q, w->scale};
}

}  // namespace kiln::jit

#pragma once
// Note [Quantized linears]
// Options::precision fp8 or int8 (KILN_PRECISION) runs every linear whose weight is a param as an
// 8-bit GEMM; everything else runs in 16 bits (a float32 module is first retyped to float16, Note
// [Precision] in optimize.h).
//   Weights   quantised once, when the program is built, per output channel: w[n, :] ~ wq[n, :] *
//             sw[n], sw[n] = max|w[n, :]| / qmax (qmax 448 for e4m3, 127 for int8). A weight
//             changed in place is quantised again before the next call reads it (the stamp check
//             of Note [Derived params are snapshots]).
//   Inputs    one scale per linear, calibrated: the first Options::quantCalibrationCalls calls
//             that reach the linear run it in 16 bits and record max|x| (one host read each); the
//             largest becomes the frozen scale sa = amax / qmax. Later values beyond it saturate.
//             The scale is per linear for the whole guard family, not per bucket: a layer's input
//             range is a property of the layer and its weights, not of the batch size, and one
//             scale keeps the numerics of a request independent of which bucket served it.
//   Accuracy  when the scale freezes, the last calibration input runs both ways and relError =
//             ||y_q - y|| / ||y|| (the output before any fused activation). A linear above
//             Options::quantMaxError stays in 16 bits for good. explain() and explainJson() list
//             every linear with its error and what it runs.
//   Storage   the frozen scale, error and decision are a tuning record (cache/kernel_cache.h) keyed
//             by the program's IR, a fingerprint of its params (the float32 norm of every floating
//             param, one fused reduction when the program is built), the format and the linear's
//             position. A process that finds them runs quantised from its first call, with no
//             calibration. Weights changed in place keep the frozen input scale.
//   GEMM      fp8: at::_scaled_mm (cuBLASLt) with row-wise scales ([M, 1] of sa, [1, N] of sw), the
//             bias, and 16-bit output; int8: at::_int_mm (int32 accumulation), then acc * (sa * sw)
//             + b in float32. A fused activation (linear + relu/gelu) is applied after, in ATen.
//   Where     CUDA devices of sm_89 or newer (fp8) or sm_80 or newer (int8). Elsewhere (the CPU,
//             older cards) the linear runs in 16 bits, with one warning; Options::quantEmulate
//             computes the quantised GEMM in float32 from the same quantised operands and scales
//             instead (tests, accuracy checks without the hardware).
//   Graphs    a plan is not captured into a CUDA graph while any of its linears is calibrating
//             (the host reads would fail under capture); a call on a capturing stream skips the
//             observation.
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

namespace kiln::jit {

enum class QuantFormat : uint8_t { kFp8, kInt8 };
std::string_view toString(QuantFormat format);  // "fp8", "int8"
// The largest quantised magnitude: 448 (e4m3) or 127 (int8).
float quantMax(QuantFormat format);

struct QuantSettings {
  QuantFormat format = QuantFormat::kFp8;
  int calibrationCalls = 8;
  double maxError = 0.08;
  bool emulate = false;
};

// Why a linear with weight `w` cannot run in `format` (sizes the GEMM cannot take, a dtype that is
// not 16-bit), or nullopt when it can.
std::optional<std::string> quantizeBlocker(QuantFormat format, const at::Tensor& w);

// `t` quantised with scale `scale` (a float32 tensor broadcasting against t): round(t / scale),
// saturated to +-quantMax, in e4m3 or int8.
at::Tensor quantizeTensor(QuantFormat format, const at::Tensor& t, const at::Tensor& scale);
// The same with one scale, computed in t's dtype (the activations' path: no device scalar, no
// float32 copy). t / scale rounds to t's dtype first.
at::Tensor quantizeTensor(QuantFormat format, const at::Tensor& t, double scale);

class QuantizedLinear {
 public:
  // `label` names the linear in explain() ("step 12 (linear 3)"); `store` (may be empty) keeps a
  // record once the input scale freezes.
  QuantizedLinear(QuantSettings settings, std::string label,
                  std::function<void(const std::string&)> store);
  QuantizedLinear(const QuantizedLinear&) = delete;
  QuantizedLinear& operator=(const QuantizedLinear&) = delete;

  // act(x w^T + b) through the 8-bit GEMM, or nullopt: the caller runs the linear in 16 bits (it is
  // calibrating, stays in 16 bits, or the device cannot run the format). `activation`: "", "relu"
  // or "gelu" (the linear's fused activation).
  std::optional<at::Tensor> run(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias,
                                std::string_view activation);

  bool calibrating() const { return state_.load(std::memory_order_acquire) == State::kCalibrating; }
  // Restores a frozen decision from a stored record; false (and nothing changes) when `record` is
  // not one this build wrote.
  bool restore(std::string_view record);

  struct Report {
    std::string label;
    std::string state;       // "calibrating (3 of 8 calls)", "fp8", "16-bit: error 0.12 > 0.08"
    double relError = -1;    // -1 until frozen
    float inputScale = 0;    // sa, 0 until frozen
    bool quantized = false;  // runs the 8-bit GEMM
    bool fromRecord = false;
    bool calibrating = false;  // its input scale is not frozen yet
  };
  Report report() const;

  // The quantised weight and its per-channel scales as the last call used them (tests).
  std::pair<at::Tensor, at::Tensor> weights() const;

 private:
  enum class State : uint8_t { kCalibrating, kQuantized, kKept };
  struct Weights {
    at::Tensor q;       // [N, K] e4m3 or int8
    at::Tensor scale;   // [N] float32
    at::Tensor scaleB;  // fp8: [1, N]; int8: sa * sw, [N]
    const void* data = nullptr;
    int64_t version = 0;
  };
  bool hardware(const at::Tensor& x) const;   // x's device has the format's GEMM
  bool deviceCan(const at::Tensor& x) const;  // hardware, or emulation is on (else warns once)
  std::shared_ptr<const Weights> weightsFor(const at::Tensor& w);
  at::Tensor inputScaleRows(const at::Tensor& like, int64_t rows);
  at::Tensor gemm(const at::Tensor& x2d, const Weights& wq, const at::Tensor* bias);
  void observe(const at::Tensor& x, const at::Tensor& w, const at::Tensor* bias);
  std::string record() const;

  const QuantSettings settings_;
  const std::string label_;
  const std::function<void(const std::string&)> store_;
  std::atomic<State> state_{State::kCalibrating};
  mutable std::mutex mutex_;  // guards the fields below
  int observed_ = 0;
  bool freezing_ = false;
  float amax_ = 0;
  float inputScale_ = 0;
  double relError_ = -1;
  bool fromRecord_ = false;
  std::atomic<std::shared_ptr<const Weights>> weights_;
  // [rows, 1] float32 tensors of sa per device, grown as M grows; every one ever made stays alive,
  // so a GEMM queued on another stream (or baked into a CUDA graph) never reads freed memory.
  std::vector<at::Tensor> scaleRows_;
  std::atomic<bool> bf16Out_{false};  // this card's row-wise fp8 GEMM gives bfloat16 only
};

}  // namespace kiln::jit

#include "jit/tuner/tuner.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <tuple>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cache/kernel_cache.h"
#include "codegen/kernel_abi.h"
#include "jit/eval/aten_eval.h"
#include "jit/runtime/against_module.h"
#include "jit/runtime/kernel_launcher.h"
#include "jit/runtime/plan.h"
#include "jit/runtime/session.h"
#include "jit/tuner/records.h"
#include "src/ir/printer.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {

using Clock = std::chrono::steady_clock;

// Note [Tuning runs]
// Inputs are random tensors of the bucket's representative sizes (its upper edges), as many
// copies as fit in 256 MB up to 4, launched in rotation so that small buckets are not timed out
// of L2 alone. A sample is back-to-back launches between two CUDA events on a pool stream (5; or,
// beside traffic, as many as fill 0.1 ms, at least one), 9 samples after 3 warm-up launches.
// Outputs of the first copy are compared with the incumbent's
// (tolerance by dtype; NaN equal to NaN).
//
// Note [Tuning beside traffic]
// The lab shares the GPU with the requests it must not slow down. A request kernel that arrives
// while a lab kernel holds the SMs waits for it, so with KILN_TUNE=background the lab keeps its
// bursts short (samples of about 0.1 ms, at least one launch) and its share of GPU time small:
// after each burst it sleeps until its launches were at most `gpuShare` of the wall time. With
// 2% the H200 run of kiln-tune-bench (2026-12-02) saw request p99 during tuning at up to 1.34x
// the p50 after it; at 0.5% fewer than one request in a hundred can meet a lab kernel, so p99 is
// left alone, and a kernel of 0.2 ms per launch costs about half a second of wall time per
// variant. The pauses are cut short when the session stops. With KILN_TUNE=eager (the caller
// asked to wait) and in kiln-warmup --tune it runs flat out.
class CudaLab final : public TuningLab {
 public:
  CudaLab(double gpuShare, const Session& session) : gpuShare_(gpuShare), session_(session) {}

  bool prepare(const Program& program, size_t k, const KernelStep& incumbent,
               const std::vector<int64_t>& symbols) override {
    (void)program;
    (void)k;
    sets_.clear();
    reference_.clear();
    symbols_ = symbols;
    try {
      device_ = at::Device(at::kCUDA, c10::cuda::current_device());
      const codegen::KernelAbi& abi = incumbent.abi;
      int64_t bytes = 0;
      for (int i = 0; i < abi.numInputs; ++i) {
        const codegen::TensorArg& arg = abi.tensors[static_cast<size_t>(i)];
        int64_t numel = 1;
        for (int64_t d : concreteShape(arg.shape, symbols_)) numel *= d;
        bytes += numel * static_cast<int64_t>(ir::byteSize(arg.dtype));
      }
      const int copies = static_cast<int>(
          std::clamp<int64_t>((int64_t{256} << 20) / std::max<int64_t>(bytes, 1), 1, 4));
      for (int c = 0; c < copies; ++c) {
        std::vector<at::Tensor> inputs;
        for (int i = 0; i < abi.numInputs; ++i) {
          const codegen::TensorArg& arg = abi.tensors[static_cast<size_t>(i)];
          const auto shape = concreteShape(arg.shape, symbols_);
          const auto opts = at::TensorOptions().device(device_);
          const at::ScalarType st = toAtenDType(arg.dtype);
          at::Tensor t;
          if (st == at::kBool)
            t = at::randint(0, 2, shape, opts.dtype(at::kLong)).to(at::kBool);
          else if (arg.indexBound >= 0)  // an embedding's ids (Note [Embeddings in kernels])
            t = at::randint(0, std::max<int64_t>(arg.indexBound, 1), shape, opts.dtype(st));
          else if (at::isIntegralType(st, /*includeBool=*/false))
            t = at::randint(-8, 8, shape, opts.dtype(st));
          else
            t = at::randn(shape, opts.dtype(at::kFloat)).to(st);
          inputs.push_back(std::move(t));
        }
        sets_.push_back(std::move(inputs));
      }
      return true;
    } catch (const std::exception& e) {
      logOnce(LogLevel::kInfo, "tune.prepare." + incumbent.name,
              fmt::format("kiln: cannot tune {}: {}", incumbent.name, e.what()));
      return false;
    }
  }

  std::optional<Result> measure(const KernelStep& step) override {
    if (step.kernel == nullptr || sets_.empty()) return std::nullopt;
    try {
      const codegen::KernelAbi& abi = step.abi;
      const int ordinal = device_.index();
      c10::cuda::CUDAGuard guard(device_);
      c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, ordinal);
      const std::vector<int64_t> domain = codegen::domainSizes(abi, symbols_);
      struct Launch {
        codegen::KilnArgs args;
        codegen::LaunchDims dims;
        std::vector<at::Tensor> outputs;
      };
      std::vector<Launch> launches;
      for (const std::vector<at::Tensor>& inputs : sets_) {
        Launch l;
        std::vector<codegen::TensorView> views;
        for (const at::Tensor& t : inputs) views.push_back({t.data_ptr(), t.sizes(), t.strides()});
        for (size_t i = static_cast<size_t>(abi.numInputs); i < abi.tensors.size(); ++i) {
          const codegen::TensorArg& arg = abi.tensors[i];
          l.outputs.push_back(
              at::empty(concreteShape(arg.shape, symbols_),
                        at::TensorOptions().device(device_).dtype(toAtenDType(arg.dtype))));
          const at::Tensor& t = l.outputs.back();
          views.push_back({t.data_ptr(), t.sizes(), t.strides()});
        }
        l.args = codegen::packArgs(abi, domain, views);
        l.dims =
            codegen::launchDims(step.launch, abi, l.args, step.kernel->multiprocessors(ordinal));
        launches.push_back(std::move(l));
      }
      auto run = [&](size_t i) {
        Launch& l = launches[i % launches.size()];
        step.kernel->launch(ordinal, l.dims, l.args, stream.stream());
      };
      auto timed = [&](int first, int count) {
        at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
        start.record(stream);
        for (int b = 0; b < count; ++b) run(static_cast<size_t>(first + b));
        stop.record(stream);
        stop.synchronize();
        return static_cast<double>(start.elapsed_time(stop));
      };
      // Sleeps in short slices, so that a session shutting down (which waits for its background
      // jobs) is not held up by a long pause; false once it is.
      auto pace = [&](double busyMs) {
        if (gpuShare_ >= 1.0) return !session_.backgroundStopping();
        const auto until =
            Clock::now() +
            std::chrono::duration_cast<Clock::duration>(
                std::chrono::duration<double, std::milli>(busyMs * (1.0 / gpuShare_ - 1.0)));
        while (!session_.backgroundStopping()) {
          const auto now = Clock::now();
          if (now >= until) return true;
          std::this_thread::sleep_for(
              std::min<Clock::duration>(until - now, std::chrono::milliseconds(10)));
        }
        return false;
      };
      // Warm-up, one launch at a time beside traffic; the last one sizes the samples.
      double probe = 0;
      for (int i = 0; i < 3; ++i)
        if (!pace(probe = timed(i, 1))) return std::nullopt;
      const int batch =
          gpuShare_ < 1.0 ? std::clamp(static_cast<int>(0.1 / std::max(probe, 1e-3)), 1, 10) : 5;
      Result r;
      constexpr int kSamples = 9;
      for (int s = 0; s < kSamples; ++s) {
        const double ms = timed(s * batch, batch);
        r.timing.ms.push_back(ms / batch);
        if (!pace(ms)) return std::nullopt;
      }
      run(0);
      stream.synchronize();
      const std::vector<at::Tensor>& out = launches[0].outputs;
      if (reference_.empty()) {
        for (const at::Tensor& t : out) reference_.push_back(t.clone());
        r.matches = true;
      } else {
        r.matches = out.size() == reference_.size();
        for (size_t i = 0; r.matches && i < out.size(); ++i)
          r.matches = close(out[i], reference_[i]);
      }
      return r;
    } catch (const std::exception& e) {
      logOnce(LogLevel::kInfo, "tune.measure." + step.name,
              fmt::format("kiln: variant {} did not run: {}", step.name, e.what()));
      return std::nullopt;
    }
  }

 private:
  static bool close(const at::Tensor& a, const at::Tensor& b) {
    if (!at::isFloatingType(a.scalar_type())) return at::equal(a, b);
    const double tol =
        a.scalar_type() == at::kFloat ? 1e-4 : (a.scalar_type() == at::kHalf ? 1e-2 : 5e-2);
    return at::allclose(a.to(at::kFloat), b.to(at::kFloat), tol, tol, /*equal_nan=*/true);
  }

  std::optional<PlanTimings> timeRuns(const std::function<void()>& a,
                                      const std::function<void()>& b, at::Device device) override {
    if (!device.is_cuda()) return std::nullopt;
    PlanTimings t;
    std::tie(t.a, t.b) = timeInTurns(a, b, device);
    t.how = "step by step";
    return t;
  }

  const double gpuShare_;
  const Session& session_;  // outlives its background jobs, and so this lab
  at::Device device_{at::kCUDA, 0};
  std::vector<int64_t> symbols_;
  std::vector<std::vector<at::Tensor>> sets_;
  std::vector<at::Tensor> reference_;
};

double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

std::unique_ptr<TuningLab> makeCudaLab(const Session& session) {
  if (session.driver() == nullptr) return nullptr;
  // Note [Tuning beside traffic].
  return std::make_unique<CudaLab>(session.options().tune == TuneMode::kBackground ? 0.005 : 1.0,
                                   session);
}

TuneOptions tuneOptionsFor(const kiln::Options& options) {
  TuneOptions t;
  t.maxVariants = options.tuneMaxVariants;
  t.maxSeconds = options.tuneSeconds;
  return t;
}

namespace {

// The module (`alive`, may be null) or the session went away: a job stops between variants.
bool jobStopped(const std::atomic<bool>* alive, const Session& session) {
  return (alive != nullptr && !alive->load()) || session.backgroundStopping();
}

// The kernel part of tunePlan: each kernel's variants, then the check of the new set on the plan
// (Note [Swaps checked on the plan]) and the swap.
void tuneKernels(Plan& plan, TuningLab& lab, const Session& session, const std::string& arch,
                 const TuneOptions& options, const std::atomic<bool>* alive,
                 const std::vector<at::Tensor>* callInputs, TuneReport& report) {
  auto stopped = [&] { return jobStopped(alive, session); };
  std::shared_ptr<const KernelSet> current = plan.kernels();
  if (current == nullptr || current->generic || current->pending() || arch.empty()) return;
  const Program& program = *plan.program();
  const std::vector<int64_t>& symbols = current->bucketInfo.symbolHint;
  const std::string bucket =
      symbols.empty() ? std::string() : fmt::format("bucket of [{}]: ", fmt::join(symbols, ", "));
  const auto t0 = Clock::now();
  auto next = std::make_shared<KernelSet>(*current);
  struct PendingRecord {
    size_t kernel;
    tuner::TuningRecord winner;
  };
  std::vector<PendingRecord> records;  // saved once the set is checked
  for (size_t k = 0; k < current->kernels.size(); ++k) {
    const KernelStep& incumbent = current->kernels[k];
    if (incumbent.state != KernelState::kReady) continue;
    if (stopped()) {
      report.cancelled = true;
      break;
    }
    if (!lab.prepare(program, k, incumbent, symbols)) continue;
    std::optional<TuningLab::Result> base = lab.measure(incumbent);
    if (!base) continue;
    ++report.kernels;
    std::vector<KernelStep> variants;
    std::vector<tuner::Candidate> measured;
    for (const codegen::ScheduleParams& p :
         codegen::candidateSchedules(program.group(k), current->bucketInfo)) {
      if (p == incumbent.schedule) continue;
      if (static_cast<int>(variants.size()) >= options.maxVariants ||
          secondsSince(t0) > options.maxSeconds)
        break;
      if (stopped()) {
        report.cancelled = true;
        break;
      }
      KernelSet one;
      one.bucket = current->bucket;
      one.bucketInfo = current->bucketInfo;
      one.kernels.push_back(
          emitVariant(program.graph(), program.group(k), p, current->bucketInfo, arch));
      if (one.kernels[0].state != KernelState::kPending) continue;
      compileKernels(one, arch, session, /*background=*/true, alive);
      if (one.kernels[0].state != KernelState::kReady) continue;
      std::optional<TuningLab::Result> r = lab.measure(one.kernels[0]);
      ++report.variantsTried;
      if (!r) continue;
      variants.push_back(std::move(one.kernels[0]));
      measured.push_back({r->timing, r->matches});
    }
    const int best = tuner::pickBest(base->timing, measured, options.decision);
    if (best < 0) {
      report.lines.push_back(fmt::format("{}{} [{}]: kept after {} variants", bucket,
                                         incumbent.name, codegen::toString(incumbent.schedule),
                                         variants.size()));
      continue;
    }
    const tuner::Decision d = tuner::decide(
        base->timing, measured[static_cast<size_t>(best)].timing, true, options.decision);
    KernelStep winner = std::move(variants[static_cast<size_t>(best)]);
    winner.tuned = true;
    report.lines.push_back(fmt::format("{}{} [{}] -> {} [{}]: {}, {} variants", bucket,
                                       incumbent.name, codegen::toString(incumbent.schedule),
                                       winner.name, codegen::toString(winner.schedule), d.reason,
                                       variants.size()));
    records.push_back({k, {winner.schedule, d.speedup, static_cast<int>(variants.size())}});
    next->kernels[k] = std::move(winner);
    ++report.replaced;
  }
  if (records.empty()) return;
  auto save = [&] {
    for (const PendingRecord& r : records)
      tuner::saveRecord(session.kernelCache(), program.graph(), program.group(r.kernel),
                        current->bucket, arch, r.winner);
  };
  if (stopped()) {  // no swap; what was measured still holds for later processes
    save();
    return;
  }
  // Note [Swaps checked on the plan].
  if (callInputs != nullptr && !callInputs->empty()) {
    std::optional<TuningLab::PlanTimings> t;
    try {
      t = lab.timeRuns([&] { plan.runWith(*next, *callInputs); },
                       [&] { plan.runWith(*current, *callInputs); }, callInputs->front().device());
    } catch (const std::exception& e) {
      report.lines.push_back(fmt::format(
          "{}plan check: the tuned kernels failed on a real call's inputs, so they are not "
          "swapped in: {}",
          bucket, e.what()));
      report.rolledBack = true;
      report.replaced = 0;
      return;
    }
    if (t) {
      // The old set is the candidate: it takes the plan back only if faster beyond the noise.
      const tuner::Decision d =
          tuner::decide(t->a, t->b, /*candidateCorrect=*/true, options.decision);
      report.rolledBack = d.replace;
      report.lines.push_back(fmt::format(
          "{}plan check: {:.3f} ms with the tuned kernels, {:.3f} ms without (medians of {}, {}): "
          "{}",
          bucket, t->a.median(), t->b.median(), std::min(t->a.ms.size(), t->b.ms.size()), t->how,
          d.replace ? "rolled back (without them " + d.reason + ")" : "swapped in"));
      if (report.rolledBack) {
        KILN_LOG_INFO("kiln: {}", report.lines.back());
        report.replaced = 0;
        return;
      }
    }
  }
  save();
  plan.swapKernels(next);
}

std::string gemmChoiceSignature(const Program& program) {
  return "plan gemm choice\n" + ir::print(program.graph());
}

// Note [Library or kiln GEMM on the plan].
void chooseGemms(Plan& plan, TuningLab& lab, const Session& session, const std::string& arch,
                 const TuneOptions& options, const std::vector<at::Tensor>* callInputs,
                 TuneReport& report) {
  const Program& program = *plan.program();
  const size_t steps = program.kilnGemmSteps();
  std::shared_ptr<const KernelSet> current = plan.kernels();
  if (steps == 0 || current == nullptr || current->generic || current->pending()) return;
  const std::string prefix = fmt::format(
      "kiln GEMM or cuBLAS for {} linear{} + gelu on the plan: ", steps, steps == 1 ? "" : "s");
  auto apply = [&](bool library) {
    if (library == current->libraryGemms) return;
    auto next = std::make_shared<KernelSet>(*current);
    next->libraryGemms = library;
    plan.swapKernels(next);
  };
  cache::KernelCache* records = tuningRecords(session);
  if (records != nullptr) {
    try {
      if (std::optional<std::string> stored = records->getTuningRecord(
              gemmChoiceSignature(program), current->bucket, arch, codegen::kCodegenVersion);
          stored && (*stored == "library" || *stored == "kiln")) {
        apply(*stored == "library");
        report.lines.push_back(prefix + *stored + " (from the tuning records)");
        return;
      }
    } catch (const std::exception& e) {
      KILN_LOG_WARN("kiln: reading a stored GEMM choice failed: {}", e.what());
    }
  }
  if (callInputs == nullptr || callInputs->empty()) return;
  auto other = std::make_shared<KernelSet>(*current);
  other->libraryGemms = !current->libraryGemms;
  std::optional<TuningLab::PlanTimings> t;
  try {
    t = lab.timeRuns([&] { plan.runWith(*current, *callInputs); },
                     [&] { plan.runWith(*other, *callInputs); }, callInputs->front().device());
  } catch (const std::exception& e) {
    report.lines.push_back(prefix + "not compared: " + e.what());
    return;
  }
  if (!t) return;
  // The other choice is the candidate: it must win beyond the noise.
  const tuner::Decision d = tuner::decide(t->a, t->b, /*candidateCorrect=*/true, options.decision);
  const bool library = d.replace ? other->libraryGemms : current->libraryGemms;
  const double kilnMs = current->libraryGemms ? t->b.median() : t->a.median();
  const double libraryMs = current->libraryGemms ? t->a.median() : t->b.median();
  report.lines.push_back(prefix + fmt::format("{:.3f} ms with kiln's GEMM, {:.3f} ms with cuBLAS "
                                              "(medians of {}, {}): {} ({})",
                                              kilnMs, libraryMs,
                                              std::min(t->a.ms.size(), t->b.ms.size()), t->how,
                                              library ? "cuBLAS" : "kiln's GEMM", d.reason));
  if (d.replace) plan.swapKernels(other);
  if (records != nullptr) {
    try {
      records->putTuningRecord(gemmChoiceSignature(program), current->bucket, arch,
                               codegen::kCodegenVersion, library ? "library" : "kiln");
    } catch (const std::exception& e) {
      KILN_LOG_WARN("kiln: storing the GEMM choice failed: {}", e.what());
    }
  }
}

}  // namespace

TuneReport tunePlan(Plan& plan, TuningLab& lab, const Session& session, const std::string& arch,
                    const TuneOptions& options, const std::atomic<bool>* alive,
                    const std::vector<at::Tensor>* callInputs) {
  TuneReport report;
  tuneKernels(plan, lab, session, arch, options, alive, callInputs, report);
  if (!report.cancelled && !jobStopped(alive, session) && !arch.empty())
    chooseGemms(plan, lab, session, arch, options, callInputs, report);
  return report;
}

}  // namespace kiln::jit

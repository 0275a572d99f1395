#include "integrations/warmup/warmup.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "cache/kernel_cache.h"
#include "jit/capture/capture.h"
#include "jit/eval/aten_eval.h"
#include "jit/nvrtc.h"
#include "jit/runtime/optimize.h"
#include "jit/runtime/plan.h"
#include "jit/runtime/program.h"
#include "jit/runtime/session.h"
#include "jit/tuner/tuner.h"
#include "src/support/log.h"

namespace kiln::warmup {
namespace {

using Clock = std::chrono::steady_clock;

// LibTorch messages carry a C++ backtrace and several lines of context. Keep one line: the
// error itself, which a TorchScript interpreter failure puts last ("RuntimeError: ...").
std::string shortMessage(const std::exception& e) {
  std::string msg;
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e))
    msg = c10e->what_without_backtrace();
  else
    msg = e.what();
  std::vector<std::string> lines;
  size_t start = 0;
  while (start <= msg.size()) {
    size_t nl = msg.find('\n', start);
    std::string line = msg.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (!line.empty()) lines.push_back(line);
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  if (lines.empty()) return "(no message)";
  if (lines.size() > 1 && lines.back().find("Error: ") != std::string::npos) return lines.back();
  return lines.size() == 1 ? lines.front() : lines.front() + " ...";
}

// KILN_* overrides, except those the command line sets: a flag must win over the environment.
EnvLookup filteredEnv(const EnvLookup& env, const WarmupArgs& args) {
  bool hideCacheDir = args.cacheDir.has_value();
  bool hideArch = args.arch.has_value();
  bool hideTune = args.tune;
  bool hidePrecision = args.precision.has_value();
  return [env, hideCacheDir, hideArch, hideTune,
          hidePrecision](std::string_view name) -> std::optional<std::string> {
    if (name == "KILN_DISK_CACHE" || name == "KILN_DISABLE") return std::nullopt;
    if (hideTune && name == "KILN_TUNE") return std::nullopt;
    if (hidePrecision && name == "KILN_PRECISION") return std::nullopt;
    if (hideCacheDir && name == "KILN_CACHE_DIR") return std::nullopt;
    if (hideArch && name == "KILN_ARCH") return std::nullopt;
    return env(name);
  };
}

// "x[8,16,64] mask[8,1,64]".
std::string shapesLabel(const std::vector<InputSpec>& inputs,
                        const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < shapes.size(); ++i)
    parts.push_back(fmt::format("{}[{}]", inputs[i].name, fmt::join(shapes[i], ",")));
  return fmt::format("{}", fmt::join(parts, " "));
}

std::string shapesLabel(const std::vector<InputSpec>& inputs,
                        const std::vector<c10::IValue>& tensors) {
  std::vector<std::vector<int64_t>> shapes;
  for (const c10::IValue& t : tensors) shapes.push_back(t.toTensor().sizes().vec());
  return shapesLabel(inputs, shapes);
}

// UsageError unless the model's forward takes as many inputs as --input gives.
void checkArity(const torch::jit::Module& module, const WarmupArgs& args) {
  auto forward = module.find_method("forward");
  if (!forward) throw WarmupError(fmt::format("{} has no forward method", args.model));
  const auto& schemaArgs = forward->function().getSchema().arguments();
  std::vector<std::string> names;
  size_t required = 0;
  for (size_t i = 1; i < schemaArgs.size(); ++i) {
    names.push_back(schemaArgs[i].name());
    required += schemaArgs[i].default_value().has_value() ? 0 : 1;
  }
  if (args.inputs.size() < required || args.inputs.size() > names.size())
    throw UsageError(fmt::format("--input: {}'s forward takes {} input{} ({}), got {}", args.model,
                                 names.size(), names.size() == 1 ? "" : "s", fmt::join(names, ", "),
                                 args.inputs.size()));
}

// An example input: normal noise for floating dtypes (float32 when traced so, Note [Tracing in
// float32]), ones for integer and bool inputs (token id 1 and "attend" are valid for any model).
at::Tensor exampleInput(ir::DType dtype, const std::optional<ir::DType>& retypeTo,
                        const std::vector<int64_t>& shape, const at::Device& device) {
  const auto on = at::TensorOptions().device(device);
  if (!ir::isFloating(dtype)) return at::ones(shape, on.dtype(jit::toAtenDType(dtype)));
  const ir::DType traced = retypeTo ? ir::DType::kFloat32 : dtype;
  return at::randn(shape, on.dtype(jit::toAtenDType(traced)));
}

// Note [Calibrating in the warm-up]: FILE's samples, checked against --input and made as the
// warm-up's examples are (on `device`, floating inputs in float32 when traced so).
std::vector<std::vector<c10::IValue>> loadCalibration(const WarmupArgs& args,
                                                      const std::optional<ir::DType>& retypeTo,
                                                      const at::Device& device) {
  const std::string& path = *args.calibrate;
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof())
    throw WarmupError(fmt::format("--calibrate {}: cannot read it", path));
  c10::IValue all;
  try {
    all = torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    throw WarmupError(
        fmt::format("--calibrate {}: not a file torch.save wrote: {}", path, shortMessage(e)));
  }
  std::vector<c10::IValue> items;
  if (all.isList())
    for (const c10::IValue& v : all.toListRef()) items.push_back(v);
  else if (all.isTuple())
    items = all.toTupleRef().elements().vec();
  else
    throw WarmupError(
        fmt::format("--calibrate {}: expected a list of samples, got {}", path, all.tagKind()));
  if (items.empty()) throw WarmupError(fmt::format("--calibrate {}: holds no samples", path));
  std::vector<std::vector<c10::IValue>> samples;
  for (size_t k = 0; k < items.size(); ++k) {
    std::vector<c10::IValue> tensors;
    const c10::IValue& item = items[k];
    if (item.isTensor())
      tensors.push_back(item);
    else if (item.isTuple())
      tensors = item.toTupleRef().elements().vec();
    else if (item.isList())
      for (const c10::IValue& v : item.toListRef()) tensors.push_back(v);
    if (tensors.size() != args.inputs.size())
      throw WarmupError(fmt::format(
          "--calibrate {}: sample {} has {} {}, the model takes {} (--input)", path, k,
          tensors.size(), item.isTensor() || item.isTuple() || item.isList() ? "tensors" : "values",
          args.inputs.size()));
    std::vector<c10::IValue> sample;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const InputSpec& spec = args.inputs[i];
      if (!tensors[i].isTensor())
        throw WarmupError(
            fmt::format("--calibrate {}: sample {}, input {} (\"{}\"): expected a "
                        "tensor, got {}",
                        path, k, i, spec.name, tensors[i].tagKind()));
      at::Tensor t = tensors[i].toTensor();
      if (t.scalar_type() != jit::toAtenDType(spec.dtype)) {
        std::string got = c10::toString(t.scalar_type());
        try {
          got = std::string(dtypeName(jit::toIrDType(t.scalar_type())));  // --input's spelling
        } catch (const std::exception&) {
        }
        throw WarmupError(fmt::format(
            "--calibrate {}: sample {}, input {} (\"{}\"): dtype {}, but --input says {}", path, k,
            i, spec.name, got, dtypeName(spec.dtype)));
      }
      if (t.dim() != static_cast<int64_t>(spec.dims.size()))
        throw WarmupError(fmt::format(
            "--calibrate {}: sample {}, input {} (\"{}\"): rank {}, but --input has {} dims", path,
            k, i, spec.name, t.dim(), spec.dims.size()));
      if (retypeTo && ir::isFloating(spec.dtype)) t = t.to(at::kFloat);
      sample.emplace_back(t.to(device));
    }
    samples.push_back(std::move(sample));
  }
  return samples;
}

// Note [Calibrating in the warm-up]: runs the samples until no linear of their programs is
// calibrating (or the rounds run out), then reports every linear of those programs.
void calibrate(const WarmupArgs& args, const jit::OptimizedModule& fast,
               const std::vector<std::vector<c10::IValue>>& samples, int rounds,
               WarmupSummary& summary) {
  summary.calibrationSamples = static_cast<int>(samples.size());
  // The programs the samples run (one per guard family), in first-seen order; asked again each
  // round, since a family whose plans were evicted comes back with a new program.
  auto programs = [&] {
    std::vector<std::shared_ptr<const jit::Program>> out;
    for (const std::vector<c10::IValue>& sample : samples) {
      std::vector<std::vector<int64_t>> shapes;
      for (const c10::IValue& v : sample) shapes.push_back(v.toTensor().sizes().vec());
      const jit::PreparedPlan p = fast.prepare(sample, shapes);
      if (p.plan == nullptr)
        throw WarmupError(fmt::format("--calibrate: a sample runs eagerly, not through a plan: {}",
                                      p.eagerReason));
      const std::shared_ptr<const jit::Program>& program = p.plan->program();
      if (std::find(out.begin(), out.end(), program) == out.end()) out.push_back(program);
    }
    return out;
  };
  for (int round = 0; round < std::max(1, rounds); ++round) {
    for (size_t k = 0; k < samples.size(); ++k) {
      try {
        fast.forward(samples[k]);
      } catch (const std::exception& e) {
        throw WarmupError(fmt::format("--calibrate {}: sample {} ({}): {}", *args.calibrate, k,
                                      shapesLabel(args.inputs, samples[k]), shortMessage(e)));
      }
      ++summary.calibrationCalls;
    }
    bool pending = false;
    for (const auto& program : programs())
      for (const jit::QuantizedLinear::Report& r : program->quantReports())
        pending = pending || r.calibrating;
    if (!pending) break;
  }
  const std::vector<std::shared_ptr<const jit::Program>> all = programs();
  for (size_t p = 0; p < all.size(); ++p) {
    // Labels name the program only when the samples ran more than one.
    const std::string prefix = all.size() > 1 ? fmt::format("program {}: ", p + 1) : "";
    for (const jit::QuantizedLinear::Report& r : all[p]->quantReports())
      summary.quantLayers.push_back(
          {prefix + r.label, r.state, r.relError, r.quantized, r.fromRecord, r.calibrating});
    for (const std::string& why : all[p]->quantSkipped())
      summary.quantSkipped.push_back(prefix + why);
  }
}

}  // namespace

std::optional<std::string> calibrationProblem(const WarmupSummary& s) {
  size_t pending = 0;
  const QuantLayer* first = nullptr;
  for (const QuantLayer& q : s.quantLayers)
    if (q.calibrating) {
      ++pending;
      if (first == nullptr) first = &q;
    }
  if (pending == 0) return std::nullopt;
  return fmt::format(
      "{} of {} linears are still calibrating after {} calls (e.g. {}: {}); on a device without "
      "the {} GEMM nothing calibrates unless KILN_QUANT_EMULATE=1",
      pending, s.quantLayers.size(), s.calibrationCalls, first->label, first->state, s.precision);
}

std::string toJson(const WarmupSummary& s) {
  using Json = nlohmann::ordered_json;
  Json j = {{"kernels_compiled", s.kernelsCompiled},
            {"kernels_cached", s.kernelsCached},
            {"buckets", s.buckets},
            {"groups", s.groups},
            {"groups_failed", s.groupsFailed},
            {"eager_ops", s.eagerOps},
            {"skipped_buckets", s.skippedBuckets},
            {"seconds", std::round(s.seconds * 1000) / 1000},
            {"arch", s.arch},
            {"cache_dir", s.cacheDir},
            {"tuned", s.tuned},
            {"kernels_tuned", s.kernelsTuned},
            {"variants_tried", s.variantsTried},
            {"device", s.device},
            {"capture_stored", s.captureStored},
            {"capture_cached", s.captureCached},
            {"writes_failed", s.writesFailed},
            {"entries_evicted", s.entriesEvicted},
            {"precision", s.precision}};
  if (s.calibrationSamples > 0) {
    Json linears = Json::array();
    for (const QuantLayer& q : s.quantLayers)
      linears.push_back({{"label", q.label},
                         {"state", q.state},
                         {"rel_error", q.relError >= 0 ? Json(q.relError) : Json(nullptr)},
                         {"quantized", q.quantized},
                         {"from_record", q.fromRecord}});
    j["calibration"] = {{"samples", s.calibrationSamples},
                        {"calls", s.calibrationCalls},
                        {"linears", linears},
                        {"skipped", s.quantSkipped}};
  }
  // nlohmann writes every key and value; the fields go on one line as `"key": value, ...`.
  std::vector<std::string> fields;
  for (const auto& [key, value] : j.items())
    fields.push_back(fmt::format("{}: {}", Json(key).dump(),
                                 value.dump(-1, ' ', false, Json::error_handler_t::replace)));
  return fmt::format("{{{}}}\n", fmt::join(fields, ", "));
}

std::string toText(const WarmupSummary& s) {
  std::string out = fmt::format(
      "kiln-warmup: {} bucket{}, {} fusion groups: {} kernels compiled, {} already cached",
      s.buckets, s.buckets == 1 ? "" : "s", s.groups, s.kernelsCompiled, s.kernelsCached);
  if (s.groupsFailed > 0) out += fmt::format(", {} without a kernel (run eagerly)", s.groupsFailed);
  out += fmt::format(" for {} in {:.1f} s\n  cache: {}\n", s.arch, s.seconds, s.cacheDir);
  out += fmt::format("  capture (on {}): {}\n", s.device,
                     s.captureCached   ? "already cached"
                     : s.captureStored ? "traced and stored"
                                       : "traced, not storable: a new process's first call traces");
  if (s.writesFailed > 0 || s.entriesEvicted > 0)
    out += fmt::format("  cache writes failed: {}, entries evicted: {}\n", s.writesFailed,
                       s.entriesEvicted);
  if (s.tuned)
    out += fmt::format("  tuned: {} variants tried, {} kernels faster than their default\n",
                       s.variantsTried, s.kernelsTuned);
  if (!s.eagerOps.empty()) out += fmt::format("  eager ops: {}\n", fmt::join(s.eagerOps, ", "));
  if (!s.skippedBuckets.empty())
    out += fmt::format("  skipped (sizes 0 and 1 are never dynamic): {}\n",
                       fmt::join(s.skippedBuckets, ", "));
  if (s.calibrationSamples > 0) {
    const auto eight = std::count_if(s.quantLayers.begin(), s.quantLayers.end(),
                                     [](const QuantLayer& q) { return q.quantized; });
    out += fmt::format("  calibration ({}): {} samples, {} calls; {} of {} linears run 8-bit\n",
                       s.precision, s.calibrationSamples, s.calibrationCalls, eight,
                       s.quantLayers.size());
    for (const QuantLayer& q : s.quantLayers)
      out += fmt::format("    {}: {}{}\n", q.label, q.state,
                         q.relError >= 0 ? fmt::format(", error {:.4f}", q.relError) : "");
    for (const std::string& why : s.quantSkipped) out += fmt::format("    {} (not 8-bit)\n", why);
  }
  return out;
}

WarmupSummary runWarmup(const WarmupArgs& args, const ProgressFn& progress, const EnvLookup& env) {
  const auto t0 = Clock::now();
  WarmupSummary summary;
  at::NoGradGuard noGrad;

  torch::jit::Module module;
  try {
    module = torch::jit::load(args.model, at::kCPU);
  } catch (const std::exception& e) {
    throw WarmupError(
        fmt::format("cannot load {} as a TorchScript model: {}", args.model, shortMessage(e)));
  }
  module.eval();
  checkArity(module, args);

  Options options;
  if (args.arch) {
    try {
      jit::checkArch("--arch", *args.arch);  // an arch NVRTC lacks would fail every kernel
    } catch (const UserError& e) {
      throw WarmupError(e.what());
    }
    options.arch = *args.arch;
  }
  if (args.cacheDir) options.cacheDir = *args.cacheDir;
  options.diskCache = true;
  // Everything is compiled now, in the foreground, and a failure is an error, not an eager plan.
  options.backgroundCompile = false;
  options.strict = true;
  // --tune: the caller waits, so the lab runs flat out (Note [Tuning beside traffic]), and
  // records already there are the incumbents to beat. Otherwise plans are not tuned here.
  options.tune = args.tune ? TuneMode::kEager : TuneMode::kOff;
  if (args.precision) options.precision = *args.precision;
  if (args.arch) {
    // Compiling for a named arch needs no GPU; the session's "no GPU, running eagerly" warning
    // would only confuse here (the key is the session's, src in jit/runtime/session.cpp).
    logOnce(LogLevel::kDebug, "session.no-gpu", "kiln-warmup: compiling without loading kernels");
  }
  std::unique_ptr<Session> session;
  try {
    session = std::make_unique<Session>(options, filteredEnv(env, args));
  } catch (const UserError& e) {
    throw WarmupError(fmt::format("kiln options: {}", e.what()));
  }
  // Fold kernels (Note [Fold kernels compiled ahead]) compile while plans are built, outside the
  // plans' own counts; they are NVRTC runs all the same.
  auto foldCompiles = std::make_shared<std::atomic<int>>(0);
  session->setCompileHook([foldCompiles](const CompileEvent& e) {
    if (e.bucket == "fold") foldCompiles->fetch_add(1);
  });
  std::optional<std::string> arch = session->targetArch();
  if (!arch)
    throw WarmupError(fmt::format("no --arch given and no usable GPU ({}); pass --arch sm_XX",
                                  session->cudaEnvironment().describe()));
  summary.arch = *arch;
  summary.precision = std::string(toString(session->options().precision));
  if (args.calibrate && session->options().precision != Precision::kFp8 &&
      session->options().precision != Precision::kInt8)
    throw WarmupError(
        fmt::format("--calibrate calibrates 8-bit linears: it needs --precision fp8 or int8 (or "
                    "KILN_PRECISION), and the precision is {}",
                    summary.precision));
  const std::optional<std::string> localArch = cuda::targetArch("", session->cudaEnvironment());
  std::unique_ptr<jit::TuningLab> lab;
  if (args.tune) {
    if (!localArch)
      throw WarmupError(fmt::format("--tune needs a GPU to time kernels on, and there is none ({})",
                                    session->cudaEnvironment().describe()));
    if (*localArch != *arch)
      throw WarmupError(
          fmt::format("--tune times kernels on this machine's GPU ({}), which cannot run --arch {}",
                      *localArch, *arch));
    lab = jit::makeCudaLab(*session);
    if (lab == nullptr) throw WarmupError("--tune: the CUDA driver cannot be used");
    summary.tuned = true;
  }

  cache::KernelCache& cache = session->kernelCache();
  cache::DiskStore* disk = cache.disk();
  if (disk == nullptr || disk->mode() != cache::DiskMode::kReadWrite)
    throw WarmupError(
        fmt::format("cannot write the kernel cache at {}: {}",
                    disk == nullptr || disk->root().empty() ? std::string("(no cache dir)")
                                                            : disk->root().string(),
                    disk == nullptr ? std::string("disk cache disabled") : disk->modeReason()));
  summary.cacheDir = disk->versionDir().string();
  const cache::DiskStoreStats diskBefore = disk->stats();

  // Where the one capture runs (Note [Preparing plans ahead]): on the GPU the module and inputs
  // are the production process's, so the stored capture is the one it looks up. On the CPU,
  // float16/bfloat16 models are traced in float32 (Note [Tracing in float32]).
  const bool onCuda = args.device ? *args.device == "cuda" : localArch.has_value();
  if (onCuda && !localArch)
    throw WarmupError(
        fmt::format("--device cuda: no usable GPU ({})", session->cudaEnvironment().describe()));
  const at::Device device = onCuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  summary.device = onCuda ? "cuda" : "cpu";
  std::optional<ir::DType> retypeTo;
  if (!onCuda) {
    for (const InputSpec& in : args.inputs)
      if (ir::isFloating(in.dtype) && in.dtype != ir::DType::kFloat32) retypeTo = in.dtype;
  }
  if (retypeTo) {
    // Floating weights in float32 too, so the trace type-checks on CPU (Module::to(dtype) would
    // convert integer buffers as well).
    auto toFloat = [](at::Tensor t) {
      if (t.is_floating_point() && t.scalar_type() != at::kFloat) t.set_data(t.to(at::kFloat));
    };
    for (const auto& p : module.named_parameters(/*recurse=*/true)) toFloat(p.value);
    for (const auto& b : module.named_buffers(/*recurse=*/true)) toFloat(b.value);
  }
  if (onCuda) module.to(device);

  // The runtime's view of the dims: symbols in (input, dim) order, which is first-appearance
  // order (Note [Warmup symbols]), and the explicit bucket edges as BucketPolicy.
  jit::Options jopt;
  jopt.session = session.get();
  jopt.retypeTo = retypeTo;
  for (const InputSpec& in : args.inputs) jopt.inputNames.push_back(in.name);
  std::map<std::pair<int, int>, const Symbol*> symbolOf;
  for (const Symbol& sym : args.symbols)
    for (const Symbol::Use& u : sym.uses) symbolOf[{u.input, u.dim}] = &sym;
  for (const auto& [use, sym] : symbolOf) {
    const std::string& input = args.inputs[static_cast<size_t>(use.first)].name;
    jopt.dynamicDims.push_back(jit::DynamicDim{input, use.second, sym->name});
    if (auto e = args.bucketEdges.find(sym->name); e != args.bucketEdges.end())
      jopt.buckets.push_back(jit::BucketPolicy{input, use.second, e->second});
  }
  jit::OptimizedModule fast = jit::optimize(module, jopt);
  // Read before the long part, so a bad file fails at once.
  std::vector<std::vector<c10::IValue>> samples;
  if (args.calibrate) samples = loadCalibration(args, retypeTo, device);

  for (const Symbol& sym : args.symbols) {
    if (sym.lo <= 0) summary.skippedBuckets.push_back(sym.name + ":0");
    if (sym.lo <= 1 && sym.hi >= 1) summary.skippedBuckets.push_back(sym.name + ":1");
  }

  // The examples the family is captured on: each symbol at its smallest warmable size.
  std::vector<c10::IValue> examples;
  {
    BucketCombo smallest;
    for (const Symbol& sym : args.symbols) {
      smallest.edges.push_back(0);
      smallest.examples.push_back(std::max<int64_t>(2, sym.lo));
    }
    const std::vector<std::vector<int64_t>> shapes =
        exampleShapes(args.inputs, args.symbols, smallest);
    for (size_t i = 0; i < shapes.size(); ++i)
      examples.emplace_back(exampleInput(args.inputs[i].dtype, retypeTo, shapes[i], device));
  }

  const std::vector<BucketCombo> combos = bucketCombos(args.inputs, args.symbols, args.bucketEdges);
  std::set<std::string> eagerOps;
  const int total = static_cast<int>(combos.size());
  for (int c = 0; c < total; ++c) {
    const auto c0 = Clock::now();
    std::vector<std::vector<int64_t>> shapes = exampleShapes(args.inputs, args.symbols, combos[c]);
    ComboEvent ev;
    ev.index = c;
    ev.total = total;
    ev.label = shapesLabel(args.inputs, shapes);
    if (progress) progress(ev);

    jit::PreparedPlan prepared;
    try {
      prepared = fast.prepare(examples, shapes);
    } catch (const std::exception& e) {
      const jit::ModuleStats st = fast.stats();
      if (st.captures + st.capturesCached == 0)  // the one capture, at the examples' sizes
        throw WarmupError(fmt::format("cannot trace {} with {}: {}", args.model,
                                      shapesLabel(args.inputs, examples), shortMessage(e)));
      throw WarmupError(fmt::format("cannot build a plan for {} with {}: {}", args.model, ev.label,
                                    shortMessage(e)));
    }
    if (prepared.plan == nullptr)
      throw WarmupError(fmt::format("cannot build a plan for {} with {}: {}", args.model, ev.label,
                                    prepared.eagerReason));
    const jit::Plan& plan = *prepared.plan;
    int groups = 0;
    for (const partition::Step& step : plan.partition().steps)
      groups += step.kind == partition::StepKind::kFusion ? 1 : 0;
    int withoutKernel = 0;
    for (const jit::KernelStep& k : plan.kernels()->kernels)
      withoutKernel += k.state == jit::KernelState::kReady ? 0 : 1;
    for (const std::string& op : plan.captured().unsupportedOps) eagerOps.insert(op);
    summary.kernelsCompiled += prepared.kernelsCompiled;
    summary.kernelsCached += prepared.kernelsCached;
    summary.groups += groups;
    summary.groupsFailed += withoutKernel;
    ++summary.buckets;
    if (lab != nullptr) {
      const jit::TuneReport r = jit::tunePlan(*prepared.plan, *lab, *session, *arch,
                                              jit::tuneOptionsFor(session->options()));
      summary.kernelsTuned += r.replaced;
      summary.variantsTried += r.variantsTried;
      ev.kernelsTuned = r.replaced;
      ev.variantsTried = r.variantsTried;
      for (const std::string& line : r.lines) KILN_LOG_INFO("kiln-warmup: tuned {}", line);
    }

    ev.done = true;
    ev.kernelsCompiled = prepared.kernelsCompiled;
    ev.kernelsCached = prepared.kernelsCached;
    ev.groups = groups;
    ev.seconds = std::chrono::duration<double>(Clock::now() - c0).count();
    if (progress) progress(ev);
  }
  summary.captureCached = fast.stats().capturesCached > 0;
  summary.captureStored = summary.captureCached;
  if (!summary.captureCached && total > 0) {
    // Whether a new process finds the capture: a fresh module over the same cache looks it up.
    jit::OptimizedModule again = jit::optimize(module, jopt);
    try {
      again.prepare(examples, exampleShapes(args.inputs, args.symbols, combos.front()));
      summary.captureStored = again.stats().capturesCached > 0;
    } catch (const std::exception& e) {
      KILN_LOG_DEBUG("kiln-warmup: looking the capture up again failed: {}", e.what());
    }
  }
  if (args.calibrate)
    calibrate(args, fast, samples, session->options().quantCalibrationCalls, summary);
  const cache::DiskStoreStats diskAfter = disk->stats();
  summary.writesFailed = static_cast<int>(diskAfter.writeFailures - diskBefore.writeFailures);
  summary.entriesEvicted = static_cast<int>(diskAfter.evictions - diskBefore.evictions);
  summary.eagerOps.assign(eagerOps.begin(), eagerOps.end());
  summary.kernelsCompiled += foldCompiles->load();
  summary.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return summary;
}

std::optional<std::string> cacheProblem(const WarmupSummary& s) {
  std::vector<std::string> problems;
  if (s.writesFailed > 0)
    problems.push_back(
        fmt::format("{} cache write{} failed (full disk or unwritable shard; see "
                    "the warning above)",
                    s.writesFailed, s.writesFailed == 1 ? "" : "s"));
  if (s.entriesEvicted > 0)
    problems.push_back(fmt::format(
        "the cache's size cap (KILN_CACHE_MAX_BYTES) evicted {} entr{} while warming up; raise "
        "it",
        s.entriesEvicted, s.entriesEvicted == 1 ? "y" : "ies"));
  if (problems.empty()) return std::nullopt;
  return fmt::format("the cache at {} does not hold everything compiled: {}", s.cacheDir,
                     fmt::join(problems, "; "));
}

}  // namespace kiln::warmup

#include "integrations/warmup/warmup.h"

#include <chrono>
#include <map>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/script.h>

#include "cache/kernel_cache.h"
#include "jit/capture/capture.h"
#include "jit/nvrtc.h"
#include "jit/runtime/plan.h"
#include "jit/runtime/session.h"
#include "jit/tuner/tuner.h"
#include "src/support/log.h"

namespace kiln::warmup {
namespace {

using Clock = std::chrono::steady_clock;

std::string jsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<int>(c));
        else
          out += c;
    }
  }
  return out + "\"";
}

std::string jsonList(const std::vector<std::string>& items) {
  std::vector<std::string> quoted;
  for (const std::string& s : items) quoted.push_back(jsonString(s));
  return fmt::format("[{}]", fmt::join(quoted, ", "));
}

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
  return
      [env, hideCacheDir, hideArch, hideTune](std::string_view name) -> std::optional<std::string> {
        if (name == "KILN_DISK_CACHE" || name == "KILN_DISABLE") return std::nullopt;
        if (hideTune && name == "KILN_TUNE") return std::nullopt;
        if (hideCacheDir && name == "KILN_CACHE_DIR") return std::nullopt;
        if (hideArch && name == "KILN_ARCH") return std::nullopt;
        return env(name);
      };
}

at::ScalarType atenType(ir::DType dtype) {
  // Note [Tracing in float32]: every input is traced in float32.
  (void)dtype;
  return at::kFloat;
}

}  // namespace

std::string toJson(const WarmupSummary& s) {
  return fmt::format(
      "{{\"kernels_compiled\": {}, \"kernels_cached\": {}, \"buckets\": {}, \"groups\": {}, "
      "\"groups_failed\": {}, \"eager_ops\": {}, \"skipped_buckets\": {}, \"seconds\": {:.3f}, "
      "\"arch\": {}, \"cache_dir\": {}, \"tuned\": {}, \"kernels_tuned\": {}, "
      "\"variants_tried\": {}}}\n",
      s.kernelsCompiled, s.kernelsCached, s.buckets, s.groups, s.groupsFailed, jsonList(s.eagerOps),
      jsonList(s.skippedBuckets), s.seconds, jsonString(s.arch), jsonString(s.cacheDir),
      s.tuned ? "true" : "false", s.kernelsTuned, s.variantsTried);
}

std::string toText(const WarmupSummary& s) {
  std::string out = fmt::format(
      "kiln-warmup: {} bucket{}, {} fusion groups: {} kernels compiled, {} already cached",
      s.buckets, s.buckets == 1 ? "" : "s", s.groups, s.kernelsCompiled, s.kernelsCached);
  if (s.groupsFailed > 0) out += fmt::format(", {} without a kernel (run eagerly)", s.groupsFailed);
  out += fmt::format(" for {} in {:.1f} s\n  cache: {}\n", s.arch, s.seconds, s.cacheDir);
  if (s.tuned)
    out += fmt::format("  tuned: {} variants tried, {} kernels faster than their default\n",
                       s.variantsTried, s.kernelsTuned);
  if (!s.eagerOps.empty()) out += fmt::format("  eager ops: {}\n", fmt::join(s.eagerOps, ", "));
  if (!s.skippedBuckets.empty())
    out += fmt::format("  skipped (sizes 0 and 1 are never dynamic): {}\n",
                       fmt::join(s.skippedBuckets, ", "));
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
  const ir::DType dtype = args.inputs.front().dtype;
  std::optional<ir::DType> retypeTo;
  if (dtype != ir::DType::kFloat32) {
    // Note [Tracing in float32]: floating weights in float32 too, so the trace type-checks on
    // CPU (Module::to(dtype) would convert integer buffers as well).
    auto toFloat = [](at::Tensor t) {
      if (t.is_floating_point() && t.scalar_type() != at::kFloat) t.set_data(t.to(at::kFloat));
    };
    for (const auto& p : module.named_parameters(/*recurse=*/true)) toFloat(p.value);
    for (const auto& b : module.named_buffers(/*recurse=*/true)) toFloat(b.value);
    retypeTo = dtype;
  }
  if (auto forward = module.find_method("forward")) {
    const auto& schemaArgs = forward->function().getSchema().arguments();
    std::vector<std::string> names;
    for (size_t i = 1; i < schemaArgs.size(); ++i) names.push_back(schemaArgs[i].name());
    size_t required = 0;
    for (size_t i = 1; i < schemaArgs.size(); ++i)
      required += schemaArgs[i].default_value().has_value() ? 0 : 1;
    if (args.inputs.size() < required || args.inputs.size() > names.size())
      throw UsageError(fmt::format("--input: {}'s forward takes {} input{} ({}), got {}",
                                   args.model, names.size(), names.size() == 1 ? "" : "s",
                                   fmt::join(names, ", "), args.inputs.size()));
  } else {
    throw WarmupError(fmt::format("{} has no forward method", args.model));
  }

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
  // --tune: the caller waits, so the lab runs flat out (Note [Tuning beside traffic]), and
  // records already there are the incumbents to beat.
  if (args.tune) options.tune = TuneMode::kEager;
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
  std::optional<std::string> arch = session->targetArch();
  if (!arch)
    throw WarmupError(fmt::format("no --arch given and no usable GPU ({}); pass --arch sm_XX",
                                  session->cudaEnvironment().describe()));
  summary.arch = *arch;
  std::unique_ptr<jit::TuningLab> lab;
  if (args.tune) {
    const std::optional<std::string> local = cuda::targetArch("", session->cudaEnvironment());
    if (!local)
      throw WarmupError(fmt::format("--tune needs a GPU to time kernels on, and there is none ({})",
                                    session->cudaEnvironment().describe()));
    if (*local != *arch)
      throw WarmupError(
          fmt::format("--tune times kernels on this machine's GPU ({}), which cannot run --arch {}",
                      *local, *arch));
    lab = jit::makeCudaLab(*session);
    if (lab == nullptr) throw WarmupError("--tune: the CUDA driver cannot be used");
    summary.tuned = true;
  }

  cache::KernelCache& cache = session->kernelCache();
  const cache::DiskStore* disk = cache.disk();
  if (disk == nullptr || disk->mode() != cache::DiskMode::kReadWrite)
    throw WarmupError(
        fmt::format("cannot write the kernel cache at {}: {}",
                    disk == nullptr || disk->root().empty() ? std::string("(no cache dir)")
                                                            : disk->root().string(),
                    disk == nullptr ? std::string("disk cache disabled") : disk->modeReason()));
  summary.cacheDir = disk->versionDir().string();

  // Symbols are created in (input, dim) order, which is first-appearance order (Note [Warmup
  // symbols]).
  jit::CaptureOptions copt;
  for (const InputSpec& in : args.inputs) copt.inputNames.push_back(in.name);
  std::map<std::pair<int, int>, std::string> symbolOf;
  for (const Symbol& sym : args.symbols)
    for (const Symbol::Use& u : sym.uses) symbolOf[{u.input, u.dim}] = sym.name;
  for (const auto& [use, name] : symbolOf)
    copt.dynamicDims.push_back(
        jit::DynamicDim{args.inputs[static_cast<size_t>(use.first)].name, use.second, name});
  copt.retypeTo = retypeTo;

  for (const Symbol& sym : args.symbols) {
    if (sym.lo <= 0) summary.skippedBuckets.push_back(sym.name + ":0");
    if (sym.lo <= 1 && sym.hi >= 1) summary.skippedBuckets.push_back(sym.name + ":1");
  }

  const std::vector<BucketCombo> combos = bucketCombos(args.inputs, args.symbols);
  std::set<std::string> eagerOps;
  const int total = static_cast<int>(combos.size());
  for (int c = 0; c < total; ++c) {
    const auto c0 = Clock::now();
    std::vector<std::vector<int64_t>> shapes = exampleShapes(args.inputs, args.symbols, combos[c]);
    std::vector<std::string> parts;
    for (size_t i = 0; i < shapes.size(); ++i)
      parts.push_back(fmt::format("{}[{}]", args.inputs[i].name, fmt::join(shapes[i], ",")));
    ComboEvent ev;
    ev.index = c;
    ev.total = total;
    ev.label = fmt::format("{}", fmt::join(parts, " "));
    if (progress) progress(ev);

    std::vector<c10::IValue> inputs;
    for (size_t i = 0; i < shapes.size(); ++i)
      inputs.emplace_back(
          at::randn(shapes[i], at::TensorOptions().dtype(atenType(args.inputs[i].dtype))));
    jit::CapturedGraph captured;
    try {
      captured = jit::capture(module, inputs, copt);
    } catch (const std::exception& e) {
      throw WarmupError(
          fmt::format("cannot trace {} with {}: {}", args.model, ev.label, shortMessage(e)));
    }
    std::shared_ptr<jit::Plan> plan;
    try {
      plan = jit::Plan::build(std::move(captured), *arch, *session);
    } catch (const std::exception& e) {
      throw WarmupError(fmt::format("cannot build a plan for {} with {}: {}", args.model, ev.label,
                                    shortMessage(e)));
    }
    const jit::PlanBuildInfo& info = plan->buildInfo();
    int groups = 0;
    for (const partition::Step& step : plan->partition().steps)
      groups += step.kind == partition::StepKind::kFusion ? 1 : 0;
    for (const std::string& op : plan->captured().unsupportedOps) eagerOps.insert(op);
    summary.kernelsCompiled += info.kernelsCompiled;
    summary.kernelsCached += info.kernelsCached;
    summary.groups += groups;
    summary.groupsFailed += groups - info.kernelsCompiled - info.kernelsCached;
    ++summary.buckets;
    if (lab != nullptr) {
      const jit::TuneReport r = jit::tunePlan(*plan, *lab, *session, *arch,
                                              jit::tuneOptionsFor(session->options()));
      summary.kernelsTuned += r.replaced;
      summary.variantsTried += r.variantsTried;
      ev.kernelsTuned = r.replaced;
      ev.variantsTried = r.variantsTried;
      for (const std::string& line : r.lines) KILN_LOG_INFO("kiln-warmup: tuned {}", line);
    }

    ev.done = true;
    ev.kernelsCompiled = info.kernelsCompiled;
    ev.kernelsCached = info.kernelsCached;
    ev.groups = groups;
    ev.seconds = std::chrono::duration<double>(Clock::now() - c0).count();
    if (progress) progress(ev);
  }
  summary.eagerOps.assign(eagerOps.begin(), eagerOps.end());
  summary.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return summary;
}

}  // namespace kiln::warmup

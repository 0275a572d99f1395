// kiln-real-bench: real architectures (BERT, GPT-2, a Llama-style decoder, ResNet-50, ViT-B/16,
// random weights, fp16) traced by bench/real_models.py into DIR: kiln vs the TorchScript module
// run by LibTorch ("eager") vs the model's AOTInductor package, in one process, on one card.
//
//   kiln-real-bench DIR [--models a,b] [--batches 1,8,32] [--seq 128] [--reps N] [--tune]
//                       [--graphs] [--profile] [--device cuda|cpu]
//   kiln-real-bench DIR --first-call eager|cold|warm --model NAME --batch B [--seq 128]
//   kiln-real-bench DIR --precision DIR16 [--models a,b] [--batches 1,8,32] [--seq 128] [--reps N]
//   kiln-real-bench DIR --quant [--models a,b] [--batches 1,8,32] [--seq 128] [--reps N]
//
// Per model (DIR/models.tsv) and batch (text: [batch, seq] ids in [0, 1000) and a mask with the
// ends of some rows padded; images: [batch, 3, 224, 224]): kiln's first call builds the plan, then
// it is called until no background compile is pending (60 s at most; with tuning on, KILN_TUNE or
// --tune, past the tuning threshold and until the tuning job is done too); then eager, kiln and
// AOTI (DIR/<name>.pt2, or the static DIR/<name>_b<B>.pt2) are timed in turns (timing.h's
// medianMsInTurns: `reps` samples of 5 back-to-back calls between CUDA events, two input sets
// rotated, after warm-up). Tuning is off unless asked for, as in kiln-bench, so runs compare.
// Columns: medians in ms per call; speedups as eager ms / kiln ms and AOTI ms / kiln ms (> 1: kiln
// faster); max abs error and cosine similarity of the flattened float32 outputs against eager's;
// "peak MB" is each contender's working memory per call: the CUDA caching allocator's peak of
// allocated bytes over 3 calls minus what was allocated when the peak was reset (activations,
// workspaces, the output; weights and anything held between calls are not counted; the second
// table lists those). A contender that fails is an "error: ..." cell; the run goes on.
// kiln's stats and explain() go to stderr per model.
//
// --graphs: a second kiln module of the same model, in a session with CUDA graph replay (Note
// [CUDA graph replay]) set the other way (off, as it is on by default), settled and timed in the
// same turns; its median, speedups, accuracy and replay count go to the row's notes, so the table
// keeps its columns.
//
// --profile: after each model's row at the last batch, kiln's profile() of that call (Note
// [Profiling steps]: per-step CUDA-event medians, 20 repetitions) goes to stderr.
//
// --first-call: one measurement per process (bench/run_real.sh runs eager, then kiln with an empty
// KILN_CACHE_DIR, cold, then kiln warm over the same directory). One markdown row: load ms (from
// before torch::jit::load to the module and inputs on the GPU), first call ms (eager: forward;
// kiln: optimize() + forward, so capture or capture-cache load, codegen and compiles or cache
// loads), both ending on a device sync.
//
// --precision DIR16 (issue 21, Note [Precision]): DIR holds float32 traces (real_models.py --dtype
// float32), DIR16 the float16 traces of the same models (same seed, so the same weights: the
// model converted to float16 by hand). Per model and batch, in turns: eager float32 (the
// reference), eager float16, kiln on the float16 trace ("by hand", precision module), and kiln on
// the float32 trace with precision fp16 and bf16. Each kiln module is settled first. Cosines and
// max errors are against eager float32's output on the same inputs (the float16 module gets the
// images rounded to float16); "vs by hand" is kiln ms / kiln-by-hand ms (<= 1.05 is the bar).
//
// --quant (issue 21, Note [Quantized linears]): DIR holds the float16 traces. Per model and batch,
// in turns: eager float16 (the reference), kiln with precision module, fp8 and int8. Each kiln
// module is called past its calibration and settled first. Cosines and max errors are against
// eager's output; "vs module" is kiln-module ms / kiln ms (> 1: the 8-bit plan is faster; the bar
// for fp8 is 1.3 at batch 32); "8-bit linears" counts the linears that run quantised.
//
// --device cpu: smoke test without a GPU (fp32 traces from real_models.py --device cpu; defaults
// batches 1,2, seq 16, 3 reps; wall-clock medians; no memory figures; kiln runs eagerly there).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <kiln/kiln.h>

#include "jit/runtime/against_module.h"

#ifdef KILN_REAL_BENCH_AOTI
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#endif

#include "bench/timing.h"
#include "src/support/version_flag.h"

namespace {

using Clock = std::chrono::steady_clock;

#ifdef KILN_REAL_BENCH_AOTI
using AotiLoader = torch::inductor::AOTIModelPackageLoader;
#else
// LibTorch without the AOTInductor package loader: a package found is an error cell.
struct AotiLoader {
  explicit AotiLoader(const std::string&) {
    throw std::runtime_error("kiln-real-bench was built without the AOTInductor package loader");
  }
  std::vector<at::Tensor> run(const std::vector<at::Tensor>&) { return {}; }
};
#endif

// printf into a string.
__attribute__((format(printf, 1, 2))) std::string strf(const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  return buf;
}

double msSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string oneLine(std::string what, size_t max = 160) {
  std::replace(what.begin(), what.end(), '\n', ' ');
  std::replace(what.begin(), what.end(), '|', '/');  // a markdown cell
  return what.size() > max ? what.substr(0, max) + "..." : what;
}

// A row of DIR/models.tsv (bench/real_models.py).
struct Model {
  std::string name, file, kind, dtype, device, check, error;
  bool text() const { return kind == "text"; }
};

std::vector<Model> readModels(const std::string& dir) {
  std::ifstream in(dir + "/models.tsv");
  if (!in) throw std::runtime_error("no " + dir + "/models.tsv (run bench/real_models.py first)");
  std::string line;
  std::getline(in, line);
  std::map<std::string, size_t> column;  // by header name, so columns may be added
  {
    std::istringstream fields(line);
    std::string f;
    for (size_t i = 0; std::getline(fields, f, '\t'); ++i) column[f] = i;
  }
  std::vector<Model> out;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    std::string cell;
    while (std::getline(fields, cell, '\t')) f.push_back(cell);
    auto at = [&](const std::string& name) {
      auto it = column.find(name);
      return it != column.end() && it->second < f.size() ? f[it->second] : std::string();
    };
    out.push_back(
        {at("name"), at("file"), at("kind"), at("dtype"), at("device"), at("check"), at("error")});
  }
  return out;
}

using kiln::bench::Device;

// ---- device memory ----

const c10::CachingAllocator::Stat& allocatedStat(
    const c10::CachingDeviceAllocator::DeviceStats& s) {
  return s.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
}

double allocatedMb() {
  auto s = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
  return static_cast<double>(allocatedStat(s).current) / (1 << 20);
}

// Device memory in use (cudaMemGetInfo) with the allocator's unused cached blocks released: also
// counts memory allocated outside the caching allocator (an AOTI package's constants).
double deviceUsedMb() {
  c10::cuda::device_synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  size_t freeBytes = 0, totalBytes = 0;
  if (cudaMemGetInfo(&freeBytes, &totalBytes) != cudaSuccess) return 0;
  return static_cast<double>(totalBytes - freeBytes) / (1 << 20);
}

// Working memory of `call`: the allocator's peak over 3 calls minus what was allocated before.
double workingMb(const Device& d, const std::function<void(int)>& call) {
  if (!d.cuda) return -1;
  const c10::DeviceIndex dev = c10::cuda::current_device();
  d.sync();
  c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
  const int64_t base = allocatedStat(c10::cuda::CUDACachingAllocator::getDeviceStats(dev)).current;
  for (int i = 0; i < 3; ++i) call(i);
  d.sync();
  const int64_t peak = allocatedStat(c10::cuda::CUDACachingAllocator::getDeviceStats(dev)).peak;
  return static_cast<double>(peak - base) / (1 << 20);
}

// ---- inputs and outputs ----

// Text: ids in [0, 1000) (below every model's vocabulary) and a mask of ones with the end of row
// 0 padded (2 tokens) and of other rows by a varying amount; images: N(0, 1) pixels. `set` seeds.
std::vector<torch::Tensor> makeInputs(const Model& m, int64_t batch, int64_t seq, const Device& d,
                                      int set) {
  torch::manual_seed(set);
  if (m.text()) {
    auto ids = torch::randint(0, 1000, {batch, seq},
                              torch::TensorOptions().dtype(torch::kLong).device(d.device()));
    auto mask = torch::ones({batch, seq}, torch::TensorOptions().dtype(torch::kLong));
    for (int64_t r = 0; r < batch; ++r) {
      const int64_t pad = r == 0 ? 2 : (r * 7) % (seq / 2);
      if (pad > 0) mask[r].slice(0, seq - pad).zero_();
    }
    return {ids, mask.to(d.device())};
  }
  const auto dt = m.dtype == "float32" ? torch::kFloat : torch::kHalf;
  return {torch::randn({batch, 3, 224, 224}, torch::TensorOptions().dtype(dt).device(d.device()))};
}

torch::Tensor firstTensor(const torch::IValue& v) {
  if (v.isTensor()) return v.toTensor();
  if (v.isTuple()) return firstTensor(v.toTupleRef().elements().at(0));
  if (v.isList()) return firstTensor(v.toListRef().at(0));
  throw std::runtime_error("output is not a tensor, tuple or list");
}

struct Accuracy {
  double maxErr = 0, cosine = 0;
  double refMax = 0;  // max |eager's output|: issue 19's bar is maxErr <= 2% of it
};

Accuracy compare(const torch::Tensor& got, const torch::Tensor& want) {
  if (got.sizes() != want.sizes())
    throw std::runtime_error("output shape " + c10::str(got.sizes()) + " vs eager's " +
                             c10::str(want.sizes()));
  auto a = got.reshape(-1).to(torch::kFloat), b = want.reshape(-1).to(torch::kFloat);
  Accuracy acc;
  acc.maxErr = (a - b).abs().max().item<double>();
  acc.refMax = b.abs().max().item<double>();
  auto a64 = a.to(torch::kDouble), b64 = b.to(torch::kDouble);
  acc.cosine = ((a64 * b64).sum() / (a64.norm() * b64.norm())).item<double>();
  return acc;
}

// ModuleStats' eager-fallback counter (Note [Never worse than eager]), where this kiln has it.
template <typename Stats>
uint64_t eagerCallsOf(const Stats& s) {
  if constexpr (requires { s.eagerCalls; })
    return s.eagerCalls;
  else
    return 0;
}

// Calls kiln until no background job (specialized kernels, generic kernels, tuning) is pending, at
// most `timeoutS`; with tuning on, first past the tuning threshold. Returns the seconds waited.
double settle(const kiln::Session& session, const kiln::jit::OptimizedModule& fast,
              const std::vector<torch::IValue>& in, const Device& d, double timeoutS) {
  auto t0 = Clock::now();
  auto drain = [&] {
    while (msSince(t0) < timeoutS * 1e3) {
      fast.forward(in);
      d.sync();
      if (fast.stats().backgroundPending == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  };
  drain();
  if (session.options().tune == kiln::TuneMode::kBackground) {
    for (int i = 0; i <= session.options().tuneThreshold; ++i) fast.forward(in);
    drain();
  }
  // Note [Plan against the module]: its one timing job runs now, not among the timed calls.
  if (session.options().compareModule) {
    for (int i = 0; i <= kiln::jit::kCompareAfter; ++i) fast.forward(in);
    drain();
  }
  return msSince(t0) / 1e3;
}

// One contender of a row: how to call it on input set i, and what it measured.
struct Contender {
  std::function<torch::Tensor(size_t)> call;
  std::string error;  // set: the contender failed (or has no package); its cells say so
  Accuracy acc;
  double ms = 0, peakMb = -1;
  bool ok() const { return error.empty(); }
};

Contender failed(std::string error) {
  Contender c;
  c.error = std::move(error);
  return c;
}

std::string fmtMs(const Contender& c) {
  return c.ok() ? strf("%.4f", c.ms) : c.error;
}

// What a model holds between calls, for the second table.
struct Resident {
  double eagerMb = -1, aotiMb = -1, kilnMb = -1, aotiLoadMs = -1;
  std::vector<std::string> kilnFirstCall;  // per batch: "b=8: 1234 ms + 5.1 s settling"
};

struct Args {
  std::string dir;
  std::vector<std::string> models;
  std::vector<int64_t> batches;
  int64_t seq = 0;
  int reps = 0;
  bool cuda = true, tune = false, graphs = false;
  bool profile = false;  // --profile
  std::string firstCall, model;
  int64_t batch = 1;
  std::string precisionDir;  // --precision DIR16
  bool quant = false;        // --quant
};

// The AOTI package for `batch`: DIR/<name>.pt2 (dynamic), else DIR/<name>_b<batch>.pt2, else "".
std::string aotiPath(const Args& a, const Model& m, int64_t batch) {
  for (const std::string& p : {a.dir + "/" + m.name + ".pt2",
                               a.dir + "/" + m.name + "_b" + std::to_string(batch) + ".pt2"})
    if (std::ifstream(p).good()) return p;
  return "";
}

void printRow(const Model& m, int64_t batch, int64_t seq, const Contender& eager,
              const Contender& kiln, const Contender& aoti, const std::string& notes) {
  auto ratio = [](const Contender& num, const Contender& den) {
    return num.ok() && den.ok() ? strf("%.2fx", num.ms / den.ms) : std::string("-");
  };
  // The max error, and in brackets its share of the largest |value| of eager's output.
  auto err = [](const Contender& c) {
    if (!c.ok()) return std::string("-");
    if (!(c.acc.refMax > 0)) return strf("%.3g", c.acc.maxErr);
    return strf("%.3g (%.2f%%)", c.acc.maxErr, 100.0 * c.acc.maxErr / c.acc.refMax);
  };
  auto cos = [](const Contender& c) {
    return c.ok() ? strf("%.6f", c.acc.cosine) : std::string("-");
  };
  auto mb = [](const Contender& c) {
    return c.ok() && c.peakMb >= 0 ? strf("%.0f", c.peakMb) : std::string("-");
  };
  std::printf(
      "| %s | %lld | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s |\n",
      m.name.c_str(), static_cast<long long>(batch),
      m.text() ? std::to_string(seq).c_str() : "224x224", fmtMs(eager).c_str(), fmtMs(kiln).c_str(),
      fmtMs(aoti).c_str(), ratio(eager, kiln).c_str(), ratio(aoti, kiln).c_str(), err(kiln).c_str(),
      cos(kiln).c_str(), err(aoti).c_str(), cos(aoti).c_str(), mb(eager).c_str(), mb(kiln).c_str(),
      mb(aoti).c_str(), notes.c_str());
  std::fflush(stdout);
}

// Dynamic batch (and sequence for text), as a server would declare them.
kiln::jit::Options kilnOptions(const Model& m, kiln::Session& session) {
  kiln::jit::Options o;
  if (m.text()) {
    o.inputNames = {"ids", "mask"};
    o.dynamicDims = {
        {"ids", 0, "batch"}, {"mask", 0, "batch"}, {"ids", 1, "seq"}, {"mask", 1, "seq"}};
  } else {
    o.inputNames = {"x"};
    o.dynamicDims = {{"x", 0, "batch"}};
  }
  o.session = &session;
  return o;
}

// One model at every batch. Loads the TorchScript once, optimizes it once (one kiln module serves
// every batch, as in production) and loads each AOTI package once.
Resident benchModel(const Args& a, const Device& d, kiln::Session& session,
                    kiln::Session* graphSession, const Model& m) {
  Resident res;
  const double before = d.cuda ? allocatedMb() : 0;
  torch::jit::Module module = torch::jit::load(a.dir + "/" + m.file, d.device());
  module.eval();
  if (d.cuda) res.eagerMb = allocatedMb() - before;

  kiln::jit::Options o = kilnOptions(m, session);
  std::unique_ptr<kiln::jit::OptimizedModule> fast;
  std::string kilnSetupError;
  try {
    fast = std::make_unique<kiln::jit::OptimizedModule>(kiln::jit::optimize(module, o));
  } catch (const std::exception& e) {
    kilnSetupError = "error: " + oneLine(e.what());
  }

  std::unique_ptr<kiln::jit::OptimizedModule> fastGraphs;  // --graphs
  std::string graphsSetupError;
  if (graphSession != nullptr) {
    try {
      fastGraphs = std::make_unique<kiln::jit::OptimizedModule>(
          kiln::jit::optimize(module, kilnOptions(m, *graphSession)));
    } catch (const std::exception& e) {
      graphsSetupError = "error: " + oneLine(e.what());
    }
  }

  std::map<std::string, std::unique_ptr<AotiLoader>> loaders;  // by package path
  auto loader = [&](const std::string& path) -> AotiLoader& {
    auto& l = loaders[path];
    if (!l) {
      const double used = d.cuda ? deviceUsedMb() : 0;
      const double ms = d.wallMs([&] { l = std::make_unique<AotiLoader>(path); });
      if (res.aotiLoadMs < 0) res.aotiLoadMs = ms;
      if (d.cuda) res.aotiMb = std::max(res.aotiMb, 0.0) + deviceUsedMb() - used;
    }
    return *l;
  };

  const double kilnBefore = d.cuda ? allocatedMb() : 0;
  for (int64_t batch : a.batches) {
    const int64_t seq = m.text() ? a.seq : 224;
    std::vector<std::vector<torch::Tensor>> in;
    std::vector<std::vector<torch::IValue>> iv;
    for (int set = 0; set < 2; ++set) {
      in.push_back(makeInputs(m, batch, seq, d, set));
      iv.emplace_back(in.back().begin(), in.back().end());
    }
    Contender eagerRun, kilnRun, aotiRun, graphsRun;
    std::string notes;
    eagerRun.call = [&](size_t i) { return firstTensor(module.forward(iv[i])); };
    torch::Tensor want;
    try {
      want = eagerRun.call(0);
    } catch (const std::exception& e) {
      printRow(m, batch, seq, failed("error: " + oneLine(e.what())), failed("-"), failed("-"), "");
      continue;
    }

    // kiln: the first call builds the plan; then settle until its final kernels are in.
    kilnRun.error = kilnSetupError;
    if (fast) {
      kilnRun.call = [&](size_t i) { return firstTensor(fast->forward(iv[i])); };
      try {
        double firstMs = d.wallMs([&] { kilnRun.call(0); });
        double settleS = settle(session, *fast, iv[0], d,
                                session.options().tune == kiln::TuneMode::kBackground ? 180 : 60);
        res.kilnFirstCall.push_back(strf("b=%lld: %.0f ms + %.1f s settling",
                                         static_cast<long long>(batch), firstMs, settleS));
        kilnRun.acc = compare(kilnRun.call(0), want);
        if (fast->stats().backgroundPending > 0) notes += "background jobs still pending; ";
      } catch (const std::exception& e) {
        kilnRun.error = "error: " + oneLine(e.what());
      }
    }

    graphsRun.error = graphSession == nullptr ? "not asked for" : graphsSetupError;
    if (fastGraphs) {
      graphsRun.call = [&](size_t i) { return firstTensor(fastGraphs->forward(iv[i])); };
      try {
        graphsRun.call(0);
        settle(*graphSession, *fastGraphs, iv[0], d, 60);
        graphsRun.call(1);  // both input sets' sizes captured (they are the same sizes)
        graphsRun.acc = compare(graphsRun.call(0), want);
      } catch (const std::exception& e) {
        graphsRun.error = "error: " + oneLine(e.what());
      }
    }

    // AOTI: the package's first run at this batch is part of its warm-up, as kiln's.
    const std::string path = aotiPath(a, m, batch);
    if (path.empty()) {
      aotiRun.error = "no package";
    } else {
      try {
        AotiLoader& l = loader(path);
        aotiRun.call = [&](size_t i) { return l.run(in[i]).at(0); };
        aotiRun.acc = compare(aotiRun.call(0), want);
      } catch (const std::exception& e) {
        aotiRun.error = "error: " + oneLine(e.what());
      }
    }

    try {
      std::vector<Contender*> live;
      for (Contender* c : {&eagerRun, &kilnRun, &aotiRun, &graphsRun})
        if (c->ok()) live.push_back(c);
      for (int w = 0; w < 5; ++w)  // also past TorchScript's profiling runs
        for (Contender* c : live) c->call(static_cast<size_t>(w % 2));
      const kiln::jit::ModuleStats before = fast ? fast->stats() : kiln::jit::ModuleStats{};
      const kiln::jit::ModuleStats graphsBefore =
          fastGraphs ? fastGraphs->stats() : kiln::jit::ModuleStats{};
      std::vector<std::function<void(int)>> fns;
      for (Contender* c : live) fns.push_back([c](int i) { c->call(static_cast<size_t>(i % 2)); });
      const std::vector<double> ms = d.medianMsInTurns(fns, a.reps, 5);
      for (size_t i = 0; i < live.size(); ++i) live[i]->ms = ms[i];
      for (Contender* c : live)
        c->peakMb = workingMb(d, [c](int i) { c->call(static_cast<size_t>(i % 2)); });
      if (fast && kilnRun.ok()) {  // per call, over the timed calls
        const kiln::jit::ModuleStats after = fast->stats();
        const uint64_t calls = after.calls - before.calls;
        if (uint64_t ran = eagerCallsOf(after) - eagerCallsOf(before); ran > 0)
          notes +=
              strf("kiln ran %llu of %llu calls eagerly (fallback); ",
                   static_cast<unsigned long long>(ran), static_cast<unsigned long long>(calls));
        if (uint64_t ran = after.moduleFasterCalls - before.moduleFasterCalls; ran > 0)
          notes +=
              strf("the module served %llu of %llu kiln calls (timed faster than the plan); ",
                   static_cast<unsigned long long>(ran), static_cast<unsigned long long>(calls));
        if (uint64_t g = after.groupFallbacks - before.groupFallbacks; g > 0 && calls > 0)
          notes += strf("%.0f fusion groups per call via ATen; ",
                        static_cast<double>(g) / static_cast<double>(calls));
      }
      if (fastGraphs && graphSession != nullptr) {
        const std::string graphsLabel = graphSession->options().cudaGraphs
                                            ? "kiln with CUDA graphs"
                                            : "kiln without CUDA graphs";
        if (!graphsRun.ok()) {
          notes += graphsLabel + ": " + graphsRun.error + "; ";
        } else {
          const kiln::jit::ModuleStats after = fastGraphs->stats();
          auto ratio = [&](const Contender& num) {
            return num.ok() ? strf("%.2fx", num.ms / graphsRun.ms) : std::string("-");
          };
          notes +=
              graphsLabel +
              strf(
                  ": %.4f ms (%s eager, %s AOTI; max err %.3g, cosine %.6f; "
                  "%llu of %llu timed calls replayed); ",
                  graphsRun.ms, ratio(eagerRun).c_str(), ratio(aotiRun).c_str(),
                  graphsRun.acc.maxErr, graphsRun.acc.cosine,
                  static_cast<unsigned long long>(after.graphReplays - graphsBefore.graphReplays),
                  static_cast<unsigned long long>(after.calls - graphsBefore.calls));
        }
      }
    } catch (const std::exception& e) {
      notes += "timing failed: " + oneLine(e.what());
    }
    if (notes.ends_with("; ")) notes.resize(notes.size() - 2);
    printRow(m, batch, seq, eagerRun, kilnRun, aotiRun, notes);
    if (a.profile && fast && kilnRun.ok() && batch == a.batches.back()) {
      try {
        std::fprintf(stderr, "== %s, batch %lld: where kiln's time goes (profile())\n%s\n",
                     m.name.c_str(), static_cast<long long>(batch),
                     fast->profile(iv[0], 20).toString().c_str());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "== %s: profile failed: %s\n", m.name.c_str(), e.what());
      }
    }
  }
  if (fast) {
    if (d.cuda) res.kilnMb = allocatedMb() - kilnBefore;
    std::fprintf(stderr, "== %s\n%s\n%s\n", m.name.c_str(), fast->stats().toString().c_str(),
                 fast->explain().c_str());
  }
  if (fastGraphs)
    std::fprintf(stderr, "== %s (CUDA graphs %s)\n%s\n%s\n", m.name.c_str(),
                 graphSession->options().cudaGraphs ? "on" : "off",
                 fastGraphs->stats().toString().c_str(), fastGraphs->explain().c_str());
  return res;
}

// --first-call: one measurement, one markdown row.
int firstCall(const Args& a, const Device& d, kiln::Session& session) {
  const std::vector<Model> models = readModels(a.dir);
  auto it =
      std::find_if(models.begin(), models.end(), [&](const Model& m) { return m.name == a.model; });
  if (it == models.end() || !it->error.empty()) {
    std::fprintf(stderr, "kiln-real-bench: no traced model %s in %s/models.tsv\n", a.model.c_str(),
                 a.dir.c_str());
    return 1;
  }
  const Model& m = *it;
  const std::string label = a.firstCall == "eager" ? "eager" : "kiln " + a.firstCall;
  try {
    torch::NoGradGuard ng;
    auto t0 = Clock::now();
    torch::jit::Module module = torch::jit::load(a.dir + "/" + m.file, d.device());
    module.eval();
    std::vector<torch::Tensor> in = makeInputs(m, a.batch, a.seq, d, 0);
    std::vector<torch::IValue> iv(in.begin(), in.end());
    d.sync();
    const double loadMs = msSince(t0);
    std::string notes;
    auto t1 = Clock::now();
    if (a.firstCall == "eager") {
      module.forward(iv);
      d.sync();
    } else {
      kiln::jit::OptimizedModule fast = kiln::jit::optimize(module, kilnOptions(m, session));
      const double optimizeMs = msSince(t1);
      auto t2 = Clock::now();
      fast.forward(iv);
      const double forwardMs = msSince(t2);
      d.sync();
      const kiln::jit::ModuleStats st = fast.stats();
      std::fprintf(stderr, "%s\n", st.toString().c_str());
      notes = c10::str("kernels compiled ", st.kernelsCompiled, ", cached ", st.kernelsCached,
                       ", traced ", st.captures, ", capture from cache ", st.capturesCached,
                       "; optimize() ", c10::str(std::lround(optimizeMs)), " ms, forward() ",
                       c10::str(std::lround(forwardMs)), " ms on the host");
      // Note [First call breakdown]: the plan's own line, from explain().
      const std::string explain = fast.explain();
      if (size_t at = explain.find("first call: "); at != std::string::npos)
        notes += "; " + explain.substr(at, explain.find('\n', at) - at);
      if (eagerCallsOf(st) > 0) notes += ", ran eagerly (fallback)";
    }
    const double firstMs = msSince(t1);
    std::printf("| %s [%lld%s] %s | %s | %.0f | %.1f | %.0f | %s |\n", m.name.c_str(),
                static_cast<long long>(a.batch),
                m.text() ? (", " + std::to_string(a.seq)).c_str() : ", 224x224",
                m.dtype == "float32" ? "fp32" : "fp16", label.c_str(), loadMs, firstMs,
                loadMs + firstMs, notes.c_str());
    std::fflush(stdout);
    // The session's destructor waits for background compiles, so none is cut off mid-write.
  } catch (const std::exception& e) {
    std::printf("| %s [%lld] | %s | error: %s | | | |\n", m.name.c_str(),
                static_cast<long long>(a.batch), label.c_str(), oneLine(e.what()).c_str());
    return 1;
  }
  return 0;
}

// The lines above a table: the device, tuning, and how each contender was timed.
void printPreamble(const Device& d, const kiln::Session& session, int reps, const char* more) {
  if (d.cuda)
    std::printf("device: %s\n", session.cudaEnvironment().describe().c_str());
  else
    std::printf("device: cpu (wall-clock medians, tiny sizes: a smoke test, not a benchmark)\n");
  std::printf("kiln tuning: %s; %d samples of 5 back-to-back calls per contender%s\n\n",
              std::string(kiln::toString(session.options().tune)).c_str(), reps, more);
}

// --precision: float32 traces in DIR run in 16 bits by kiln, against the same models converted to
// float16 by hand (DIR16), all against eager float32.
int precisionBench(const Args& a, const Device& d, kiln::Session& session) {
  torch::NoGradGuard ng;
  const std::vector<Model> all = readModels(a.dir), half = readModels(a.precisionDir);
  printPreamble(d, session, a.reps, "; cosine and max err against eager float32");
  std::printf(
      "| model | batch | seq | eager fp32 ms | eager fp16 ms | kiln fp16 by hand ms | kiln "
      "precision=fp16 ms | kiln precision=bf16 ms | fp16 vs by hand | bf16 vs by hand | cosine "
      "by hand / fp16 / bf16 | max err by hand / fp16 / bf16 | notes |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  int failures = 0;
  for (const Model& m : all) {
    if (!a.models.empty() && std::find(a.models.begin(), a.models.end(), m.name) == a.models.end())
      continue;
    auto h =
        std::find_if(half.begin(), half.end(), [&](const Model& x) { return x.name == m.name; });
    if (!m.error.empty() || m.dtype != "float32" || h == half.end() || !h->error.empty() ||
        h->dtype != "float16") {
      std::printf("| %s | | | error: needs a float32 trace in DIR and a float16 one in DIR16 |\n",
                  m.name.c_str());
      ++failures;
      continue;
    }
    try {
      torch::jit::Module m32 = torch::jit::load(a.dir + "/" + m.file, d.device());
      torch::jit::Module m16 = torch::jit::load(a.precisionDir + "/" + h->file, d.device());
      m32.eval();
      m16.eval();
      struct Kiln {
        const char* label;
        std::unique_ptr<kiln::jit::OptimizedModule> fast;
        bool onHalf;
      };
      std::vector<Kiln> kilns;
      for (auto [label, precision, onHalf] :
           {std::tuple{"by hand", kiln::Precision::kModule, true},
            std::tuple{"fp16", kiln::Precision::kFloat16, false},
            std::tuple{"bf16", kiln::Precision::kBFloat16, false}}) {
        kiln::jit::Options o = kilnOptions(m, session);
        o.precision = precision;
        kilns.push_back({label,
                         std::make_unique<kiln::jit::OptimizedModule>(
                             kiln::jit::optimize(onHalf ? m16 : m32, o)),
                         onHalf});
      }
      for (int64_t batch : a.batches) {
        const int64_t seq = m.text() ? a.seq : 224;
        std::vector<std::vector<torch::IValue>> in32, in16;
        for (int set = 0; set < 2; ++set) {
          std::vector<torch::Tensor> t = makeInputs(m, batch, seq, d, set);
          in32.emplace_back(t.begin(), t.end());
          for (torch::Tensor& x : t)
            if (x.scalar_type() == torch::kFloat) x = x.to(torch::kHalf);
          in16.emplace_back(t.begin(), t.end());
        }
        std::vector<Contender> c(2 + kilns.size());
        c[0].call = [&](size_t i) { return firstTensor(m32.forward(in32[i])); };
        c[1].call = [&](size_t i) { return firstTensor(m16.forward(in16[i])); };
        for (size_t k = 0; k < kilns.size(); ++k) {
          kiln::jit::OptimizedModule* fast = kilns[k].fast.get();
          auto& in = kilns[k].onHalf ? in16 : in32;
          c[2 + k].call = [fast, &in](size_t i) { return firstTensor(fast->forward(in[i])); };
        }
        std::string notes;
        const torch::Tensor want = c[0].call(0);
        for (size_t i = 1; i < c.size(); ++i) {
          try {
            c[i].call(0);
            if (i >= 2)
              settle(session, *kilns[i - 2].fast, kilns[i - 2].onHalf ? in16[0] : in32[0], d, 60);
            c[i].acc = compare(c[i].call(0), want);
          } catch (const std::exception& e) {
            c[i].error = "error: " + oneLine(e.what());
            ++failures;
          }
        }
        std::vector<Contender*> live;
        for (Contender& x : c)
          if (x.ok()) live.push_back(&x);
        for (int w = 0; w < 5; ++w)
          for (Contender* x : live) x->call(static_cast<size_t>(w % 2));
        std::vector<std::function<void(int)>> fns;
        for (Contender* x : live)
          fns.push_back([x](int i) { x->call(static_cast<size_t>(i % 2)); });
        const std::vector<double> ms = d.medianMsInTurns(fns, a.reps, 5);
        for (size_t i = 0; i < live.size(); ++i) live[i]->ms = ms[i];
        for (const Kiln& k : kilns)
          if (k.fast->stats().backgroundPending > 0)
            notes += std::string(k.label) + ": background jobs still pending; ";
        auto vs = [&](const Contender& x) {
          return x.ok() && c[2].ok() ? strf("%.3fx", x.ms / c[2].ms) : std::string("-");
        };
        auto cos = [](const Contender& x) {
          return x.ok() ? strf("%.6f", x.acc.cosine) : std::string("-");
        };
        auto err = [](const Contender& x) {
          return x.ok() ? strf("%.3g", x.acc.maxErr) : std::string("-");
        };
        if (notes.ends_with("; ")) notes.resize(notes.size() - 2);
        std::printf(
            "| %s | %lld | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s / %s / %s | "
            "%s |\n",
            m.name.c_str(), static_cast<long long>(batch),
            m.text() ? std::to_string(seq).c_str() : "224x224", fmtMs(c[0]).c_str(),
            fmtMs(c[1]).c_str(), fmtMs(c[2]).c_str(), fmtMs(c[3]).c_str(), fmtMs(c[4]).c_str(),
            vs(c[3]).c_str(), vs(c[4]).c_str(), cos(c[2]).c_str(), cos(c[3]).c_str(),
            cos(c[4]).c_str(), err(c[2]).c_str(), err(c[3]).c_str(), err(c[4]).c_str(),
            notes.c_str());
        std::fflush(stdout);
      }
      for (const Kiln& k : kilns)
        std::fprintf(stderr, "== %s (%s)\n%s\n%s\n", m.name.c_str(), k.label,
                     k.fast->stats().toString().c_str(), k.fast->explain().c_str());
    } catch (const std::exception& e) {
      std::printf("| %s | | | error: %s |\n", m.name.c_str(), oneLine(e.what()).c_str());
      ++failures;
    }
    std::fflush(stdout);
    if (d.cuda) c10::cuda::CUDACachingAllocator::emptyCache();
  }
  return failures == 0 ? 0 : 1;
}

// --quant: the float16 traces in DIR with kiln's 8-bit linears against kiln in 16 bits.
int quantBench(const Args& a, const Device& d, kiln::Session& session) {
  torch::NoGradGuard ng;
  const std::vector<Model> all = readModels(a.dir);
  printPreamble(d, session, a.reps, "");
  std::printf(
      "| model | batch | seq | eager fp16 ms | kiln module ms | kiln fp8 ms | kiln int8 ms | fp8 "
      "vs "
      "module | int8 vs module | cosine module / fp8 / int8 | max err module / fp8 / int8 | 8-bit "
      "linears fp8 / int8 | notes |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  int failures = 0;
  const std::vector<std::pair<const char*, kiln::Precision>> kinds = {
      {"module", kiln::Precision::kModule},
      {"fp8", kiln::Precision::kFp8},
      {"int8", kiln::Precision::kInt8}};
  for (const Model& m : all) {
    if (!a.models.empty() && std::find(a.models.begin(), a.models.end(), m.name) == a.models.end())
      continue;
    if (!m.error.empty()) {
      std::printf("| %s | | | error: %s |\n", m.name.c_str(), m.error.c_str());
      ++failures;
      continue;
    }
    try {
      torch::jit::Module mod = torch::jit::load(a.dir + "/" + m.file, d.device());
      mod.eval();
      std::vector<std::unique_ptr<kiln::jit::OptimizedModule>> kilns;
      for (const auto& [label, precision] : kinds) {
        kiln::jit::Options o = kilnOptions(m, session);
        o.precision = precision;
        kilns.push_back(std::make_unique<kiln::jit::OptimizedModule>(kiln::jit::optimize(mod, o)));
      }
      for (int64_t batch : a.batches) {
        const int64_t seq = m.text() ? a.seq : 224;
        std::vector<std::vector<torch::IValue>> in;
        for (int set = 0; set < 2; ++set) {
          std::vector<torch::Tensor> t = makeInputs(m, batch, seq, d, set);
          in.emplace_back(t.begin(), t.end());
        }
        std::vector<Contender> c(1 + kilns.size());
        c[0].call = [&](size_t i) { return firstTensor(mod.forward(in[i])); };
        for (size_t k = 0; k < kilns.size(); ++k) {
          kiln::jit::OptimizedModule* fast = kilns[k].get();
          c[1 + k].call = [fast, &in](size_t i) { return firstTensor(fast->forward(in[i])); };
        }
        const torch::Tensor want = c[0].call(0);
        for (size_t i = 1; i < c.size(); ++i) {
          try {
            // Past calibration (Note [Quantized linears]: KILN_QUANT_CALIBRATION_CALLS), both
            // input sets.
            for (int w = 0; w < session.options().quantCalibrationCalls + 2; ++w)
              c[i].call(static_cast<size_t>(w % 2));
            settle(session, *kilns[i - 1], in[0], d, 60);
            c[i].acc = compare(c[i].call(0), want);
          } catch (const std::exception& e) {
            c[i].error = "error: " + oneLine(e.what());
            ++failures;
          }
        }
        std::vector<Contender*> live;
        for (Contender& x : c)
          if (x.ok()) live.push_back(&x);
        for (int w = 0; w < 5; ++w)
          for (Contender* x : live) x->call(static_cast<size_t>(w % 2));
        std::vector<std::function<void(int)>> fns;
        for (Contender* x : live)
          fns.push_back([x](int i) { x->call(static_cast<size_t>(i % 2)); });
        const std::vector<double> ms = d.medianMsInTurns(fns, a.reps, 5);
        for (size_t i = 0; i < live.size(); ++i) live[i]->ms = ms[i];
        auto vs = [&](const Contender& x) {
          return x.ok() && c[1].ok() ? strf("%.3fx", c[1].ms / x.ms) : std::string("-");
        };
        auto cos = [](const Contender& x) {
          return x.ok() ? strf("%.6f", x.acc.cosine) : std::string("-");
        };
        auto err = [](const Contender& x) {
          return x.ok() ? strf("%.3g", x.acc.maxErr) : std::string("-");
        };
        auto eight = [&](size_t k) {
          const std::string j = kilns[k]->explainJson();
          size_t n = 0, total = 0;
          for (size_t at = j.find("\"quantized\": "); at != std::string::npos;
               at = j.find("\"quantized\": ", at + 1)) {
            ++total;
            n += j.compare(at + 13, 4, "true") == 0;
          }
          return strf("%zu of %zu", n, total);
        };
        std::printf(
            "| %s | %lld | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s / %s / %s | %s / "
            "%s | |\n",
            m.name.c_str(), static_cast<long long>(batch),
            m.text() ? std::to_string(seq).c_str() : "224x224", fmtMs(c[0]).c_str(),
            fmtMs(c[1]).c_str(), fmtMs(c[2]).c_str(), fmtMs(c[3]).c_str(), vs(c[2]).c_str(),
            vs(c[3]).c_str(), cos(c[1]).c_str(), cos(c[2]).c_str(), cos(c[3]).c_str(),
            err(c[1]).c_str(), err(c[2]).c_str(), err(c[3]).c_str(), eight(1).c_str(),
            eight(2).c_str());
        std::fflush(stdout);
      }
      for (size_t k = 0; k < kilns.size(); ++k)
        std::fprintf(stderr, "== %s (%s)\n%s\n%s\n", m.name.c_str(), kinds[k].first,
                     kilns[k]->stats().toString().c_str(), kilns[k]->explain().c_str());
    } catch (const std::exception& e) {
      std::printf("| %s | | | error: %s |\n", m.name.c_str(), oneLine(e.what()).c_str());
      ++failures;
    }
    std::fflush(stdout);
    if (d.cuda) c10::cuda::CUDACachingAllocator::emptyCache();
  }
  return failures == 0 ? 0 : 1;
}

const char* kUsage =
    "usage: kiln-real-bench DIR [--models a,b] [--batches 1,8,32] [--seq 128] [--reps N] "
    "[--tune] [--graphs] [--profile] [--device cuda|cpu]\n"
    "       kiln-real-bench DIR --first-call eager|cold|warm --model NAME --batch B [--seq S]\n"
    "       kiln-real-bench DIR --precision DIR16 [--models a,b] [--batches 1,8,32] [--seq S] "
    "[--reps N]\n"
    "       kiln-real-bench DIR --quant [--models a,b] [--batches 1,8,32] [--seq S] [--reps N]\n";

}  // namespace

int main(int argc, char** argv) {
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  Args a;
  std::string batches, models;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    const bool hasValue = i + 1 < argc;
    if (flag == "--models" && hasValue) {
      models = argv[++i];
    } else if (flag == "--batches" && hasValue) {
      batches = argv[++i];
    } else if (flag == "--seq" && hasValue) {
      a.seq = std::atoll(argv[++i]);
    } else if (flag == "--reps" && hasValue) {
      a.reps = std::atoi(argv[++i]);
    } else if (flag == "--device" && hasValue) {
      a.cuda = std::string(argv[++i]) != "cpu";
    } else if (flag == "--profile") {
      a.profile = true;
    } else if (flag == "--first-call" && hasValue) {
      a.firstCall = argv[++i];
    } else if (flag == "--model" && hasValue) {
      a.model = argv[++i];
    } else if (flag == "--batch" && hasValue) {
      a.batch = std::atoll(argv[++i]);
    } else if (flag == "--precision" && hasValue) {
      a.precisionDir = argv[++i];
    } else if (flag == "--quant") {
      a.quant = true;
    } else if (flag == "--graphs") {
      a.graphs = true;
    } else if (flag == "--tune") {
      a.tune = true;
    } else if (a.dir.empty() && flag.rfind("--", 0) != 0) {
      a.dir = flag;
    } else {
      std::fprintf(stderr, "kiln-real-bench: bad argument %s\n%s", flag.c_str(), kUsage);
      return 2;
    }
  }
  const bool firstCallMode = !a.firstCall.empty();
  if (a.dir.empty() ||
      (firstCallMode && (a.model.empty() || (a.firstCall != "eager" && a.firstCall != "cold" &&
                                             a.firstCall != "warm")))) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  if (a.cuda && !torch::cuda::is_available()) {
    std::fprintf(stderr, "kiln-real-bench: needs a GPU (or --device cpu)\n");
    return 1;
  }
  for (const std::string& b : split(batches.empty() ? (a.cuda ? "1,8,32" : "1,2") : batches, ','))
    a.batches.push_back(std::atoll(b.c_str()));
  a.models = split(models, ',');
  if (a.seq <= 0) a.seq = a.cuda ? 128 : 16;
  if (a.reps <= 0) a.reps = a.cuda ? 20 : 3;

  // Tuning off unless asked for (as kiln-bench); KILN_* variables still override (KILN_TUNE too).
  kiln::Options kopt;
  kopt.tune = a.tune ? kiln::TuneMode::kBackground : kiln::TuneMode::kOff;
  const Device d{a.cuda};
  // The caching allocator's statistics need its device initialized ("Invalid device argument").
  if (d.cuda) torch::empty({1}, torch::TensorOptions().device(torch::kCUDA));
  try {
    kiln::Session session(kopt);
    if (firstCallMode) return firstCall(a, d, session);
    if (!a.precisionDir.empty()) return precisionBench(a, d, session);
    if (a.quant) return quantBench(a, d, session);
    std::unique_ptr<kiln::Session> graphSession;  // --graphs: the same options, graphs flipped
    if (a.graphs) {
      kiln::Options g = session.options();
      g.cudaGraphs = !g.cudaGraphs;
      graphSession = std::make_unique<kiln::Session>(g);
    }

    torch::NoGradGuard ng;
    const std::vector<Model> all = readModels(a.dir);
    printPreamble(d, session, a.reps, "");
    std::printf(
        "| model | batch | seq | eager ms | kiln ms | AOTI ms | kiln/eager speedup | kiln/AOTI "
        "speedup | kiln max err (%% of max eager) | kiln cosine | AOTI max err (%% of max eager) | "
        "AOTI cosine | peak MB "
        "eager/kiln/AOTI | notes |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::fflush(stdout);
    std::vector<std::pair<std::string, Resident>> resident;
    for (const Model& m : all) {
      if (!a.models.empty() &&
          std::find(a.models.begin(), a.models.end(), m.name) == a.models.end())
        continue;
      if (!m.error.empty()) {
        std::printf("| %s | | | error (real_models.py): %s |\n", m.name.c_str(),
                    oneLine(m.error).c_str());
        continue;
      }
      try {
        resident.emplace_back(m.name, benchModel(a, d, session, graphSession.get(), m));
      } catch (const std::exception& e) {
        std::printf("| %s | | | error: %s |\n", m.name.c_str(), oneLine(e.what()).c_str());
        std::fflush(stdout);
      }
      if (a.cuda) c10::cuda::CUDACachingAllocator::emptyCache();
    }

    std::printf(
        "\nHeld between calls: eager = the TorchScript module's weights (allocator), AOTI = its "
        "packages' device memory at load (cudaMemGetInfo), kiln = allocator growth over the whole "
        "model run (its own weights, plans); speedups: eager ms / kiln ms and AOTI ms / kiln "
        "ms.\n\n");
    std::printf(
        "| model | eager MB | kiln MB | AOTI MB | AOTI load ms | kiln first call + settling |\n");
    std::printf("|---|---|---|---|---|---|\n");
    auto mb = [](double v) { return v >= 0 ? strf("%.0f", v) : std::string("-"); };
    for (const auto& [name, r] : resident) {
      std::string first;
      for (const std::string& s : r.kilnFirstCall) first += (first.empty() ? "" : "; ") + s;
      std::printf("| %s | %s | %s | %s | %s | %s |\n", name.c_str(), mb(r.eagerMb).c_str(),
                  mb(r.kilnMb).c_str(), mb(r.aotiMb).c_str(), mb(r.aotiLoadMs).c_str(),
                  first.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-real-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}

// kiln-aoti-bench: the AOTInductor peer of kiln-bench. Loads the packages that bench/peer_aoti.py
// compiled (PACKAGE_DIR/manifest.tsv) with torch::inductor::AOTIModelPackageLoader and times them
// on kiln-bench's workloads, sizes and method: steady-state medians with CUDA events after warm-up
// (memory-bound: 20 samples of 10 back-to-back calls; models: 10 of 5), inputs rotated, bytes read
// + written once, host overhead per call (n=128) as wall time per call of 2000 calls. Eager
// LibTorch is timed beside it and is the reference for max err (memory-bound: the TorchScript of
// workloads.h with the package's own w, b; models: the TorchScript files in KILN_MODELS_DIR, whose
// weights peer_aoti.py packaged). Each row loads the package anew: "load ms" is unpacking and
// dlopen, "first run ms" the first call at that size (the peer's warm first call).
// Usage: kiln-aoti-bench PACKAGE_DIR [--quick] [--device cuda|cpu]
// --device cpu runs tiny sizes with wall-clock timing, to smoke-test without a GPU.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include "bench/timing.h"
#include "bench/workloads.h"
#include "src/support/version_flag.h"

namespace {

using Clock = std::chrono::steady_clock;
using torch::inductor::AOTIModelPackageLoader;

struct Package {
  std::string name, dtype, file, error;
  double seconds = 0;  // export + AOTI compile in peer_aoti.py
};

// manifest.tsv: a header, then name, dtype, file, seconds, error (empty when the package exists).
std::vector<Package> readManifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.tsv");
  if (!in) throw std::runtime_error("no " + dir + "/manifest.tsv (run bench/peer_aoti.py first)");
  std::vector<Package> out;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    Package p;
    std::string seconds;
    std::getline(fields, p.name, '\t');
    std::getline(fields, p.dtype, '\t');
    std::getline(fields, p.file, '\t');
    std::getline(fields, seconds, '\t');
    std::getline(fields, p.error);
    p.seconds = seconds.empty() ? 0 : std::stod(seconds);
    out.push_back(p);
  }
  return out;
}

using kiln::bench::Device;

// peer_aoti.py's names for workloads.h's memory-bound workloads, in its order.
const std::vector<std::string> kMemoryBoundNames = {"pointwise", "add_layernorm_gelu",
                                                    "masked_softmax"};

double maxErr(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kFloat) - want.to(torch::kFloat)).abs().max().item<double>();
}

struct Loaded {
  std::unique_ptr<AOTIModelPackageLoader> loader;
  double loadMs, firstMs;
  torch::Tensor first;
};

Loaded loadAndRun(const Device& d, const std::string& path, const std::vector<torch::Tensor>& in) {
  Loaded l;
  l.loadMs = d.wallMs([&] { l.loader = std::make_unique<AOTIModelPackageLoader>(path); });
  l.firstMs = d.wallMs([&] { l.first = l.loader->run(in)[0]; });
  return l;
}

std::vector<torch::IValue> ivalues(const std::vector<torch::Tensor>& ts) {
  return {ts.begin(), ts.end()};
}

void benchMemoryBound(const Device& d, const Package& p, const std::string& path, bool quick) {
  auto it = std::find(kMemoryBoundNames.begin(), kMemoryBoundNames.end(), p.name);
  const kiln::bench::Workload w =
      kiln::bench::memoryBoundWorkloads()[static_cast<size_t>(it - kMemoryBoundNames.begin())];
  const auto dt = p.dtype == "fp16" ? torch::kHalf : torch::kFloat;
  const auto opts = torch::TensorOptions().device(d.device()).dtype(dt);
  std::vector<int64_t> sizes = {128, 4096, 32768};
  if (quick) sizes = {128, 4096};
  if (!d.cuda) sizes = {4};
  for (int64_t n : sizes) {
    const std::vector<std::vector<torch::Tensor>> inputs = w.rotatedInputs(n, opts);
    const int sets = static_cast<int>(inputs.size());
    Loaded aoti = loadAndRun(d, path, inputs[0]);
    auto& loader = *aoti.loader;

    // Eager reference: kiln-bench's TorchScript module with the package's own params.
    torch::jit::Module m("M");
    auto constants = loader.get_runner()->extract_constants_map(false);
    for (const auto& name : w.paramNames)
      m.register_parameter(name, constants.at(name).to(opts), false);
    m.define(w.source);
    m.eval();
    auto eager = [&](size_t i) { return m.forward(ivalues(inputs[i])).toTensor(); };
    double err = maxErr(aoti.first, eager(0));

    for (int i = 0; i < 5; ++i) {
      eager(static_cast<size_t>(i % sets));
      loader.run(inputs[static_cast<size_t>(i % sets)]);
    }
    const int reps = d.cuda ? 20 : 5;
    const std::vector<double> ms =
        d.medianMsInTurns({[&](int i) { eager(static_cast<size_t>(i % sets)); },
                           [&](int i) { loader.run(inputs[static_cast<size_t>(i % sets)]); }},
                          reps, 10);
    const double eagerMs = ms[0], aotiMs = ms[1];
    const double bytes = w.bytesPerCall(n, dt);
    std::string host;
    if (n == sizes.front()) {
      auto hostUs = [&](const std::function<void()>& f) {
        const int calls = 2000;
        double ms = d.wallMs([&] {
          for (int i = 0; i < calls; ++i) f();
        });
        return ms * 1e3 / calls;
      };
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.1f / %.1f", hostUs([&] { eager(0); }),
                    hostUs([&] { loader.run(inputs[0]); }));
      host = buf;
    }
    std::printf("| %s | %s | %lld | %.4f | %.4f | %.2fx | %.0f | %.2g | %.1f | %.2f | %s |\n",
                w.name.c_str(), p.dtype.c_str(), static_cast<long long>(n), eagerMs, aotiMs,
                eagerMs / aotiMs, bytes / (aotiMs * 1e-3) / 1e9, err, aoti.loadMs, aoti.firstMs,
                host.c_str());
    std::fflush(stdout);
  }
}

void benchModel(const Device& d, const Package& p, const std::string& path,
                const kiln::bench::ModelWorkload& w) {
  const auto dt = p.dtype == "fp16" ? torch::kHalf : torch::kFloat;
  const auto opts = torch::TensorOptions().device(d.device()).dtype(dt);
  auto m = torch::jit::load(std::string(KILN_MODELS_DIR) + "/" + w.file);
  m.eval();
  m.to(d.device(), dt);
  for (int64_t n : w.sizes) {
    std::vector<std::vector<torch::Tensor>> inputs;
    for (int i = 0; i < 2; ++i) inputs.push_back(w.inputs(n, opts));
    Loaded aoti = loadAndRun(d, path, inputs[0]);
    auto& loader = *aoti.loader;
    auto eager = [&](size_t i) { return m.forward(ivalues(inputs[i])).toTensor(); };
    double err = maxErr(aoti.first, eager(0));
    for (int i = 0; i < 3; ++i) {
      eager(static_cast<size_t>(i % 2));
      loader.run(inputs[static_cast<size_t>(i % 2)]);
    }
    const int reps = d.cuda ? 10 : 3;
    const std::vector<double> ms =
        d.medianMsInTurns({[&](int i) { eager(static_cast<size_t>(i % 2)); },
                           [&](int i) { loader.run(inputs[static_cast<size_t>(i % 2)]); }},
                          reps, 5);
    const double eagerMs = ms[0], aotiMs = ms[1];
    std::printf("| %s | %s | %lld | %.4f | %.4f | %.2fx | %.1f | %.2g | %.1f | %.2f |\n",
                w.name.c_str(), p.dtype.c_str(), static_cast<long long>(n), eagerMs, aotiMs,
                eagerMs / aotiMs, w.flops(n) / (aotiMs * 1e-3) / 1e12, err, aoti.loadMs,
                aoti.firstMs);
    std::fflush(stdout);
  }
}

// The packages of one workload that peer_aoti.py built, fp16 first (as kiln-bench).
std::vector<const Package*> built(const std::vector<Package>& packages, const std::string& name) {
  std::vector<const Package*> out;
  for (const char* dtype : {"fp16", "fp32"})
    for (const Package& p : packages)
      if (p.name == name && p.dtype == dtype && p.error.empty()) out.push_back(&p);
  return out;
}

// A package that fails to load or run is a row saying why, not the end of the run.
void guarded(const Package& p, const std::function<void()>& bench) {
  try {
    bench();
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    std::printf("| %s | %s | failed: %s |\n", p.name.c_str(), p.dtype.c_str(), what.c_str());
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  std::string dir;
  bool quick = false, cuda = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--device" && i + 1 < argc) {
      cuda = std::string(argv[++i]) != "cpu";
    } else if (dir.empty() && a.rfind("--", 0) != 0) {
      dir = a;
    } else {
      dir.clear();
      break;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "usage: kiln-aoti-bench PACKAGE_DIR [--quick] [--device cuda|cpu]\n");
    return 2;
  }
  if (cuda && !torch::cuda::is_available()) {
    std::fprintf(stderr, "kiln-aoti-bench: needs a GPU (or --device cpu)\n");
    return 1;
  }
  torch::NoGradGuard ng;
  const Device d{cuda};
  const std::vector<Package> packages = readManifest(dir);
  if (cuda)
    std::printf("device-to-device copy: %.0f GB/s\n\n", kiln::bench::copyBandwidthGBs());
  else
    std::printf("device: cpu (wall-clock medians, tiny sizes: a smoke test, not a benchmark)\n\n");

  std::printf(
      "| workload | dtype | n | eager ms | aoti ms | aoti speedup | aoti GB/s | max err | "
      "load ms | first run ms | host us/call (eager / aoti) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const std::string& name : kMemoryBoundNames)
    for (const Package* p : built(packages, name))
      guarded(*p, [&] { benchMemoryBound(d, *p, dir + "/" + p->file, quick); });

  std::printf(
      "\n| model | dtype | n | eager ms | aoti ms | aoti speedup | aoti TFLOP/s | max err | "
      "load ms | first run ms |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  for (const kiln::bench::ModelWorkload& w : kiln::bench::modelWorkloads(quick, /*small=*/!cuda))
    for (const Package* p : built(packages, w.key))
      guarded(*p, [&] { benchModel(d, *p, dir + "/" + p->file, w); });

  std::printf("\n| package | dtype | export + AOTI compile s (peer_aoti.py) | error |\n");
  std::printf("|---|---|---|---|\n");
  for (const Package& p : packages)
    std::printf("| %s | %s | %.1f | %s |\n", p.name.c_str(), p.dtype.c_str(), p.seconds,
                p.error.c_str());
  return 0;
}

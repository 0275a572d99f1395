// kiln-first-call: time from process start to the first result, one contender per process.
//
//   kiln-first-call --model encoder|mlp --mode eager|kiln [--batch 32] [--seq 128] [--prime 1]
//
// --prime 1 runs the model eagerly once before the clock starts, so LibTorch's own first-run
// costs (cuBLAS handles, lazy kernel loading) are paid already: what remains is kiln's own.
//
// Run it as separate processes (bench/run_gpu.sh does): eager, kiln with an empty KILN_CACHE_DIR
// (cold), then kiln again over the same directory (warm: kernels and the capture come from the
// disk cache). Prints one markdown table row: process start -> model loaded on the GPU, and the
// first forward() (for kiln: optimize() + forward, so capture or capture-cache load, codegen,
// compiles or cache loads, and the run) until its result is on the host side of a device sync.
// LibTorch's own lazy initialisation (cuBLAS handles, kernel images) lands in the first forward
// of every contender alike.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <kiln/kiln.h>

#include "src/support/version_flag.h"

namespace {

using Clock = std::chrono::steady_clock;
const Clock::time_point kProcessStart = Clock::now();

double msSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  std::string model = "encoder", mode = "kiln";
  int64_t batch = 32, seq = 128;
  bool prime = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") {
      model = value;
    } else if (flag == "--mode") {
      mode = value;
    } else if (flag == "--batch") {
      batch = std::atoll(value.c_str());
    } else if (flag == "--prime") {
      prime = value == "1";
    } else if (flag == "--seq") {
      seq = std::atoll(value.c_str());
    } else {
      std::fprintf(stderr, "kiln-first-call: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if ((model != "encoder" && model != "mlp") || (mode != "eager" && mode != "kiln")) {
    std::fprintf(stderr, "usage: kiln-first-call --model encoder|mlp --mode eager|kiln\n");
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "kiln-first-call: needs a GPU\n");
    return 1;
  }
  try {
    torch::NoGradGuard ng;
    torch::jit::Module m = torch::jit::load(std::string(KILN_MODELS_DIR) +
                                            (model == "encoder" ? "/encoder_block.pt" : "/mlp.pt"));
    m.eval();
    m.to(torch::kCUDA, torch::kHalf);
    auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kHalf);
    std::vector<torch::IValue> in;
    kiln::jit::Options o;
    if (model == "encoder") {
      in = {torch::randn({batch, seq, 768}, opts), torch::zeros({batch, 1, seq, seq}, opts)};
      o.inputNames = {"x", "mask"};
      o.dynamicDims = {{"x", 0, "batch"},
                       {"mask", 0, "batch"},
                       {"x", 1, "seq"},
                       {"mask", 2, "seq"},
                       {"mask", 3, "seq"}};
    } else {
      in = {torch::randn({batch, seq, 1024}, opts)};
      o.inputNames = {"x"};
      o.dynamicDims = {{"x", 0, "batch"}, {"x", 1, "seq"}};
    }
    if (prime) m.forward(in);
    c10::cuda::device_synchronize();
    const double loadedMs = msSince(kProcessStart);
    auto t0 = Clock::now();
    std::string notes;
    if (mode == "eager") {
      m.forward(in);
      c10::cuda::device_synchronize();
    } else {
      kiln::jit::OptimizedModule fast = kiln::jit::optimize(m, o);
      fast.forward(in);
      c10::cuda::device_synchronize();
      kiln::jit::ModuleStats st = fast.stats();
      std::fprintf(stderr, "%s\n", fast.explain().c_str());
      notes = "kernels compiled " + std::to_string(st.kernelsCompiled) + ", cached " +
              std::to_string(st.kernelsCached) + ", traced " + std::to_string(st.captures) +
              ", capture from cache " + std::to_string(st.capturesCached);
    }
    const double firstMs = msSince(t0);
    std::printf("| %s [%lld, %lld] fp16 | %s%s | %.0f | %.1f | %.0f | %s |\n", model.c_str(),
                static_cast<long long>(batch), static_cast<long long>(seq), mode.c_str(),
                prime ? " (primed)" : "", loadedMs, firstMs, loadedMs + firstMs, notes.c_str());
    std::fflush(stdout);
    // The default session's background compiles (generic kernels) must not be cut off mid-write;
    // the session's exit handler waits for them.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-first-call: %s\n", e.what());
    return 1;
  }
  return 0;
}

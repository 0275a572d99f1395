// kiln-demo: optimizes a real model (PyTorch's TransformerEncoderLayer, BERT-base sized, random
// weights, exported by scripts/export_models.py) and prints eager vs kiln time and max error.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <kiln/kiln.h>

namespace {

using Clock = std::chrono::steady_clock;

template <typename F>
double medianMs(F&& fn, bool cuda, int reps) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    if (cuda) {
      at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
      start.record();
      fn();
      stop.record();
      stop.synchronize();
      ms.push_back(start.elapsed_time(stop));
    } else {
      auto t0 = Clock::now();
      fn();
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string path = argc > 1 ? argv[1] : std::string(KILN_MODELS_DIR) + "/encoder_block.pt";
    kiln::Session& session = kiln::Session::defaultSession();
    const bool cuda = !session.cudaEnvironment().devices.empty() && torch::cuda::is_available();
    std::printf("kiln-demo: %s\n", session.cudaEnvironment().describe().c_str());

    torch::jit::Module module = torch::jit::load(path);
    module.eval();
    const auto dtype = cuda ? torch::kHalf : torch::kFloat;
    const auto device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    module.to(device, dtype);
    const int64_t batch = cuda ? 32 : 4, seq = 128, hidden = 768;
    std::printf("model: %s (encoder block, hidden %lld, 12 heads), input [%lld, %lld, %lld] %s on %s\n",
                path.c_str(), static_cast<long long>(hidden), static_cast<long long>(batch),
                static_cast<long long>(seq), static_cast<long long>(hidden),
                cuda ? "float16" : "float32", cuda ? "cuda:0" : "cpu");

    torch::NoGradGuard noGrad;
    auto opts = torch::TensorOptions().dtype(dtype).device(device);
    torch::Tensor x = torch::randn({batch, seq, hidden}, opts);
    torch::Tensor mask = torch::zeros({batch, 1, seq, seq}, opts);
    mask.index_put_({torch::indexing::Slice(), torch::indexing::Slice(),
                     torch::indexing::Slice(), torch::indexing::Slice(seq - 16, seq)},
                    -10000.0);
    std::vector<torch::IValue> inputs{x, mask};

    kiln::jit::Options options;
    options.inputNames = {"x", "mask"};
    options.dynamicDims = {{"x", 0, "batch"}, {"mask", 0, "batch"}};
    auto t0 = Clock::now();
    kiln::jit::OptimizedModule fast = kiln::jit::optimize(module, options);
    torch::Tensor got = fast.forward(inputs).toTensor();
    if (cuda) c10::cuda::device_synchronize();
    double firstMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    torch::Tensor want = module.forward(inputs).toTensor();
    double maxErr = (got.to(torch::kFloat) - want.to(torch::kFloat)).abs().max().item<double>();

    const int reps = cuda ? 50 : 5;
    for (int i = 0; i < 3; ++i) {
      module.forward(inputs);
      fast.forward(inputs);
    }
    double eagerMs = medianMs([&] { module.forward(inputs); }, cuda, reps);
    double kilnMs = medianMs([&] { fast.forward(inputs); }, cuda, reps);

    std::printf("\n%s", fast.explain().c_str());
    std::printf("\nfirst call (capture + compile + run): %.1f ms\n", firstMs);
    std::printf("eager LibTorch: %.3f ms   kiln: %.3f ms   speedup: %.2fx   max abs error: %.3g\n",
                eagerMs, kilnMs, eagerMs / kilnMs, maxErr);
    if (!cuda)
      std::printf("no GPU here (%s): kiln ran the plan eagerly through ATen on the CPU.\n",
                  session.cudaEnvironment().reason.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-demo: %s\n", e.what());
    return 1;
  }
}

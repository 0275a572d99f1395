// kiln-demo: optimizes a real model, Hugging Face's BERT (a small config with random weights,
// traced by tests/models/make_fixtures.py; any TorchScript model taking token ids and an attention
// mask can be passed instead), and prints eager vs kiln time and max error.
//   kiln-demo [MODEL.pt] [BATCH] [SEQ]     (kiln-demo --version prints the version)
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

#include "src/support/version_flag.h"

namespace {

using Clock = std::chrono::steady_clock;

// module.to(device, kHalf) would convert integer buffers too (BERT's position ids); like
// Python's .half(), only floating-point parameters and buffers change dtype.
void toDevice(torch::jit::Module& m, torch::Device device, torch::ScalarType dtype) {
  m.to(device);
  for (at::Tensor p : m.parameters())
    if (p.is_floating_point()) p.set_data(p.to(dtype));
  for (at::Tensor b : m.buffers())
    if (b.is_floating_point()) b.set_data(b.to(dtype));
}

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
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  try {
    kiln::Session& session = kiln::Session::defaultSession();
    const bool cuda = !session.cudaEnvironment().devices.empty() && torch::cuda::is_available();
    // A traced HF model runs on the device it was traced on (tests/models/make_fixtures.py).
    std::string path = argc > 1 ? argv[1]
                                : std::string(KILN_FIXTURES_DIR) + "/hf_bert" +
                                      (cuda ? ".cuda.pt" : ".pt");
    std::printf("kiln-demo: %s\n", session.cudaEnvironment().describe().c_str());

    torch::jit::Module module = torch::jit::load(path);
    module.eval();
    const auto dtype = cuda ? torch::kHalf : torch::kFloat;
    const auto device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    toDevice(module, device, dtype);
    const int64_t batch = argc > 2 ? std::stoll(argv[2]) : (cuda ? 32 : 4);
    const int64_t seq = argc > 3 ? std::stoll(argv[3]) : 77;
    std::printf("model: %s (token ids and attention mask [%lld, %lld]), %s on %s\n", path.c_str(),
                static_cast<long long>(batch), static_cast<long long>(seq),
                cuda ? "float16" : "float32", cuda ? "cuda:0" : "cpu");

    torch::NoGradGuard noGrad;
    auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
    torch::Tensor ids = torch::randint(0, 1000, {batch, seq}, longs);
    torch::Tensor mask = torch::ones({batch, seq}, longs);
    mask.index_put_({0, torch::indexing::Slice(seq / 2, seq)}, 0);  // padding in one row
    std::vector<torch::IValue> inputs{ids, mask};

    kiln::jit::Options options;
    options.inputNames = {"ids", "mask"};
    options.dynamicDims = {{"ids", 0, "batch"}, {"mask", 0, "batch"}, {"ids", 1, "seq"},
                           {"mask", 1, "seq"}};
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

#pragma once
// The workloads of issue 8, shared by the benchmarks. Memory-bound (1-3; kiln-bench,
// kiln-kernel-sweep, kiln-tune-bench, kiln-aoti-bench): a TorchScript forward, the row length, how
// many [n, cols] inputs it takes, and its [cols] params. Models (4-6; kiln-bench,
// kiln-aoti-bench): a TorchScript file from scripts/export_models.py, inputs and FLOPs per size.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

namespace kiln::bench {

// How many copies of a call's buffers to rotate through so that consecutive calls do not hit in
// L2: at least 256 MB in flight, 1 to 8 copies.
inline int rotationSets(int64_t bytesPerSet) {
  return static_cast<int>(std::clamp<int64_t>((int64_t{256} << 20) / bytesPerSet, 1, 8));
}

struct Workload {
  std::string name;
  std::string source;  // TorchScript `def forward(self, ...)`
  long long cols;
  int numInputs;                        // x, then extra [n, cols] inputs
  std::vector<std::string> paramNames;  // [cols] params

  // Bytes of the [n, cols] inputs and the output, read or written once per call.
  int64_t rowBytes(int64_t n, torch::ScalarType dt) const {
    return n * cols * static_cast<int64_t>(torch::elementSize(dt)) * (numInputs + 1);
  }
  // All bytes a call reads and writes once: rowBytes and the params.
  double bytesPerCall(int64_t n, torch::ScalarType dt) const {
    return static_cast<double>(rowBytes(n, dt) + static_cast<int64_t>(paramNames.size()) * cols *
                                                     static_cast<int64_t>(torch::elementSize(dt)));
  }
  // The TorchScript module, with random params of `opts`, in eval mode.
  torch::jit::Module module(const torch::TensorOptions& opts) const {
    torch::jit::Module m("M");
    for (const std::string& p : paramNames) m.register_parameter(p, torch::randn({cols}, opts), false);
    m.define(source);
    m.eval();
    return m;
  }
  // rotationSets(rowBytes) sets of random [n, cols] inputs.
  std::vector<std::vector<torch::Tensor>> rotatedInputs(int64_t n,
                                                        const torch::TensorOptions& opts) const {
    std::vector<std::vector<torch::Tensor>> sets(
        static_cast<size_t>(rotationSets(rowBytes(n, torch::typeMetaToScalarType(opts.dtype())))));
    for (auto& in : sets)
      for (int i = 0; i < numInputs; ++i) in.push_back(torch::randn({n, cols}, opts));
    return sets;
  }
};

inline std::vector<Workload> memoryBoundWorkloads() {
  return {
      {"pointwise gelu(x*w+b)*sigmoid(x)+x",
       R"(
def forward(self, x):
    return torch.gelu(x * self.w + self.b) * torch.sigmoid(x) + x
)",
       4096,
       1,
       {"w", "b"}},
      {"add+layernorm+gelu",
       R"(
def forward(self, x, r):
    return torch.gelu(torch.layer_norm(x + r, [4096], self.w, self.b, 1e-5))
)",
       4096,
       2,
       {"w", "b"}},
      {"masked softmax",
       R"(
def forward(self, x, m):
    return torch.softmax(x * 0.125 + m, -1)
)",
       1024,
       2,
       {}},
  };
}

// GEMM/conv-bound. `n` is tokens (batch x 128) for the MLP and the encoder, images for the CNN
// block; every input's dim 0 is the batch.
struct ModelWorkload {
  std::string key;   // bench/peer_aoti.py's name
  std::string name;  // in tables
  std::string file;  // in KILN_MODELS_DIR
  std::vector<std::string> inputNames;
  std::vector<int64_t> sizes;
  std::function<std::vector<torch::Tensor>(int64_t n, torch::TensorOptions)> inputs;
  std::function<double(int64_t n)> flops;
};

// `small`: one small size each (a CPU smoke test).
inline std::vector<ModelWorkload> modelWorkloads(bool quick, bool small = false) {
  const std::vector<int64_t> tokens = small   ? std::vector<int64_t>{128}
                                      : quick ? std::vector<int64_t>{128, 4096}
                                              : std::vector<int64_t>{128, 4096, 32768};
  // Both MLPs (erf and tanh gelu) take [n / 128, 128, 1024] and run two GEMMs of n x 1024 x 4096.
  auto mlpInputs = [](int64_t n, torch::TensorOptions o) -> std::vector<torch::Tensor> {
    return {torch::randn({n / 128, 128, 1024}, o)};
  };
  auto mlpFlops = [](int64_t n) { return 2.0 * 2.0 * n * 1024.0 * 4096.0; };
  // The CNN block and stage take [n, 64, 56, 56] and run 3x3 convs at 64 channels.
  auto cnnInputs = [](int64_t n, torch::TensorOptions o) -> std::vector<torch::Tensor> {
    return {torch::randn({n, 64, 56, 56}, o)};
  };
  auto convFlops = [](int convs) {
    return [convs](int64_t n) { return convs * 2.0 * n * 64.0 * 64.0 * 9.0 * 56.0 * 56.0; };
  };
  return {
      {"mlp",
       "MLP layer_norm(x + fc2(gelu(fc1(x)))), hidden 1024",
       "mlp.pt",
       {"x"},
       tokens,
       mlpInputs,
       mlpFlops},
      {"mlp_tanh",
       "MLP as above with tanh gelu (GPT-2), hidden 1024",
       "mlp_tanh.pt",
       {"x"},
       tokens,
       mlpInputs,
       mlpFlops},
      {"encoder_block",
       "encoder block, hidden 768, 12 heads, seq 128",
       "encoder_block.pt",
       {"x", "mask"},
       tokens,
       [](int64_t n, torch::TensorOptions o) -> std::vector<torch::Tensor> {
         return {torch::randn({n / 128, 128, 768}, o), torch::zeros({n / 128, 1, 128, 128}, o)};
       },
       // QKV, output projection and FFN GEMMs, plus QK^T and AV.
       [](int64_t n) { return 2.0 * n * 768.0 * 9216.0 + 4.0 * n * 128.0 * 768.0; }},
      {"cnn_block",
       "CNN block (conv3x3+bn+relu x2, residual), 64 ch, 56x56",
       "cnn_block.pt",
       {"x"},
       small ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 32},
       cnnInputs,
       convFlops(2)},
      {"cnn_stage",
       "CNN stage (3 CNN blocks, 6 convs), 64 ch, 56x56",
       "cnn_stage.pt",
       {"x"},
       small ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 32},
       cnnInputs,
       convFlops(6)},
  };
}

}  // namespace kiln::bench

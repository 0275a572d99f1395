#pragma once
// The memory-bound workloads of issue 8 (1-3), shared by kiln-bench and kiln-kernel-sweep: a
// TorchScript forward, the row length, how many [n, cols] inputs it takes, and its [cols] params.
#include <string>
#include <vector>

namespace kiln::bench {

struct Workload {
  std::string name;
  std::string source;  // TorchScript `def forward(self, ...)`
  long long cols;
  int numInputs;                        // x, then extra [n, cols] inputs
  std::vector<std::string> paramNames;  // [cols] params
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

}  // namespace kiln::bench

// kiln-mixed-bench: a stream of calls with mixed shapes, kiln vs eager LibTorch, on one GPU.
// The stream is what a serving process sees: batch uniform in 1..32, seq uniform in 16..512, drawn
// from a fixed-seed LCG that bench/peer_mixed_shapes.py reimplements (Note [Mixed-shape stream]).
// Every call is timed on the host, cudaDeviceSynchronize included, from the first call on: setup,
// traces and compiles count (kiln's optimize() is added to its total). Steady state = the
// second half of the stream. kiln starts cold: a fresh Session on an empty temporary cache dir,
// tuning off.
// Output: one markdown table on stdout (bench/run_gpu.sh puts it into $OUT/mixed.md).
// Usage: kiln-mixed-bench [--quick] [--calls N] [--seed S]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <kiln/kiln.h>

#include "src/support/version_flag.h"

namespace {

using Clock = std::chrono::steady_clock;

// Note [Mixed-shape stream]
// A 64-bit LCG (Knuth's MMIX constants), not std::mt19937, so that the Python peer draws the
// exact same (batch, seq) sequence with three lines of code: state = state * A + C (mod 2^64),
// value = (state >> 33) % (hi - lo + 1) + lo; batch is drawn before seq on every call.
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : state_(seed) {}
  int64_t uniform(int64_t lo, int64_t hi) {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int64_t>((state_ >> 33) % static_cast<uint64_t>(hi - lo + 1)) + lo;
  }

 private:
  uint64_t state_;
};

struct Call {
  int64_t batch = 0;
  int64_t seq = 0;
};

std::vector<Call> makeStream(int calls, uint64_t seed) {
  Lcg lcg(seed);
  std::vector<Call> stream(static_cast<size_t>(calls));
  for (Call& c : stream) {
    c.batch = lcg.uniform(1, 32);
    c.seq = lcg.uniform(16, 512);
  }
  return stream;
}

struct MixedWorkload {
  std::string name;
  torch::jit::Module module;
  kiln::jit::Options jitOptions;  // session left null; each kiln run brings its own
  std::function<std::vector<c10::IValue>(const Call&)> makeInputs;
};

torch::TensorOptions halfCuda() {
  return torch::TensorOptions().device(torch::kCUDA).dtype(torch::kHalf);
}

MixedWorkload addLayerNormGelu() {
  torch::jit::Module m("AddLayerNormGelu");
  torch::manual_seed(0);
  m.register_parameter("w", torch::randn({4096}, halfCuda()), false);
  m.register_parameter("b", torch::randn({4096}, halfCuda()), false);
  m.define(R"(
def forward(self, x, r):
    return torch.gelu(torch.layer_norm(x + r, [4096], self.w, self.b, 1e-5))
)");
  m.eval();
  kiln::jit::Options o;
  o.dynamicDims = {{"x", 0, "n"}, {"r", 0, "n"}};
  o.inputNames = {"x", "r"};
  auto inputs = [](const Call& c) -> std::vector<c10::IValue> {
    int64_t n = c.batch * c.seq;
    return {torch::randn({n, 4096}, halfCuda()), torch::randn({n, 4096}, halfCuda())};
  };
  return {"add+layernorm+gelu [batch*seq, 4096]", m, o, inputs};
}

MixedWorkload encoderBlock() {
  torch::jit::Module m = torch::jit::load(KILN_MODELS_DIR "/encoder_block.pt");
  m.to(torch::kCUDA, torch::kHalf);
  m.eval();
  kiln::jit::Options o;
  o.dynamicDims = {{"x", 0, "batch"},
                   {"mask", 0, "batch"},
                   {"x", 1, "seq"},
                   {"mask", 2, "seq"},
                   {"mask", 3, "seq"}};
  o.inputNames = {"x", "mask"};
  auto inputs = [](const Call& c) -> std::vector<c10::IValue> {
    return {torch::randn({c.batch, c.seq, 768}, halfCuda()),
            torch::zeros({c.batch, 1, c.seq, c.seq}, halfCuda())};
  };
  return {"encoder block [batch, seq, 768]", m, o, inputs};
}

struct StreamRun {
  std::vector<double> ms;  // per call, in stream order
  std::vector<c10::IValue> lastInputs;
  c10::IValue lastOutput;
};

using Forward = std::function<c10::IValue(const std::vector<c10::IValue>&)>;

// Inputs are made (and synchronized) outside the timed region; the call and the device sync
// after it are inside.
StreamRun runStream(const MixedWorkload& w, const std::vector<Call>& stream, const Forward& fn) {
  torch::manual_seed(1);
  StreamRun run;
  for (const Call& c : stream) {
    std::vector<c10::IValue> in = w.makeInputs(c);
    c10::cuda::device_synchronize();
    auto t0 = Clock::now();
    c10::IValue out = fn(in);
    c10::cuda::device_synchronize();
    run.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    run.lastInputs = std::move(in);
    run.lastOutput = std::move(out);
  }
  return run;
}

// Nearest-rank percentile (the Python peer computes it the same way).
double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  auto rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::max<size_t>(rank, 1) - 1];
}

double maxAbsErr(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>();
}

void printRow(const std::string& workload, const std::string& contender, const StreamRun& run,
              double setupS, const std::string& compiles, const std::string& notes) {
  double total = setupS;
  for (double ms : run.ms) total += ms * 1e-3;
  std::vector<double> steady(run.ms.begin() + static_cast<std::ptrdiff_t>(run.ms.size() / 2),
                             run.ms.end());
  std::printf("| %s | %s | %zu | %.3f | %.3f | %.3f | %.3f | %.3f | %s | %s |\n", workload.c_str(),
              contender.c_str(), run.ms.size(), total, percentile(run.ms, 0.5),
              percentile(run.ms, 0.99), percentile(steady, 0.5), percentile(steady, 0.99),
              compiles.c_str(), notes.c_str());
  std::fflush(stdout);
}

std::string makeTempDir() {
  char tmpl[] = "/tmp/kiln-mixed-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    throw std::runtime_error("mkdtemp failed for /tmp/kiln-mixed-bench-*");
  return tmpl;
}

void removeDir(const std::string& dir) {
  // Not std::filesystem::remove_all: libtorch exports its own, which crashes on this toolchain
  // (see tests/integration/warmup/warmup_cli_test.cpp).
  if (std::system(("rm -rf '" + dir + "'").c_str()) != 0)
    std::fprintf(stderr, "kiln-mixed-bench: could not remove %s\n", dir.c_str());
}

// Two baselines: the TorchScript module as LibTorch runs it by default (its graph executor
// profiles and specializes per shape), and with the executor's optimizations off (op by op:
// plain eager). Both reach ATen's scaled_dot_product_attention, which picks cuDNN for masked
// attention on Hopper (Note [Attention without per-shape plans] in jit/eval/attention.cpp).
void benchEager(const MixedWorkload& w, const std::vector<Call>& stream) {
  torch::jit::Module m = w.module;
  for (bool optimize : {true, false}) {
    const bool before = torch::jit::getGraphExecutorOptimize();
    torch::jit::setGraphExecutorOptimize(optimize);
    StreamRun run =
        runStream(w, stream, [&](const std::vector<c10::IValue>& in) { return m.forward(in); });
    torch::jit::setGraphExecutorOptimize(before);
    printRow(w.name, optimize ? "LibTorch (TorchScript executor)" : "eager LibTorch", run, 0.0, "-",
             optimize ? "module.forward, default graph executor"
                      : "module.forward, setGraphExecutorOptimize(false)");
  }
}

void benchKiln(const MixedWorkload& w, const std::vector<Call>& stream) {
  std::string dir = makeTempDir();
  {
    kiln::Options ko;
    ko.cacheDir = dir;
    ko.tune = kiln::TuneMode::kOff;
    // A cold start by construction: KILN_CACHE_DIR / KILN_TUNE from the environment would
    // override the empty cache dir and the tuning mode, so they are not read here.
    kiln::EnvLookup env = [base = kiln::processEnvironment()](std::string_view name) {
      return name == "KILN_CACHE_DIR" || name == "KILN_TUNE" ? std::nullopt : base(name);
    };
    kiln::Session session(ko, env);
    kiln::jit::Options o = w.jitOptions;
    o.session = &session;
    auto t0 = Clock::now();
    kiln::jit::OptimizedModule fast = kiln::jit::optimize(w.module, o);
    double setupS = std::chrono::duration<double>(Clock::now() - t0).count();
    StreamRun run =
        runStream(w, stream, [&](const std::vector<c10::IValue>& in) { return fast.forward(in); });
    kiln::jit::ModuleStats st = fast.stats();  // as the stream left it: background work may run
    torch::jit::Module m = w.module;
    double err = maxAbsErr(run.lastOutput.toTensor(), m.forward(run.lastInputs).toTensor());
    char notes[512];
    std::snprintf(notes, sizeof(notes),
                  "optimize() %.3f s included in total; planMisses %llu, captures %llu, "
                  "plansServedGeneric %llu, swaps %llu, background compiles %llu "
                  "(pending %llu), compile %.1f s, group fallbacks %llu; last call max err %.3g",
                  setupS, static_cast<unsigned long long>(st.planMisses),
                  static_cast<unsigned long long>(st.captures),
                  static_cast<unsigned long long>(st.plansServedGeneric),
                  static_cast<unsigned long long>(st.swaps),
                  static_cast<unsigned long long>(st.backgroundCompiles),
                  static_cast<unsigned long long>(st.backgroundPending), st.compileSeconds,
                  static_cast<unsigned long long>(st.groupFallbacks), err);
    printRow(w.name, "kiln", run, setupS, std::to_string(st.kernelsCompiled), notes);
    std::fprintf(stderr, "== %s\n%s\n", w.name.c_str(), fast.explain().c_str());
    session.waitForBackground();
  }
  removeDir(dir);
}

}  // namespace

int main(int argc, char** argv) {
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "kiln-mixed-bench: needs a GPU\n");
    return 1;
  }
  int calls = 300;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      calls = 100;
    } else if (a == "--calls" && i + 1 < argc) {
      calls = std::max(2, std::atoi(argv[++i]));
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: kiln-mixed-bench [--quick] [--calls N] [--seed S]\n");
      return 2;
    }
  }
  try {
    torch::NoGradGuard ng;
    {
      kiln::Options ko;
      ko.tune = kiln::TuneMode::kOff;
      kiln::Session probe(ko);
      std::printf("device: %s\n", probe.cudaEnvironment().describe().c_str());
    }
    std::vector<Call> stream = makeStream(calls, seed);
    std::printf("stream: LCG seed %llu, %d calls, batch 1..32, seq 16..512; first (batch, seq):",
                static_cast<unsigned long long>(seed), calls);
    for (size_t i = 0; i < std::min<size_t>(stream.size(), 5); ++i)
      std::printf(" (%lld, %lld)", static_cast<long long>(stream[i].batch),
                  static_cast<long long>(stream[i].seq));
    std::printf("\n\n");
    // CUDA context, cuBLAS handle and allocator warm-up outside any contender's numbers.
    {
      auto a = torch::randn({256, 256}, halfCuda());
      torch::matmul(a, a);
      c10::cuda::device_synchronize();
    }
    std::printf(
        "| workload | contender | calls | total s | p50 ms | p99 ms | steady p50 ms | "
        "steady p99 ms | compiles | notes |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& make : {addLayerNormGelu, encoderBlock}) {
      MixedWorkload w = make();
      benchEager(w, stream);
      benchKiln(w, stream);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-mixed-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}

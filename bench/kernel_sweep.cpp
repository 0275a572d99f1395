// kiln-kernel-sweep: every candidate schedule (codegen/schedule.h) of the memory-bound workloads'
// fusion groups, compiled and timed one by one, so default heuristics and the tuner's search space
// rest on measurements rather than guesses.
//
//   kiln-kernel-sweep [--n 4096,32768] [--only <substring>]   on a GPU: one table row per variant
//   kiln-kernel-sweep --dump DIR --arch sm_90                  anywhere: the default kernels' .cu
//                                                              and .cubin, for cuobjdump -sass
//
// Each variant's output is compared with the default variant's (max abs difference); timings are
// medians of CUDA-event-timed launches after warm-up, inputs rotated past L2; bandwidth counts
// bytes read + written once against the device-to-device copy bandwidth of the same run.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <kiln/kiln.h>

#include "bench/timing.h"
#include "bench/workloads.h"
#include "codegen/emit_cuda.h"
#include "codegen/schedule.h"
#include "jit/capture/capture.h"
#include "jit/eval/aten_eval.h"
#include "jit/nvrtc.h"
#include "jit/runtime/buckets.h"
#include "jit/runtime/kernel_launcher.h"
#include "src/partition/partition.h"
#include "src/passes/pipeline.h"
#include "src/support/version_flag.h"

namespace {

using namespace kiln;

struct Args {
  std::vector<long long> sizes = {4096, 32768};
  std::string only;
  std::string dumpDir;
  std::string arch;
};

Args parseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UserError(fmt::format("{} needs a value", flag));
      return argv[++i];
    };
    if (flag == "--n") {
      a.sizes.clear();
      std::string list = value();
      for (size_t pos = 0; pos < list.size();) {
        size_t comma = list.find(',', pos);
        a.sizes.push_back(std::stoll(list.substr(pos, comma - pos)));
        pos = comma == std::string::npos ? list.size() : comma + 1;
      }
    } else if (flag == "--only") {
      a.only = value();
    } else if (flag == "--dump") {
      a.dumpDir = value();
    } else if (flag == "--arch") {
      a.arch = value();
    } else {
      throw UserError(fmt::format("unknown flag {}", flag));
    }
  }
  return a;
}

// Captures a workload on CPU in float32 (retyped to `dtype`), with dim 0 of every input dynamic,
// and returns the graph after the default passes plus its partition.
struct Captured {
  jit::CapturedGraph cap;
  partition::Partition part;
};

Captured captureWorkload(const bench::Workload& w, ir::DType dtype) {
  torch::jit::Module m = w.module(torch::TensorOptions());
  std::vector<c10::IValue> example;
  jit::CaptureOptions opt;
  for (int i = 0; i < w.numInputs; ++i) {
    example.push_back(torch::randn({8, w.cols}));
    std::string name = fmt::format("input{}", i);
    opt.dynamicDims.push_back({name, 0, "n"});
  }
  if (dtype != ir::DType::kFloat32) opt.retypeTo = dtype;
  Captured c;
  c.cap = jit::capture(m, example, opt);
  passes::runDefaultPasses(*c.cap.graph);
  c.part = partition::partitionGraph(*c.cap.graph);
  return c;
}

struct Variant {
  codegen::ScheduleParams params;
  bool fastMath = false;
  codegen::KernelSource src;
  std::string cubin;
  std::string error;
};

std::vector<char> compile(const codegen::KernelSource& ks, const std::string& arch, bool fastMath) {
  jit::CompileOptions o;
  o.fastMath = fastMath;
  return jit::compileToCubin(ks.source, ks.name, arch, o).cubin;
}

// Variants of one group: each candidate schedule, with and without fast math; compiled in parallel.
std::vector<Variant> buildVariants(const ir::Graph& g, const partition::FusionGroup& group,
                                   const codegen::BucketInfo& bucket, const std::string& arch) {
  std::vector<Variant> out;
  for (const auto& p : codegen::candidateSchedules(group, bucket))
    for (bool fm : {false, true}) {
      Variant v;
      v.params = p;
      v.fastMath = fm;
      v.src = codegen::emitCuda(g, group, p, bucket);
      out.push_back(std::move(v));
    }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::max(1u, std::thread::hardware_concurrency()); ++t)
    pool.emplace_back([&] {
      for (size_t i = next++; i < out.size(); i = next++) {
        try {
          std::vector<char> bin = compile(out[i].src, arch, out[i].fastMath);
          out[i].cubin.assign(bin.begin(), bin.end());
        } catch (const std::exception& e) {
          out[i].error = e.what();
        }
      }
    });
  for (auto& t : pool) t.join();
  return out;
}

int dump(const Args& a) {
  if (a.arch.empty()) throw UserError("--dump needs --arch (e.g. sm_90)");
  for (const auto& w : bench::memoryBoundWorkloads())
    for (ir::DType dt : {ir::DType::kFloat16, ir::DType::kFloat32}) {
      Captured c = captureWorkload(w, dt);
      int k = 0;
      for (const auto& step : c.part.steps) {
        if (step.kind != partition::StepKind::kFusion) continue;
        codegen::BucketInfo bucket = jit::bucketFor({a.sizes.back()});
        codegen::ScheduleParams p = codegen::defaultSchedule(step.group, bucket);
        codegen::KernelSource ks = codegen::emitCuda(*c.cap.graph, step.group, p, bucket);
        for (bool fm : {false, true}) {
          std::string stem =
              fmt::format("{}/{}_{}_g{}{}", a.dumpDir, w.name.substr(0, w.name.find(' ')),
                          ir::toString(dt), k, fm ? "_fast" : "");
          std::ofstream(stem + ".cu") << ks.source;
          std::vector<char> bin = compile(ks, a.arch, fm);
          std::ofstream(stem + ".cubin", std::ios::binary).write(bin.data(), bin.size());
          std::printf("%s: %s\n", stem.c_str(), codegen::toString(p).c_str());
        }
        ++k;
      }
    }
  return 0;
}

using kiln::bench::copyBandwidthGBs;
using kiln::bench::medianMs;

int sweep(const Args& a) {
  if (!torch::cuda::is_available()) {
    std::fprintf(stderr, "kiln-kernel-sweep: needs a GPU (or use --dump DIR --arch sm_XX)\n");
    return 1;
  }
  torch::NoGradGuard ng;
  Options kopt;
  kopt.tune = TuneMode::kOff;
  Session session(kopt);
  const std::string arch = session.targetArch().value_or("");
  const cuda::DriverApi* api = session.driver();
  if (arch.empty() || api == nullptr) throw UserError("no target arch or driver");
  std::printf("device: %s\n", session.cudaEnvironment().describe().c_str());
  const double copyGBs = copyBandwidthGBs();
  std::printf("device-to-device copy: %.0f GB/s\n\n", copyGBs);
  std::printf(
      "| workload | dtype | n | schedule | fast math | ms | GB/s | %% of copy | vs default | "
      "max diff |\n|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& w : bench::memoryBoundWorkloads()) {
    if (!a.only.empty() && w.name.find(a.only) == std::string::npos) continue;
    for (auto [dt, tdt] : {std::pair{ir::DType::kFloat16, torch::kHalf},
                           std::pair{ir::DType::kFloat32, torch::kFloat}}) {
      Captured c = captureWorkload(w, dt);
      const ir::Graph& g = *c.cap.graph;
      for (const auto& step : c.part.steps) {
        if (step.kind != partition::StepKind::kFusion) continue;
        const partition::FusionGroup& group = step.group;
        for (long long n : a.sizes) {
          codegen::BucketInfo bucket = jit::bucketFor({n});
          std::vector<Variant> variants = buildVariants(g, group, bucket, arch);
          auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(tdt);
          // Group inputs: graph inputs are [n, cols], params [cols]; rotate sets past L2.
          std::map<const ir::Value*, int> inputIndex;
          for (size_t i = 0; i < g.inputs().size(); ++i)
            inputIndex[g.inputs()[i]] = static_cast<int>(i);
          long long bytesPerSet = 0;
          std::vector<const ir::Value*> ins(group.inputs.begin(), group.inputs.end());
          for (const ir::Value* v : ins) {
            long long numel = inputIndex.count(v) ? n * w.cols : w.cols;
            bytesPerSet += numel * ir::byteSize(v->dtype());
          }
          for (const ir::Value* v : group.outputs)
            bytesPerSet += n * w.cols * ir::byteSize(v->dtype());
          const int sets = bench::rotationSets(bytesPerSet);
          std::vector<std::vector<at::Tensor>> tensors(static_cast<size_t>(sets));
          for (auto& set : tensors) {
            for (const ir::Value* v : ins) {
              at::Tensor t = inputIndex.count(v)
                                 ? torch::randn({n, w.cols}, opts.dtype(torch::kFloat))
                                 : torch::randn({w.cols}, opts.dtype(torch::kFloat));
              set.push_back(t.to(jit::toAtenDType(v->dtype())));
            }
            for (const ir::Value* v : group.outputs)
              set.push_back(torch::empty({n, w.cols}, opts.dtype(jit::toAtenDType(v->dtype()))));
          }
          at::Tensor reference;
          double defaultMs = 0;
          for (Variant& v : variants) {
            std::string sched = codegen::toString(v.params);
            if (!v.error.empty()) {
              std::printf("| %s | %s | %lld | %s | %s | compile failed: %s |\n", w.name.c_str(),
                          std::string(ir::toString(dt)).c_str(), n, sched.c_str(),
                          v.fastMath ? "yes" : "no", v.error.substr(0, 80).c_str());
              continue;
            }
            jit::LoadedKernel kernel(*api, v.src.name, v.cubin);
            const int sms = kernel.multiprocessors(0);
            std::vector<codegen::KilnArgs> packed;
            std::vector<codegen::LaunchDims> dims;
            for (auto& set : tensors) {
              std::vector<codegen::TensorView> views;
              for (const at::Tensor& t : set)
                views.push_back({t.data_ptr(), t.sizes(), t.strides()});
              std::vector<int64_t> domain =
                  codegen::domainSizes(v.src.abi, std::vector<int64_t>{n});
              packed.push_back(codegen::packArgs(v.src.abi, domain, views));
              dims.push_back(codegen::launchDims(v.src.launch, v.src.abi, packed.back(), sms));
            }
            CUstream stream = at::cuda::getCurrentCUDAStream(0).stream();
            auto run = [&](int i) {
              size_t s = static_cast<size_t>(i % sets);
              kernel.launch(0, dims[s], packed[s], stream);
            };
            for (int i = 0; i < 3; ++i) run(i);
            const double ms = medianMs(run, 30);
            run(0);
            at::Tensor out = tensors[0].back().to(torch::kFloat);
            double diff = 0;
            if (!reference.defined()) {
              reference = out.clone();
              defaultMs = ms;
            } else {
              diff = (out - reference).abs().max().item<double>();
            }
            const double gbs = static_cast<double>(bytesPerSet) / (ms * 1e-3) / 1e9;
            std::printf("| %s | %s | %lld | %s | %s | %.4f | %.0f | %.0f%% | %.2fx | %.2g |\n",
                        w.name.c_str(), std::string(ir::toString(dt)).c_str(), n, sched.c_str(),
                        v.fastMath ? "yes" : "no", ms, gbs, 100.0 * gbs / copyGBs, defaultMs / ms,
                        diff);
            std::fflush(stdout);
          }
        }
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (kiln::printVersionIfAsked(argc, argv)) return 0;
  try {
    Args a = parseArgs(argc, argv);
    return a.dumpDir.empty() ? sweep(a) : dump(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-kernel-sweep: %s\n", e.what());
    return 2;
  }
}

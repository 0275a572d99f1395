// Note [Profiler ranges] on the CPU: a plan's steps run through ATen here (no GPU), and each is
// still a named range for torch.profiler (at::RecordFunction) and for NVTX (seen through a static
// NVTX injection defined below, the hook Nsight Systems would use), as are forward() and each
// NVRTC compile (compiles run: the session targets sm_90).
#include <cstdint>

// The symbol nvtx3's loader binds to when a tool is linked in statically (nvtxInit.h); this file
// defines it, so its own copy of the loader must not define the weak default.
extern "C" {
extern int (*InitializeInjectionNvtx2_fnptr)(const void* (*getExportTable)(uint32_t));
}
#define NVTX_STATIC_INJECTION_IMPL
#include <nvtx3/nvToolsExt.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

namespace {

// What the injected NVTX tool saw, per thread: "+name" for a push, "-" for a pop.
std::mutex nvtxMutex;
std::map<std::thread::id, std::vector<std::string>> nvtxEvents;

int onPushA(const char* message) {
  std::lock_guard<std::mutex> lock(nvtxMutex);
  nvtxEvents[std::this_thread::get_id()].push_back(std::string("+") + message);
  return 0;
}

int onPop() {
  std::lock_guard<std::mutex> lock(nvtxMutex);
  nvtxEvents[std::this_thread::get_id()].push_back("-");
  return 0;
}

int initNvtxInjection(NvtxGetExportTableFunc_t getExportTable) {
  const auto* callbacks =
      static_cast<const NvtxExportTableCallbacks*>(getExportTable(NVTX_ETID_CALLBACKS));
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (callbacks == nullptr ||
      !callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &table, &size))
    return 0;
  *table[NVTX_CBID_CORE_RangePushA] = reinterpret_cast<NvtxFunctionPointer>(&onPushA);
  *table[NVTX_CBID_CORE_RangePop] = reinterpret_cast<NvtxFunctionPointer>(&onPop);
  return 1;
}

}  // namespace

extern "C" {
NvtxInitializeInjectionNvtxFunc_t InitializeInjectionNvtx2_fnptr = &initNvtxInjection;
}

namespace {

// softmax fuses into a group, matmul is a library step, reshape a view.
torch::jit::Module smallModule() {
  torch::jit::Module m("M");
  m.define(R"(
def forward(self, x, r):
    y = torch.softmax(x * 0.125 + r, -1)
    return torch.matmul(y, r.t()).reshape(-1)
)");
  return m;
}

std::vector<torch::IValue> smallInputs() {
  return {torch::randn({6, 64}), torch::randn({6, 64})};
}

bool startsWith(const std::string& s, std::string_view prefix) {
  return s.rfind(prefix, 0) == 0;
}

kiln::jit::OptimizedModule optimizeOn(kiln::Session& session, const torch::jit::Module& m) {
  kiln::jit::Options opt;
  opt.session = &session;
  return kiln::jit::optimize(m, opt);
}

// smallModule optimized on a session of its own, so that its first call compiles (NVRTC).
class ProfilerRanges : public ::testing::Test {
 protected:
  torch::NoGradGuard noGrad_;
  kiln::Session session_{kiln::testing::compileOnlyOptions(), kiln::testing::noEnvironment()};
  torch::jit::Module m_ = smallModule();
  kiln::jit::OptimizedModule fast_ = optimizeOn(session_, m_);
};

TEST_F(ProfilerRanges, TorchProfilerSeesForwardAndEveryStep) {
  const std::vector<torch::IValue> in = smallInputs();
  fast_.forward(in);  // builds the plan outside the profiled region
  const size_t steps = fast_.profile(in, 1).steps.size();
  ASSERT_GT(steps, 2u) << fast_.explain();

  namespace prof = torch::autograd::profiler;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
  const std::set<torch::profiler::impl::ActivityType> activities{
      torch::profiler::impl::ActivityType::CPU};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  kiln::testing::expectClose(fast_.forward(in).toTensor(), m_.forward(in).toTensor(), 1e-5);
  std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();

  std::vector<std::string> kiln;
  for (const auto& e : result->events())
    if (startsWith(e.name(), "kiln::")) kiln.push_back(e.name());
  std::string all;
  for (const std::string& n : kiln) all += n + "\n";
  EXPECT_EQ(std::count(kiln.begin(), kiln.end(), "kiln::forward"), 1) << all;
  EXPECT_EQ(kiln.size(), steps + 1) << "forward and one range per step:\n" << all;
  auto has = [&](std::string_view prefix) {
    return std::any_of(kiln.begin(), kiln.end(),
                       [&](const std::string& n) { return startsWith(n, prefix); });
  };
  EXPECT_TRUE(has("kiln::group #")) << all;
  EXPECT_TRUE(has("kiln::library ")) << all;
  EXPECT_TRUE(has("kiln::view ")) << all;
}

TEST_F(ProfilerRanges, NvtxRangesNestStepsInForwardAndMarkCompiles) {
  {
    std::lock_guard<std::mutex> lock(nvtxMutex);
    nvtxEvents.clear();
  }
  fast_.forward(smallInputs());  // the first call captures, compiles (NVRTC) and runs
  std::lock_guard<std::mutex> lock(nvtxMutex);
  std::string all;
  int compiles = 0;
  for (const auto& [thread, events] : nvtxEvents) {
    int depth = 0;
    for (const std::string& e : events) {
      all += e + "\n";
      depth += e == "-" ? -1 : 1;
      EXPECT_GE(depth, 0) << all;
      compiles += startsWith(e, "+kiln::compile kiln_");
    }
    EXPECT_EQ(depth, 0) << "unbalanced ranges on a thread:\n" << all;
  }
  EXPECT_GT(compiles, 0) << all;
  // On the calling thread: forward opens first and closes last; steps sit inside it, one level
  // down, each closed before the next opens.
  const std::vector<std::string>& mine = nvtxEvents[std::this_thread::get_id()];
  ASSERT_GE(mine.size(), 4u) << all;
  EXPECT_EQ(mine.front(), "+kiln::forward") << all;
  EXPECT_EQ(mine.back(), "-") << all;
  int steps = 0;
  for (size_t i = 1; i + 1 < mine.size(); ++i) {
    if (!startsWith(mine[i], "+kiln::group #") && !startsWith(mine[i], "+kiln::library ") &&
        !startsWith(mine[i], "+kiln::view ") && !startsWith(mine[i], "+kiln::eager "))
      continue;
    ++steps;
    EXPECT_EQ(mine[i + 1], "-") << "a step range holds no other range here:\n" << all;
  }
  EXPECT_GT(steps, 2) << all;
}

}  // namespace

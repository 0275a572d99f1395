// kiln-warmup end to end on the CPU: the binary warms a cache for --arch sm_90 (NVRTC needs no
// GPU), a second run and a fresh Session compile nothing, bad usage exits 2, an untraceable model
// exits 1, and four processes warming one cache at once all succeed with every entry valid.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <utility>

#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

#include "cache/disk_store.h"
#include "jit/runtime/session.h"
#include "tests/support/real_models.h"

namespace {

namespace fs = std::filesystem;

struct RunResult {
  int rc = -1;
  std::string output;  // stdout and stderr
};

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Starts the binary; finish() collects it. Several can run at once.
struct Child {
  FILE* pipe = nullptr;
  RunResult finish() {
    RunResult r;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
    int status = ::pclose(pipe);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
  }
};

Child start(const std::vector<std::string>& args, const std::string& envPrefix = "") {
  // KILN_* from the test's environment must not leak into the tool.
  std::string cmd =
      "env -u KILN_ARCH -u KILN_CACHE_DIR -u KILN_LOG -u KILN_PRECISION -u KILN_QUANT_EMULATE " +
      envPrefix + " " + quote(KILN_WARMUP_BIN);
  for (const std::string& a : args) cmd += " " + quote(a);
  cmd += " 2>&1";
  Child c;
  c.pipe = ::popen(cmd.c_str(), "r");
  EXPECT_NE(c.pipe, nullptr) << cmd;
  return c;
}

RunResult run(const std::vector<std::string>& args) {
  return start(args).finish();
}

int lineCount(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

int64_t jsonInt(const std::string& json, const std::string& key) {
  std::smatch m;
  std::regex re("\"" + key + "\": (-?[0-9]+)");
  if (!std::regex_search(json, m, re)) return -1;
  return std::stoll(m[1].str());
}

std::string readFile(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// x*w+b, softmax with an additive mask, layer_norm: hidden 64, batch dynamic in x and mask.
const char* kModelSource = R"(
def forward(self, x, mask):
    h = x * self.w + self.b
    h = torch.softmax(h + mask, -1)
    return torch.layer_norm(h, [64], self.g, self.beta, 1e-5, False)
)";

class Warmup : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/kiln-warmup-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = new fs::path(tmpl);
    torch::jit::Module m("WarmupTestModel");
    torch::manual_seed(0);
    m.register_parameter("w", torch::randn({64}), false);
    m.register_parameter("b", torch::randn({64}), false);
    m.register_parameter("g", torch::randn({64}), false);
    m.register_parameter("beta", torch::randn({64}), false);
    m.define(kModelSource);
    m.save((*dir_ / "model.pt").string());
    std::ofstream(*dir_ / "not_a_model.pt") << "hello";
  }
  static void TearDownTestSuite() {
    // Not fs::remove_all: libtorch.so exports its own std::filesystem::remove_all, which the
    // dynamic linker binds here and which crashes (a null call) on this toolchain.
    EXPECT_EQ(std::system(("rm -rf " + quote(dir_->string())).c_str()), 0);
    delete dir_;
  }
  static std::string path(const std::string& name) { return (*dir_ / name).string(); }

  static fs::path* dir_;
};
fs::path* Warmup::dir_ = nullptr;

TEST_F(Warmup, BadUsageExitsTwoWithOneLineNamingTheArgument) {
  const std::string model = path("model.pt");
  struct Case {
    std::vector<std::string> args;
    std::string mentions;
  };
  std::vector<Case> cases = {
      {{"--model", model, "--input", "x:float:[2..4,16,64]", "--frobnicate"}, "--frobnicate"},
      {{"--model", model, "--input", "x:float:[2..4,16,64", "--input", "mask:float:[2..4,1,64]"},
       "x:float:[2..4,16,64"},
      {{"--model", path("missing.pt"), "--input", "x:float:[2,16,64]"}, "missing.pt"},
      {{"--model", model, "--input", "x:flaot:[2,16,64]", "--input", "mask:float:[2,1,64]"},
       "flaot"},
      {{"--model", model, "--input", "x:float:[2,16,64]", "--arch", "sm_90"}, "forward takes 2"},
  };
  for (const Case& c : cases) {
    RunResult r = run(c.args);
    EXPECT_EQ(r.rc, 2) << r.output;
    EXPECT_EQ(lineCount(r.output), 1) << r.output;
    EXPECT_NE(r.output.find(c.mentions), std::string::npos) << r.output;
    EXPECT_EQ(r.output.rfind("kiln-warmup: ", 0), 0u) << r.output;
  }
}

TEST_F(Warmup, HelpExitsZero) {
  RunResult r = run({"--help"});
  EXPECT_EQ(r.rc, 0);
  EXPECT_NE(r.output.find("usage: kiln-warmup"), std::string::npos) << r.output;
}

TEST_F(Warmup, UntraceableModelExitsOne) {
  // hidden 32 does not broadcast against the model's 64-wide weights.
  RunResult r =
      run({"--model", path("model.pt"), "--input", "x:float:[2..4,16,32]", "--input",
           "mask:float:[2..4,1,32]", "--arch", "sm_90", "--cache-dir", path("cache-untraceable")});
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("kiln-warmup: error: cannot trace"), std::string::npos) << r.output;

  RunResult junk = run({"--model", path("not_a_model.pt"), "--input", "x:float:[2,16,64]", "--arch",
                        "sm_90", "--cache-dir", path("cache-untraceable")});
  EXPECT_EQ(junk.rc, 1) << junk.output;
  EXPECT_NE(junk.output.find("cannot load"), std::string::npos) << junk.output;
}

TEST_F(Warmup, NoArchAndNoGpuExitsOne) {
  kiln::Session probe(kiln::Options{}, [](std::string_view) { return std::nullopt; });
  if (probe.targetArch()) GTEST_SKIP() << "a GPU is present: kiln-warmup would use it";
  RunResult r = run({"--model", path("model.pt"), "--input", "x:float:[2,16,64]", "--input",
                     "mask:float:[2,1,64]", "--cache-dir", path("cache-noarch")});
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_NE(r.output.find("no --arch given and no usable GPU"), std::string::npos) << r.output;
}

TEST_F(Warmup, ArchNvrtcLacksExitsOneAndWritesNothing) {
  // Issue 20: sm_1000 used to pass, fail every compile with NVRTC_ERROR_INVALID_OPTION, and exit 0.
  const fs::path cache = path("cache-badarch");
  RunResult r = run({"--model", path("model.pt"), "--input", "x:float:[2,16,64]", "--input",
                     "mask:float:[2,1,64]", "--arch", "sm_1000", "--cache-dir", cache.string()});
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_EQ(lineCount(r.output), 1) << r.output;
  EXPECT_NE(r.output.find("cannot compile for \"sm_1000\""), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("sm_90"), std::string::npos) << "names the supported archs: " << r.output;
  size_t files = 0;
  if (fs::exists(cache))
    for (const auto& e : fs::recursive_directory_iterator(cache)) files += e.is_regular_file();
  EXPECT_EQ(files, 0u);
  // The same check for KILN_ARCH, in any process that makes a session.
  EXPECT_THROW(kiln::Session(kiln::Options{},
                             [](std::string_view name) -> std::optional<std::string> {
                               if (name == "KILN_ARCH") return "sm_1000";
                               return std::nullopt;
                             }),
               kiln::UserError);
}

// --tune times kernels on the local GPU: without one it exits 1 saying so (also with an explicit
// --arch, which compiles but cannot time); with one it tunes every kernel of every bucket.
TEST_F(Warmup, TuneNeedsTheLocalGpu) {
  kiln::Session probe(kiln::Options{}, [](std::string_view) { return std::nullopt; });
  std::vector<std::string> args = {"--model",        path("model.pt"),
                                   "--input",        "x:float16:[8..16,16,64]",
                                   "--input",        "mask:float16:[8..16,1,64]",
                                   "--cache-dir",    path("cache-tune"),
                                   "--tune",         "--summary-json",
                                   path("tune.json")};
  if (!probe.targetArch()) {
    RunResult r = run(args);
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_NE(r.output.find("no --arch given and no usable GPU"), std::string::npos) << r.output;
    args.insert(args.end(), {"--arch", "sm_90"});
    r = run(args);
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_NE(r.output.find("--tune needs a GPU to time kernels on"), std::string::npos)
        << r.output;
    return;
  }
  RunResult r = run(args);
  ASSERT_EQ(r.rc, 0) << r.output;
  const std::string j = readFile(path("tune.json"));
  EXPECT_NE(j.find("\"tuned\": true"), std::string::npos) << j;
  EXPECT_EQ(jsonInt(j, "buckets"), 2) << j;
  EXPECT_GT(jsonInt(j, "variants_tried"), 0) << j << r.output;
  EXPECT_GE(jsonInt(j, "kernels_tuned"), 0) << j;
}

TEST_F(Warmup, SecondRunCompilesNothingAndAFreshSessionHitsTheCache) {
  const std::string cache = path("cache-twice");
  std::vector<std::string> args = {"--model",       path("model.pt"),
                                   "--input",       "x:float:[2..4,16,64]",
                                   "--input",       "mask:float:[2..4,1,64]",
                                   "--arch",        "sm_90",
                                   "--cache-dir",   cache,
                                   "--summary-json"};
  RunResult first = start([&] {
                      auto a = args;
                      a.push_back(path("first.json"));
                      return a;
                    }())
                        .finish();
  ASSERT_EQ(first.rc, 0) << first.output;
  std::string j1 = readFile(path("first.json"));
  EXPECT_EQ(jsonInt(j1, "buckets"), 2) << j1;  // buckets 2 and 4 of the shared batch symbol
  EXPECT_GT(jsonInt(j1, "kernels_compiled"), 0) << j1;
  EXPECT_GT(jsonInt(j1, "groups"), 0) << j1;
  EXPECT_NE(j1.find("\"eager_ops\": ["), std::string::npos) << j1;
  EXPECT_NE(j1.find("\"seconds\": "), std::string::npos) << j1;

  args.push_back(path("second.json"));
  RunResult second = run(args);
  ASSERT_EQ(second.rc, 0) << second.output;
  std::string j2 = readFile(path("second.json"));
  EXPECT_EQ(jsonInt(j2, "kernels_compiled"), 0) << j2;
  EXPECT_EQ(jsonInt(j2, "kernels_cached"),
            jsonInt(j1, "kernels_compiled") + jsonInt(j1, "kernels_cached"))
      << j1 << j2;

  // A fresh session on the same cache, as a new process would make it: optimize() with float32
  // CPU inputs in a warmed bucket compiles nothing.
  torch::NoGradGuard ng;
  kiln::Options o;
  o.arch = "sm_90";
  o.cacheDir = cache;
  kiln::Session session(o, [](std::string_view) { return std::nullopt; });
  auto module = torch::jit::load(path("model.pt"));
  module.eval();
  kiln::jit::Options opt;
  opt.session = &session;
  opt.inputNames = {"x", "mask"};
  opt.dynamicDims = {{"x", 0, "batch"}, {"mask", 0, "batch"}};
  auto fast = kiln::jit::optimize(module, opt);
  torch::Tensor x = torch::randn({3, 16, 64});
  torch::Tensor mask = torch::randn({3, 1, 64});
  torch::Tensor got = fast.forward({x, mask}).toTensor();
  torch::Tensor want = module.forward({x, mask}).toTensor();
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5));
  kiln::jit::ModuleStats s = fast.stats();
  EXPECT_EQ(s.kernelsCompiled, 0u) << s.toString();
  EXPECT_GT(s.kernelsCached, 0u) << s.toString();

  // The same call on an empty cache does compile (so the check above can fail).
  kiln::Options cold = o;
  cold.cacheDir = path("cache-cold");
  kiln::Session coldSession(cold, [](std::string_view) { return std::nullopt; });
  opt.session = &coldSession;
  auto coldFast = kiln::jit::optimize(module, opt);
  coldFast.forward({x, mask});
  EXPECT_GT(coldFast.stats().kernelsCompiled, 0u) << coldFast.stats().toString();
}

// Note [Fold kernels compiled ahead]: with KILN_FOLD_KERNEL=auto a warm-up without a GPU also
// compiles the conv-batchnorm fold kernel of the ResNet fixture, and the summary counts it.
TEST_F(Warmup, FoldKernelsAreCompiledAndCounted) {
  auto kernels = [&](const std::string& mode) {
    const std::string json = path("fold-" + mode + ".json");
    RunResult r = start({"--model", std::string(KILN_FIXTURES_DIR) + "/tv_resnet.pt", "--input",
                         "x:float32:[batch=2..4,3,40,40]", "--arch", "sm_90", "--cache-dir",
                         path("cache-fold-" + mode), "--summary-json", json},
                        "KILN_FOLD_KERNEL=" + mode)
                      .finish();
    EXPECT_EQ(r.rc, 0) << r.output;
    return jsonInt(readFile(json), "kernels_compiled");
  };
  const int64_t off = kernels("off");
  EXPECT_GT(off, 0);
  EXPECT_EQ(kernels("auto"), off + 1);  // one fold kernel: one dtype mix and eps in the fixture
}

TEST_F(Warmup, FourProcessesWarmOneCacheAtOnce) {
  const std::string cache = path("cache-concurrent");
  std::vector<Child> children;
  for (int i = 0; i < 4; ++i) {
    children.push_back(
        start({"--model", path("model.pt"), "--input", "x:float16:[b=3..4,16,64]", "--input",
               "mask:float16:[b,1,64]", "--arch", "sm_90", "--cache-dir", cache, "--quiet",
               "--summary-json", path("p" + std::to_string(i) + ".json")}));
  }
  int64_t compiled = 0;
  int64_t total = -1;
  for (int i = 0; i < 4; ++i) {
    RunResult r = children[static_cast<size_t>(i)].finish();
    EXPECT_EQ(r.rc, 0) << r.output;
    std::string j = readFile(path("p" + std::to_string(i) + ".json"));
    int64_t c = jsonInt(j, "kernels_compiled");
    int64_t k = jsonInt(j, "kernels_cached");
    ASSERT_GE(c, 0) << j;
    compiled += c;
    if (total < 0) total = c + k;
    EXPECT_EQ(c + k, total) << j;  // every process saw every kernel
  }
  EXPECT_GT(total, 0);
  kiln::cache::DiskStoreOptions so;
  so.root = cache;
  so.createIfMissing = false;
  kiln::cache::DiskStore store(so);
  ASSERT_EQ(store.mode(), kiln::cache::DiskMode::kReadWrite) << store.modeReason();
  kiln::cache::VerifyResult v = store.verify();
  EXPECT_TRUE(v.bad.empty());
  EXPECT_GT(v.ok, 0u);
  // Each kernel compiled once across the four processes (Note [Cross-process compile once]); the
  // other entry is the stored capture.
  int64_t kernels = 0;
  for (const kiln::cache::DiskEntryInfo& e : store.list()) kernels += e.kind == "kernel" ? 1 : 0;
  EXPECT_EQ(kernels, compiled);
  EXPECT_EQ(static_cast<int64_t>(v.ok), compiled + 1);
}

// Note [Absurd warmup ranges]: refused before the model is even loaded, exit 2, one line.
TEST_F(Warmup, AbsurdRangesAreRefusedUpFront) {
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--input", "x:float:[b=1..1099511627776,16,64]"},
        std::vector<std::string>{"--input", "x:float:[b=2..4,16,64]", "--buckets", "b=8,4"},
        std::vector<std::string>{"--input", "x:float:[b=2..4,16,64]", "--buckets", "q=8"}}) {
    std::vector<std::string> args = {"--model", path("model.pt")};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"--input", "mask:float:[b,1,64]", "--arch", "sm_90", "--cache-dir",
                             path("cache-absurd")});
    RunResult r = run(args);
    EXPECT_EQ(r.rc, 2) << r.output;
    EXPECT_EQ(lineCount(r.output), 1) << r.output;
  }
  EXPECT_FALSE(fs::exists(path("cache-absurd")));
  // A huge but sane range costs compile time only: nothing runs at 2^20 rows.
  RunResult big =
      run({"--model", path("model.pt"), "--input", "x:float:[b=2..1048576,16,64]", "--input",
           "mask:float:[b,1,64]", "--buckets", "b=4,1048576", "--arch", "sm_90", "--cache-dir",
           path("cache-big"), "--quiet", "--summary-json", path("big.json")});
  ASSERT_EQ(big.rc, 0) << big.output;
  EXPECT_EQ(jsonInt(readFile(path("big.json")), "buckets"), 2);
}

TEST_F(Warmup, UnwritableSummaryJsonIsRefusedBeforeAnyWork) {
  RunResult r = run({"--model", path("model.pt"), "--input", "x:float:[2..4,16,64]", "--input",
                     "mask:float:[2..4,1,64]", "--arch", "sm_90", "--cache-dir",
                     path("cache-summary"), "--summary-json", path("no-such-dir/s.json")});
  EXPECT_EQ(r.rc, 2) << r.output;
  EXPECT_NE(r.output.find("does not exist"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("cache-summary"))) << "no work before the check";
}

// A warmup whose entries do not reach the disk fails (exit 1) and says so, with the counts in the
// JSON: a shard path taken by a file (root ignores permission bits, not this), a full disk
// (RLIMIT_FSIZE, as the disk store test does), and a size cap that evicts what was written.
TEST_F(Warmup, ACacheThatKeptNothingExitsOne) {
  const std::vector<std::string> model = {
      "--model", path("model.pt"),         "--input", "x:float:[2..4,16,64]",
      "--input", "mask:float:[2..4,1,64]", "--arch",  "sm_90",
      "--quiet"};
  auto withCache = [&](const std::string& cache, const std::string& json) {
    std::vector<std::string> a = model;
    a.insert(a.end(), {"--cache-dir", cache, "--summary-json", json});
    return a;
  };
  {  // Full disk: every write fails.
    RunResult r = start(withCache(path("cache-full"), path("full.json")),
                        "KILN_LOG=warn bash -c 'trap \"\" XFSZ; ulimit -f 1; exec \"$0\" \"$@\"'")
                      .finish();
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_NE(r.output.find("cache write"), std::string::npos) << r.output;
    const std::string j = readFile(path("full.json"));
    EXPECT_GT(jsonInt(j, "writes_failed"), 0) << j;
  }
  {  // A size cap smaller than the entries: each write evicts the one before.
    RunResult r =
        start(withCache(path("cache-cap"), path("cap.json")), "KILN_CACHE_MAX_BYTES=4096").finish();
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_NE(r.output.find("evicted"), std::string::npos) << r.output;
    EXPECT_GT(jsonInt(readFile(path("cap.json")), "entries_evicted"), 0);
  }
  {  // The same warmup into a healthy cache exits 0 and reports no loss.
    RunResult r = run(withCache(path("cache-ok"), path("ok.json")));
    EXPECT_EQ(r.rc, 0) << r.output;
    const std::string j = readFile(path("ok.json"));
    EXPECT_EQ(jsonInt(j, "writes_failed"), 0) << j;
    EXPECT_EQ(jsonInt(j, "entries_evicted"), 0) << j;
  }
}

// The container flow of issue 20 with a real model (the HF BERT fixture: int64 token ids and
// mask): kiln-warmup fills a cache, the cache is made read-only (chmod -R a+rX,go-w), and a
// service process (as user nobody when the test runs as root) gets its first call with zero
// traces and zero NVRTC compiles, and the module's results. The service half is the test below,
// run in a child process.
TEST_F(Warmup, ContainerFlowFirstCallNeitherTracesNorCompiles) {
  const std::string cache = path("cache-container");
  RunResult w = run({"--model", std::string(KILN_FIXTURES_DIR) + "/hf_bert.pt", "--input",
                     "ids:int64:[batch=2..4,seq=2..8]", "--input", "mask:int64:[batch,seq]",
                     "--arch", "sm_90", "--cache-dir", cache, "--device", "cpu", "--summary-json",
                     path("container.json")});
  ASSERT_EQ(w.rc, 0) << w.output;
  const std::string j = readFile(path("container.json"));
  EXPECT_NE(j.find("\"capture_stored\": true"), std::string::npos) << j << w.output;
  ASSERT_EQ(std::system(("chmod -R a+rX,go-w " + quote(dir_->string())).c_str()), 0);
  const bool asRoot = ::geteuid() == 0;
  const std::string self = quote(fs::read_symlink("/proc/self/exe").string());
  const std::string asService = asRoot ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  // The service user must be able to run this binary (its directory and LibTorch's).
  if (asRoot &&
      std::system((asService + self + " --gtest_list_tests >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "user nobody cannot run " << self
                 << " (a parent directory is private); the service half needs it";
  if (!asRoot) {
    ASSERT_EQ(std::system(("chmod -R a-w " + quote(cache)).c_str()), 0);
  }
  std::string cmd = asService + "env HOME=/nonexistent KILN_TEST_SERVICE_CACHE=" + quote(cache) +
                    " " + self +
                    " --gtest_filter=WarmupService.FirstCallNeitherTracesNorCompiles 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = ::pclose(pipe);
  if (!asRoot) {
    EXPECT_EQ(std::system(("chmod -R u+w " + quote(cache)).c_str()), 0);
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

// Note [Calibrating in the warm-up], on the CPU with 8-bit emulation: --calibrate runs the
// samples until every linear froze, stores the records (a second warm-up over the same cache
// decides every linear from them, with no calibration) and lists each linear with its error; a
// device that cannot run the format (no emulation) leaves the linears calibrating, which is a
// failed warm-up, summary written; bad files and bad samples name the problem.
TEST_F(Warmup, CalibrateStoresScalesAndReportsEachLinear) {
  torch::NoGradGuard ng;
  const kiln::testing::Fixture& f = kiln::testing::kFixtures[0];
  ASSERT_STREQ(f.name, "hf_bert");
  auto save = [](const std::string& file, const c10::IValue& v) {
    const std::vector<char> bytes = torch::jit::pickle_save(v);
    std::ofstream(file, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  c10::impl::GenericList samples(c10::AnyType::get());
  for (auto [batch, seq] : {std::pair<int64_t, int64_t>{3, 7}, {2, 5}, {4, 8}}) {
    const std::vector<torch::IValue> in =
        kiln::testing::fixtureInputs(f, batch, seq, 11, torch::kCPU, torch::kFloat);
    samples.push_back(c10::ivalue::Tuple::create(in));
  }
  save(path("calib.pt"), samples);
  const std::string model = std::string(KILN_FIXTURES_DIR) + "/hf_bert.pt";
  const std::string cache = path("cache-calibrate");
  auto warm = [&](const std::vector<std::string>& extra, const std::string& json,
                  const std::string& env) {
    std::vector<std::string> a = {"--model",        model,
                                  "--input",        "ids:int64:[batch=2..4,seq=2..8]",
                                  "--input",        "mask:int64:[batch,seq]",
                                  "--arch",         "sm_90",
                                  "--cache-dir",    cache,
                                  "--device",       "cpu",
                                  "--summary-json", path(json)};
    a.insert(a.end(), extra.begin(), extra.end());
    return start(a, env).finish();
  };
  const std::vector<std::string> calibrate = {"--precision", "int8", "--calibrate",
                                              path("calib.pt")};

  // No 8-bit GEMM on this CPU and no emulation: nothing calibrates, exit 1, summary written.
  RunResult none = warm(calibrate, "none.json", "KILN_QUANT_EMULATE=0");
  EXPECT_EQ(none.rc, 1) << none.output;
  EXPECT_NE(none.output.find("still calibrating"), std::string::npos) << none.output;
  EXPECT_NE(readFile(path("none.json")).find("\"calibration\""), std::string::npos);

  RunResult first = warm(calibrate, "first.json", "KILN_QUANT_EMULATE=1");
  ASSERT_EQ(first.rc, 0) << first.output;
  const std::string t1 = readFile(path("first.json"));
  const nlohmann::json j1 = nlohmann::json::parse(t1);
  EXPECT_EQ(j1.at("precision"), "int8") << t1;
  const nlohmann::json& c1 = j1.at("calibration");
  EXPECT_EQ(c1.at("samples"), 3) << t1;
  const int calls = c1.at("calls").get<int>();
  EXPECT_GE(calls, 3) << t1;
  EXPECT_LE(calls, 3 * 8) << t1;
  // The BERT fixture's linears: every one listed with a measured error, decided by this run.
  const nlohmann::json& linears = c1.at("linears");
  EXPECT_GE(linears.size(), 4u) << t1;
  int eight = 0;
  for (const nlohmann::json& l : linears) {
    EXPECT_FALSE(l.at("from_record").get<bool>()) << l;
    ASSERT_TRUE(l.at("rel_error").is_number()) << l;
    // Note [Quantized linears]: 8-bit exactly when the error is within KILN_QUANT_MAX_ERROR.
    EXPECT_EQ(l.at("quantized").get<bool>(), l.at("rel_error").get<double>() <= 0.08) << l;
    eight += l.at("quantized").get<bool>() ? 1 : 0;
  }
  EXPECT_GT(eight, 0) << t1;
  EXPECT_NE(first.output.find("linears run 8-bit"), std::string::npos) << first.output;

  // A second warm-up over the cache: every linear from its record, one round of calls.
  RunResult second = warm(calibrate, "second.json", "KILN_QUANT_EMULATE=1");
  ASSERT_EQ(second.rc, 0) << second.output;
  const std::string t2 = readFile(path("second.json"));
  const nlohmann::json c2 = nlohmann::json::parse(t2).at("calibration");
  EXPECT_EQ(c2.at("calls"), 3) << t2;
  ASSERT_EQ(c2.at("linears").size(), linears.size()) << t2;
  for (size_t i = 0; i < linears.size(); ++i) {
    EXPECT_TRUE(c2.at("linears")[i].at("from_record").get<bool>()) << c2.at("linears")[i];
    EXPECT_EQ(c2.at("linears")[i].at("rel_error"), linears[i].at("rel_error"));
  }

  // Bad input, each named.
  std::ofstream(path("junk.pt")) << "not a pickle";
  RunResult junk = warm({"--precision", "int8", "--calibrate", path("junk.pt")}, "junk.json",
                        "KILN_QUANT_EMULATE=1");
  EXPECT_EQ(junk.rc, 1) << junk.output;
  EXPECT_NE(junk.output.find("not a file torch.save wrote"), std::string::npos) << junk.output;
  c10::impl::GenericList floatIds(c10::AnyType::get());
  floatIds.push_back(
      c10::ivalue::Tuple::create({torch::zeros({3, 7}), torch::ones({3, 7}, torch::kLong)}));
  save(path("float_ids.pt"), floatIds);
  RunResult wrongType = warm({"--precision", "int8", "--calibrate", path("float_ids.pt")},
                             "wrong.json", "KILN_QUANT_EMULATE=1");
  EXPECT_EQ(wrongType.rc, 1) << wrongType.output;
  EXPECT_NE(
      wrongType.output.find("sample 0, input 0 (\"ids\"): dtype float32, but --input says int64"),
      std::string::npos)
      << wrongType.output;
  RunResult noPrecision = warm({"--calibrate", path("calib.pt")}, "noprec.json", "");
  EXPECT_EQ(noPrecision.rc, 1) << noPrecision.output;
  EXPECT_NE(noPrecision.output.find("needs --precision fp8 or int8"), std::string::npos)
      << noPrecision.output;
  RunResult fp16 = warm({"--precision", "fp16", "--calibrate", path("calib.pt")}, "fp16.json", "");
  EXPECT_EQ(fp16.rc, 2) << fp16.output;
  RunResult missing = warm({"--precision", "int8", "--calibrate", path("nope.pt")}, "m.json", "");
  EXPECT_EQ(missing.rc, 2) << missing.output;
  EXPECT_NE(missing.output.find("no such file"), std::string::npos) << missing.output;
}

// The service half of the container flow; skipped unless that test runs it.
TEST(WarmupService, FirstCallNeitherTracesNorCompiles) {
  const char* cache = std::getenv("KILN_TEST_SERVICE_CACHE");
  if (cache == nullptr)
    GTEST_SKIP() << "run by Warmup.ContainerFlowFirstCallNeitherTracesNorCompiles";
  torch::NoGradGuard ng;
  kiln::Options o;
  o.arch = "sm_90";
  o.cacheDir = cache;
  o.strict = true;
  kiln::Session session(o, [](std::string_view) { return std::nullopt; });
  ASSERT_NE(session.kernelCache().disk(), nullptr);
  EXPECT_EQ(session.kernelCache().disk()->mode(), kiln::cache::DiskMode::kReadOnly)
      << session.kernelCache().disk()->modeReason();
  const kiln::testing::Fixture& f = kiln::testing::kFixtures[0];
  ASSERT_STREQ(f.name, "hf_bert");
  torch::jit::Module m = kiln::testing::loadFixture(KILN_FIXTURES_DIR, f, ".pt");
  auto fast = kiln::jit::optimize(m, kiln::testing::fixtureOptions(f, session));
  const std::vector<torch::IValue> in =
      kiln::testing::fixtureInputs(f, 3, 7, 5, torch::kCPU, torch::kFloat);
  torch::Tensor got = fast.forward(in).toTensor();
  session.waitForBackground();
  torch::Tensor want = m.forward(in).toTensor();
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-4);
  const kiln::jit::ModuleStats st = fast.stats();
  EXPECT_EQ(st.captures, 0u) << st.toString();
  EXPECT_EQ(st.capturesCached, 1u) << st.toString();
  EXPECT_EQ(st.kernelsCompiled, 0u) << st.toString();
  EXPECT_GT(st.kernelsCached, 0u) << st.toString();
}

}  // namespace

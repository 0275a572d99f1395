#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/version.h"
#include "src/support/error.h"
#include "src/support/hash.h"
#include "src/support/log.h"
#include "src/support/options.h"

namespace kiln {
namespace {

EnvLookup fakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

template <typename F>
std::string errorOf(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  return "<no UserError>";
}

TEST(Options, DefaultsSurviveEmptyEnvironment) {
  Options base;
  base.maxPlans = 7;
  Options o = applyEnvironment(base, fakeEnv({}));
  EXPECT_EQ(o.maxPlans, 7);
  EXPECT_EQ(o.tune, TuneMode::kBackground);
  EXPECT_EQ(o.convLayout, ConvLayout::kAuto);
  EXPECT_TRUE(o.diskCache);
  EXPECT_EQ(o.logLevel, LogLevel::kWarn);
}

TEST(Options, EnvironmentOverridesEveryField) {
  Options o = applyEnvironment(Options{}, fakeEnv({{"KILN_LOG", "debug"},
                                                   {"KILN_DISABLE", "yes"},
                                                   {"KILN_CACHE_DIR", "/tmp/kc"},
                                                   {"KILN_DISK_CACHE", "0"},
                                                   {"KILN_CACHE_MAX_BYTES", "512M"},
                                                   {"KILN_ARCH", "SM_90"},
                                                   {"KILN_COMPILE_THREADS", "3"},
                                                   {"KILN_MAX_PLANS", "5"},
                                                   {"KILN_TUNE", "eager"},
                                                   {"KILN_TUNE_THRESHOLD", "42"},
                                                   {"KILN_TUNE_MAX_VARIANTS", "7"},
                                                   {"KILN_TUNE_SECONDS", "9"},
                                                   {"KILN_CONV_LAYOUT", "Channels_Last"},
                                                   {"KILN_CUDA_GRAPHS", "OFF"},
                                                   {"KILN_COMPARE_MODULE", "off"},
                                                   {"KILN_PREWARM", "Off"},
                                                   {"KILN_FIRST_CALL_GEMM", "OFF"},
                                                   {"KILN_FOLD_KERNEL", "Auto"},
                                                   {"KILN_MERGE_LINEARS", "off"},
                                                   {"KILN_PRECISION", "BF16"},
                                                   {"KILN_QUANT_CALIBRATION_CALLS", "3"},
                                                   {"KILN_QUANT_MAX_ERROR", "0.02"},
                                                   {"KILN_QUANT_EMULATE", "1"}}));
  EXPECT_EQ(o.logLevel, LogLevel::kDebug);
  EXPECT_TRUE(o.disable);
  EXPECT_EQ(o.cacheDir, "/tmp/kc");
  EXPECT_FALSE(o.diskCache);
  EXPECT_EQ(o.cacheMaxBytes, 512ull << 20);
  EXPECT_EQ(o.arch, "sm_90");
  EXPECT_EQ(o.compileThreads, 3);
  EXPECT_EQ(o.maxPlans, 5);
  EXPECT_EQ(o.tune, TuneMode::kEager);
  EXPECT_EQ(o.tuneThreshold, 42);
  EXPECT_EQ(o.tuneMaxVariants, 7);
  EXPECT_EQ(o.tuneSeconds, 9);
  EXPECT_EQ(o.convLayout, ConvLayout::kChannelsLast);
  EXPECT_FALSE(o.cudaGraphs);  // both on by default: the environment turned them off
  EXPECT_FALSE(o.compareModule);
  EXPECT_FALSE(o.libraryPrewarm);
  EXPECT_TRUE(Options{}.libraryPrewarm);
  EXPECT_FALSE(o.firstCallGemm);
  EXPECT_TRUE(Options{}.firstCallGemm);
  EXPECT_TRUE(o.foldKernel);
  EXPECT_TRUE(Options{}.foldKernel);
  EXPECT_FALSE(o.mergeLinears);
  EXPECT_TRUE(Options{}.mergeLinears);
  EXPECT_EQ(o.precision, Precision::kBFloat16);
  EXPECT_EQ(o.quantCalibrationCalls, 3);
  EXPECT_DOUBLE_EQ(o.quantMaxError, 0.02);
  EXPECT_TRUE(o.quantEmulate);
  EXPECT_FALSE(Options{}.quantEmulate);
  EXPECT_EQ(Options{}.precision, Precision::kModule);
  for (auto [text, want] : {std::pair{"module", Precision::kModule},
                            {"fp16", Precision::kFloat16},
                            {"half", Precision::kFloat16},
                            {"float16", Precision::kFloat16},
                            {" bfloat16 ", Precision::kBFloat16},
                            {"FP8", Precision::kFp8},
                            {"e4m3", Precision::kFp8},
                            {"int8", Precision::kInt8}})
    EXPECT_EQ(applyEnvironment(Options{}, fakeEnv({{"KILN_PRECISION", text}})).precision, want)
        << text;
  EXPECT_TRUE(Options{}.cudaGraphs);
  EXPECT_TRUE(Options{}.compareModule);
  EXPECT_TRUE(applyEnvironment(Options{}, fakeEnv({{"KILN_CUDA_GRAPHS", "auto"}})).cudaGraphs);
  EXPECT_FALSE(applyEnvironment(Options{}, fakeEnv({{"KILN_CUDA_GRAPHS", "off"}})).cudaGraphs);
  EXPECT_FALSE(
      applyEnvironment(Options{}, fakeEnv({{"KILN_COMPARE_MODULE", "off"}})).compareModule);
}

TEST(Options, MalformedValuesNameTheVariable) {
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_TUNE", "fast"}})); }),
            "KILN_TUNE: expected off, background or eager, got 'fast'");
  EXPECT_EQ(errorOf([] {
              applyEnvironment({}, fakeEnv({{"KILN_CONV_LAYOUT", "nhwc"}}));
            }),
            "KILN_CONV_LAYOUT: expected auto, channels_last or contiguous, got 'nhwc'");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_PRECISION", "fp32"}})); }),
            "KILN_PRECISION: expected module, fp16, bf16, fp8 or int8, got 'fp32'");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_PRECISION", "int4"}})); }),
            "KILN_PRECISION: expected module, fp16, bf16, fp8 or int8, got 'int4'");
  EXPECT_EQ(errorOf([] {
              applyEnvironment({}, fakeEnv({{"KILN_QUANT_MAX_ERROR", "0"}}));
            }),
            "KILN_QUANT_MAX_ERROR: expected a number in (0, 1], got '0'");
  EXPECT_EQ(errorOf([] {
              applyEnvironment({}, fakeEnv({{"KILN_QUANT_MAX_ERROR", "5%"}}));
            }),
            "KILN_QUANT_MAX_ERROR: expected a number in (0, 1], got '5%'");
  EXPECT_EQ(errorOf([] {
              applyEnvironment({}, fakeEnv({{"KILN_QUANT_CALIBRATION_CALLS", "0"}}));
            }),
            "KILN_QUANT_CALIBRATION_CALLS: expected a value in [1, 1048576], got 0");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_CUDA_GRAPHS", "1"}})); }),
            "KILN_CUDA_GRAPHS: expected auto or off, got '1'");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_MAX_PLANS", "0"}})); }),
            "KILN_MAX_PLANS: expected a value in [1, 1048576], got 0");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_MAX_PLANS", "12x"}})); }),
            "KILN_MAX_PLANS: expected an integer, got '12x'");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_ARCH", "hopper"}})); }),
            "KILN_ARCH: expected an arch such as sm_90, got 'hopper'");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_CACHE_DIR", ""}})); }),
            "KILN_CACHE_DIR: set but empty; unset it to use the default cache directory");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_DISK_CACHE", "maybe"}})); }),
            "KILN_DISK_CACHE: expected 0/1, true/false, on/off or yes/no, got 'maybe'");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_LOG", "loud"}})); }),
            "KILN_LOG: expected one of off|error|warn|info|debug|trace, got 'loud'");
  EXPECT_EQ(errorOf([] { applyEnvironment({}, fakeEnv({{"KILN_CACHE_MAX_BYTES", "lots"}})); }),
            "KILN_CACHE_MAX_BYTES: expected a byte size such as 1048576, 512M or 2G, got 'lots'");
}

TEST(Options, ByteSizes) {
  EXPECT_EQ(parseByteSize("x", "1048576"), 1048576u);
  EXPECT_EQ(parseByteSize("x", "2G"), 2ull << 30);
  EXPECT_EQ(parseByteSize("x", "64kb"), 64ull << 10);
  EXPECT_EQ(errorOf([] { parseByteSize("x", "99999999999999999999T"); }).rfind("x: ", 0), 0u);
}

TEST(Errors, KindsAndMessages) {
  try {
    KILN_CHECK(1 + 1 == 3, "math is {}", "broken");
    FAIL() << "KILN_CHECK did not throw";
  } catch (const InternalError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("support_test.cpp"), std::string::npos) << what;
    EXPECT_NE(what.find("check '1 + 1 == 3' failed: math is broken"), std::string::npos) << what;
  }
  try {
    KILN_USER_CHECK(false, "input {} (\"{}\"): expected {}, got {}", 1, "mask", "float16", "float32");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(), "input 1 (\"mask\"): expected float16, got float32");
  }
  CompileError ce("nvrtc failed", "src", {"-arch=sm_90"}, "error: x");
  EXPECT_EQ(ce.source(), "src");
  EXPECT_EQ(ce.options().at(0), "-arch=sm_90");
  EXPECT_EQ(ce.log(), "error: x");
  CudaError cu("cuLaunchKernel", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory");
  EXPECT_STREQ(cu.what(),
               "CUDA driver call cuLaunchKernel failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory");
  // Every kind is a kiln::Error so callers can catch kiln's errors in one place.
  EXPECT_NO_THROW({
    try {
      throw Unsupported("op aten::foo");
    } catch (const Error&) {
    }
  });
}

std::vector<std::string>* gCaptured = nullptr;
void captureSink(LogLevel level, std::string_view msg) {
  gCaptured->push_back(std::string(toString(level)) + ":" + std::string(msg));
}

TEST(Log, LevelsAndOnce) {
  std::vector<std::string> captured;
  gCaptured = &captured;
  setLogSink(captureSink);
  LogLevel saved = logLevel();
  setLogLevel(LogLevel::kWarn);
  KILN_LOG_INFO("hidden {}", 1);
  KILN_LOG_WARN("shown {}", 2);
  EXPECT_TRUE(logOnce(LogLevel::kWarn, "support_test.once", "first"));
  EXPECT_FALSE(logOnce(LogLevel::kWarn, "support_test.once", "second"));
  setLogLevel(saved);
  setLogSink(nullptr);
  ASSERT_EQ(captured.size(), 2u);
  EXPECT_EQ(captured[0], "warn:shown 2");
  EXPECT_EQ(captured[1], "warn:first");
}

TEST(Hash, StableValues) {
  // Golden values: these end up in on-disk cache keys and must not change between builds.
  EXPECT_EQ(fnv1a(""), 14695981039346656037ull);
  EXPECT_EQ(fnv1a("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_NE(hashCombine(1, 2), hashCombine(2, 1));
}

// Note [Versions]: the header's numbers are project(kiln VERSION ...) of the top-level
// CMakeLists.txt, and version() starts with them.
TEST(VersionTest, MatchesTheHeaderAndTheProjectVersion) {
  const std::string dotted =
      fmt::format("{}.{}.{}", KILN_VERSION_MAJOR, KILN_VERSION_MINOR, KILN_VERSION_PATCH);
  EXPECT_EQ(dotted, KILN_VERSION_STRING);
  const std::string_view v = version();
  ASSERT_FALSE(v.empty());
  EXPECT_EQ(v.substr(0, 5 + dotted.size()), "kiln " + dotted) << v;
  EXPECT_TRUE(std::regex_match(std::string(v), std::regex(R"(kiln \S+ \(torch \S+, CUDA \S+\))")))
      << v;
  EXPECT_EQ(v.find("unknown"), std::string_view::npos) << "the build passes both versions: " << v;
  std::ifstream in(std::string(KILN_SOURCE_DIR) + "/CMakeLists.txt");
  std::stringstream text;
  text << in.rdbuf();
  std::smatch m;
  const std::string cmake = text.str();
  ASSERT_TRUE(std::regex_search(cmake, m, std::regex(R"(project\(kiln VERSION ([0-9.]+))")));
  EXPECT_EQ(m[1].str(), dotted);
}

}  // namespace
}  // namespace kiln

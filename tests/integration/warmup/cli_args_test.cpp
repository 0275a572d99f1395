// kiln-warmup's command line rules (no LibTorch): each bad usage is a UsageError naming the bad
// argument.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "integrations/warmup/cli_args.h"

namespace kiln::warmup {
namespace {

class CliArgs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiln-warmup-args-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    model_ = (dir_ / "model.pt").string();
    std::ofstream(model_) << "not really a model; parsing only checks that it exists";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string error(std::vector<std::string> args) {
    try {
      parseWarmupArgs(args);
    } catch (const UsageError& e) {
      return e.what();
    }
    return "(no error)";
  }

  std::filesystem::path dir_;
  std::string model_;
};

TEST_F(CliArgs, ParsesAFullCommandLine) {
  WarmupArgs a =
      parseWarmupArgs({"--model", model_, "--input", "x:float16:[1..64,128,768]",
                       "--input=mask:float16:[1..64,1,128]", "--cache-dir", "/tmp/c", "--arch",
                       "sm_90", "--summary-json", "s.json", "--quiet", "--tune"});
  EXPECT_EQ(a.model, model_);
  ASSERT_EQ(a.inputs.size(), 2u);
  EXPECT_EQ(a.inputs[1].name, "mask");
  ASSERT_EQ(a.symbols.size(), 1u);  // batch shared
  EXPECT_EQ(a.cacheDir.value_or(""), "/tmp/c");
  EXPECT_EQ(a.arch.value_or(""), "sm_90");
  EXPECT_EQ(a.summaryJson.value_or(""), "s.json");
  EXPECT_TRUE(a.quiet);
  EXPECT_TRUE(a.tune);
  EXPECT_FALSE(a.help);
}

TEST_F(CliArgs, OptionalFlagsDefaultToUnset) {
  WarmupArgs a = parseWarmupArgs({"--model", model_, "--input", "x:float:[4]"});
  EXPECT_FALSE(a.arch.has_value());
  EXPECT_FALSE(a.cacheDir.has_value());
  EXPECT_FALSE(a.summaryJson.has_value());
  EXPECT_TRUE(a.symbols.empty());
}

TEST_F(CliArgs, HelpSkipsOtherChecks) {
  EXPECT_TRUE(parseWarmupArgs({"--help"}).help);
  EXPECT_TRUE(parseWarmupArgs({"--model", "/nonexistent", "-h"}).help);
}

TEST_F(CliArgs, VersionSkipsOtherChecks) {
  EXPECT_TRUE(parseWarmupArgs({"--version"}).version);
  EXPECT_TRUE(parseWarmupArgs({"--model", "/nonexistent", "--version"}).version);
  EXPECT_FALSE(parseWarmupArgs({"--help"}).version);
}

TEST_F(CliArgs, BadUsage) {
  const std::string in = "x:float16:[1..8,64]";
  EXPECT_EQ(error({"--modle", model_, "--input", in}), "unknown flag --modle");
  EXPECT_EQ(error({"--model", model_, "--input", in, "extra"}), "unexpected argument \"extra\"");
  EXPECT_EQ(error({"--model", model_, "--input"}), "--input: missing value");
  EXPECT_EQ(error({"--model=", "--input", in}), "--model: empty value");
  EXPECT_EQ(error({"--input", in}), "--model is required");
  EXPECT_EQ(error({"--model", model_}), "at least one --input is required");
  EXPECT_EQ(error({"--model", model_, "--model", model_, "--input", in}), "--model given twice");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--arch", "sm_90", "--arch", "sm_80"}),
            "--arch given twice");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--arch", "sm90"}),
            "--arch \"sm90\": expected sm_XX (e.g. sm_80, sm_90, sm_90a)");
  EXPECT_EQ(error({"--model", model_, "--input", "x:flaot16:[4]"}),
            "--input \"x:flaot16:[4]\": unknown dtype \"flaot16\" (expected float16, half, "
            "bfloat16, float32, float, int64, long, int32, int or bool)");
  EXPECT_EQ(error({"--model", model_, "--input", "x:float16:[1..8", "--arch", "sm_90"}),
            "--input \"x:float16:[1..8\": dims \"[1..8\" must be in brackets, e.g. [1..64,128]");
  EXPECT_EQ(error({"--model", (dir_ / "missing.pt").string(), "--input", in}),
            "--model " + (dir_ / "missing.pt").string() + ": no such file");
  EXPECT_EQ(error({"--model", dir_.string(), "--input", in}),
            "--model " + dir_.string() + ": not a regular file");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--cache-dir", model_}),
            "--cache-dir " + model_ + ": exists and is not a directory");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--input", "m:bfloat16:[1..8,1]"}),
            "--input m is bfloat16 but --input x is float16: the floating inputs of a model need "
            "one dtype");
  // Integer and bool inputs (token ids, masks) beside floating ones are fine.
  EXPECT_NO_THROW(parseWarmupArgs({"--model", model_, "--input", "ids:int64:[b=1..8,s=2..64]",
                                   "--input", "mask:bool:[b,s]", "--input", "x:half:[b,4]"}));
  // Note [Absurd warmup ranges] and --buckets.
  EXPECT_EQ(error({"--model", model_, "--input", "x:half:[b=1..1099511627776,64]"}),
            "--input \"x:half:[b=1..1099511627776,64]\": dim 0 (\"b=1..1099511627776\"): "
            "1099511627776 is larger than 2147483647, the largest size kiln-warmup accepts");
  EXPECT_EQ(
      error({"--model", model_, "--input", "x:half:[a=1..64,b=1..64,c=1..64,d=1..64,e=1..64]"}),
      "the dynamic dims give more than 4096 bucket combinations (symbol e = 1..64 has 6 "
      "buckets); narrow the ranges or give --buckets");
  EXPECT_EQ(error({"--model", model_, "--input", "x:half:[b=1..64,64]", "--buckets", "b=8,8"}),
            "--buckets \"b=8,8\": edge \"8\" must be an integer in 1..2147483647 above the edge "
            "before it");
  EXPECT_EQ(error({"--model", model_, "--input", "x:half:[b=1..64,64]", "--buckets", "c=8"}),
            "--buckets \"c=8\": expected NAME=E1,E2,... with NAME one of the dynamic dims' "
            "symbols [b]");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--device", "tpu"}),
            "--device \"tpu\": expected cpu or cuda");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--summary-json", "/nonexistent-dir/s.json"}),
            "--summary-json /nonexistent-dir/s.json: directory /nonexistent-dir does not exist");
  EXPECT_EQ(error({"--model", model_, "--input", "x:half:[b,64]"}),
            "--input x: dim 0 uses symbol b, which no input defines (write b=lo..hi once)");
  EXPECT_EQ(error({"--model", model_, "--input", "x:half:[0..1,64]"}),
            "--input x: dim 0 (0..1) has no bucket to warm up (dynamic sizes must reach 2; write a "
            "static size instead)");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--quiet=yes"}), "--quiet takes no value");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--tune=1"}), "--tune takes no value");
  // Note [Calibrating in the warm-up].
  EXPECT_EQ(error({"--model", model_, "--input", in, "--precision", "fp4"}),
            error({"--model", model_, "--input", in, "--precision=fp4"}));
  EXPECT_NE(error({"--model", model_, "--input", in, "--precision", "fp4"}).find("fp4"),
            std::string::npos);
  EXPECT_EQ(error({"--model", model_, "--input", in, "--precision", "fp8", "--precision", "int8"}),
            "--precision given twice");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--calibrate", (dir_ / "none.pt").string()}),
            "--calibrate " + (dir_ / "none.pt").string() + ": no such file");
  EXPECT_EQ(error({"--model", model_, "--input", in, "--precision", "bf16", "--calibrate", model_}),
            "--calibrate calibrates 8-bit linears: it needs --precision fp8 or int8, not bf16");
  const WarmupArgs calibrate = parseWarmupArgs(
      {"--model", model_, "--input", in, "--precision", "e4m3", "--calibrate", model_});
  EXPECT_EQ(calibrate.precision, kiln::Precision::kFp8);
  EXPECT_EQ(calibrate.calibrate.value_or(""), model_);
}

}  // namespace
}  // namespace kiln::warmup

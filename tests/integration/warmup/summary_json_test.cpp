// kiln-warmup's --summary-json text: one line, the same keys in the same order as ever, values
// escaped by nlohmann-json so that paths with quotes or control characters parse back exactly.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "integrations/warmup/warmup.h"

namespace {

TEST(WarmupSummaryJson, OneLineWithTheSameKeysAndExactStrings) {
  kiln::warmup::WarmupSummary s;
  s.arch = "sm_90";
  s.cacheDir = "/tmp/a \"quoted\" dir\\with\nnewline\t\x01";
  s.kernelsCompiled = 3;
  s.kernelsCached = 2;
  s.buckets = 4;
  s.groups = 5;
  s.groupsFailed = 1;
  s.tuned = true;
  s.kernelsTuned = 6;
  s.variantsTried = 7;
  s.eagerOps = {"aten::cumsum", "odd \"op\""};
  s.skippedBuckets = {"s0:1"};
  s.seconds = 1.23456;
  s.device = "cpu";
  s.captureStored = true;
  s.writesFailed = 2;
  s.entriesEvicted = 1;
  const std::string text = kiln::warmup::toJson(s);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1) << "one line: " << text;
  // kiln-warmup's CLI test and scripts read `"key": value`.
  EXPECT_NE(text.find("\"kernels_compiled\": 3"), std::string::npos) << text;

  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(text);
  std::vector<std::string> keys;
  for (const auto& item : j.items()) keys.push_back(item.key());
  EXPECT_EQ(keys, (std::vector<std::string>{
                      "kernels_compiled", "kernels_cached", "buckets", "groups", "groups_failed",
                      "eager_ops", "skipped_buckets", "seconds", "arch", "cache_dir", "tuned",
                      "kernels_tuned", "variants_tried", "device", "capture_stored",
                      "capture_cached", "writes_failed", "entries_evicted", "precision"}));
  EXPECT_FALSE(j.contains("calibration")) << "only with --calibrate";
  EXPECT_EQ(j.at("kernels_compiled").get<int>(), 3);
  EXPECT_EQ(j.at("device").get<std::string>(), "cpu");
  EXPECT_TRUE(j.at("capture_stored").get<bool>());
  EXPECT_FALSE(j.at("capture_cached").get<bool>());
  EXPECT_EQ(j.at("writes_failed").get<int>(), 2);
  EXPECT_EQ(j.at("entries_evicted").get<int>(), 1);
  EXPECT_EQ(j.at("kernels_cached").get<int>(), 2);
  EXPECT_EQ(j.at("buckets").get<int>(), 4);
  EXPECT_EQ(j.at("groups").get<int>(), 5);
  EXPECT_EQ(j.at("groups_failed").get<int>(), 1);
  EXPECT_EQ(j.at("eager_ops").get<std::vector<std::string>>(), s.eagerOps);
  EXPECT_EQ(j.at("skipped_buckets").get<std::vector<std::string>>(), s.skippedBuckets);
  EXPECT_DOUBLE_EQ(j.at("seconds").get<double>(), 1.235);  // milliseconds, as before
  EXPECT_EQ(j.at("arch").get<std::string>(), s.arch);
  EXPECT_EQ(j.at("cache_dir").get<std::string>(), s.cacheDir);
  EXPECT_TRUE(j.at("tuned").get<bool>());
  EXPECT_EQ(j.at("kernels_tuned").get<int>(), 6);
  EXPECT_EQ(j.at("variants_tried").get<int>(), 7);
}

// Note [Calibrating in the warm-up]: the "calibration" object, and the linears still calibrating
// that make the warm-up fail.
TEST(WarmupSummaryJson, CalibrationListsEveryLinear) {
  kiln::warmup::WarmupSummary s;
  s.precision = "fp8";
  s.calibrationSamples = 2;
  s.calibrationCalls = 16;
  s.quantLayers = {{"fc1.weight (step 3)", "fp8, error 0.0100", 0.01, true, false},
                   {"fc2.weight (step 5)", "16-bit: error 0.2000 > 0.08", 0.2, false, true}};
  s.quantSkipped = {"linear 2 (step 7): its weight is computed, not a param"};
  EXPECT_EQ(kiln::warmup::calibrationProblem(s), std::nullopt);
  const nlohmann::json j = nlohmann::json::parse(kiln::warmup::toJson(s));
  EXPECT_EQ(j.at("precision"), "fp8");
  const nlohmann::json& c = j.at("calibration");
  EXPECT_EQ(c.at("samples"), 2);
  EXPECT_EQ(c.at("calls"), 16);
  ASSERT_EQ(c.at("linears").size(), 2u);
  EXPECT_EQ(c.at("linears")[1].at("label"), "fc2.weight (step 5)");
  EXPECT_EQ(c.at("linears")[1].at("state"), "16-bit: error 0.2000 > 0.08");
  EXPECT_DOUBLE_EQ(c.at("linears")[1].at("rel_error").get<double>(), 0.2);
  EXPECT_FALSE(c.at("linears")[1].at("quantized").get<bool>());
  EXPECT_TRUE(c.at("linears")[1].at("from_record").get<bool>());
  EXPECT_EQ(c.at("skipped"), nlohmann::json(s.quantSkipped));
  const std::string text = kiln::warmup::toText(s);
  EXPECT_NE(text.find("1 of 2 linears run 8-bit"), std::string::npos) << text;
  EXPECT_NE(text.find("fc2.weight (step 5): 16-bit: error 0.2000 > 0.08"), std::string::npos)
      << text;

  s.quantLayers.push_back(
      {"fc3.weight (step 9)", "calibrating (0 of 8 calls)", -1, false, false, /*calibrating=*/true});
  const nlohmann::json k = nlohmann::json::parse(kiln::warmup::toJson(s));
  EXPECT_TRUE(k.at("calibration").at("linears")[2].at("rel_error").is_null());
  const std::optional<std::string> problem = kiln::warmup::calibrationProblem(s);
  ASSERT_TRUE(problem.has_value());
  EXPECT_NE(problem->find("1 of 3 linears are still calibrating after 16 calls"), std::string::npos)
      << *problem;
  EXPECT_NE(problem->find("fc3.weight (step 9)"), std::string::npos) << *problem;
}

}  // namespace

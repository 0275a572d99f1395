// kiln-warmup's --summary-json text: one line, the same keys in the same order as ever, values
// escaped by nlohmann-json so that paths with quotes or control characters parse back exactly.
#include <gtest/gtest.h>

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
                      "capture_cached", "writes_failed", "entries_evicted"}));
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

}  // namespace

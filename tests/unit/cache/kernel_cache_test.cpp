#include "cache/kernel_cache.h"

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cache_test_util.h"

namespace kiln::cache {
namespace {
namespace fs = std::filesystem;
using testing::LogCapture;
using testing::readFile;
using testing::TempDir;
using testing::testKey;
using testing::writeFile;

KernelCacheOptions at(const fs::path& dir) {
  KernelCacheOptions o;
  o.dir = dir;
  return o;
}

TEST(KernelCacheTest, DiskHitInAFreshCacheThenMemoryHit) {
  TempDir tmp;
  const CacheKey key = testKey("kernel");
  {
    KernelCache cache(at(tmp.path()));
    EXPECT_EQ(cache.getOrCreate(key, [] { return std::string("cubin"); }), "cubin");
    EXPECT_EQ(cache.stats().produced, 1u);
    EXPECT_EQ(cache.stats().misses, 1u);
  }
  KernelCache fresh(at(tmp.path()));  // a new process's view
  int runs = 0;
  EXPECT_EQ(fresh.getOrCreate(key,
                              [&] {
                                ++runs;
                                return std::string("other");
                              }),
            "cubin");
  EXPECT_EQ(fresh.get(key), "cubin");
  EXPECT_EQ(runs, 0);
  const CacheStats s = fresh.stats();
  EXPECT_EQ(s.diskHits, 1u);
  EXPECT_EQ(s.memoryHits, 1u);
  EXPECT_EQ(s.misses, 0u);
  EXPECT_EQ(s.memoryEntries, 1u);
  EXPECT_EQ(s.diskMode, DiskMode::kReadWrite);
  EXPECT_GT(s.diskBytes, 0u);
}

TEST(KernelCacheTest, ConcurrentCallersInOneProcessProduceOnce) {
  for (bool disk : {false, true}) {
    TempDir tmp;
    KernelCacheOptions o = at(tmp.path());
    o.diskEnabled = disk;
    KernelCache cache(o);
    std::atomic<int> runs = 0;
    std::vector<std::thread> threads;
    std::atomic<int> wrong = 0;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        const std::string v = cache.getOrCreate(testKey("shared"), [&] {
          ++runs;
          std::this_thread::sleep_for(std::chrono::milliseconds(30));
          return std::string("bytes");
        });
        wrong += v != "bytes";
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(runs.load(), 1) << "disk=" << disk;
    EXPECT_EQ(wrong.load(), 0);
    EXPECT_EQ(cache.stats().produced, 1u);
  }
}

TEST(KernelCacheTest, ProducerFailureReachesEveryWaiterAndStoresNothing) {
  KernelCacheOptions o;
  o.diskEnabled = false;
  KernelCache cache(o);
  std::atomic<int> failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      try {
        cache.getOrCreate(testKey("bad"), []() -> std::string {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          throw std::runtime_error("compile failed");
        });
      } catch (const std::runtime_error&) {
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 4);
  EXPECT_FALSE(cache.get(testKey("bad")).has_value());
}

TEST(KernelCacheTest, CorruptDiskEntryIsRebuilt) {
  TempDir tmp;
  const CacheKey key = testKey("k");
  fs::path path;
  {
    KernelCache cache(at(tmp.path()));
    ASSERT_TRUE(cache.put(key, "good bytes"));
    path = cache.disk()->entryPath(key.digest());
  }
  std::string f = readFile(path);
  f[f.size() - 12] ^= 0x40;
  writeFile(path, f);
  LogCapture logs;
  KernelCache cache(at(tmp.path()));
  EXPECT_EQ(cache.getOrCreate(key, [] { return std::string("good bytes"); }), "good bytes");
  EXPECT_EQ(cache.stats().corruptDropped, 1u);
  EXPECT_EQ(cache.stats().produced, 1u);
  EXPECT_EQ(logs.count("checksum mismatch"), 1u);
  EXPECT_EQ(KernelCache(at(tmp.path())).get(key), "good bytes");
}

TEST(KernelCacheTest, TuningRecordsPersistBesideKernels) {
  TempDir tmp;
  {
    KernelCache cache(at(tmp.path()));
    ASSERT_TRUE(cache.putTuningRecord("layernorm#3f2a", "s0=64", "sm_90", 1, "rows=4 block=256"));
    ASSERT_TRUE(cache.put(testKey("layernorm#3f2a"), "cubin"));
  }
  KernelCache fresh(at(tmp.path()));
  EXPECT_EQ(fresh.getTuningRecord("layernorm#3f2a", "s0=64", "sm_90", 1), "rows=4 block=256");
  EXPECT_FALSE(fresh.getTuningRecord("layernorm#3f2a", "s0=128", "sm_90", 1).has_value());
  EXPECT_FALSE(fresh.getTuningRecord("layernorm#3f2a", "s0=64", "sm_80", 1).has_value());
  size_t tuning = 0;
  for (const DiskEntryInfo& e : fresh.disk()->list()) tuning += e.kind == "tuning";
  EXPECT_EQ(tuning, 1u);
}

TEST(KernelCacheTest, MemoryOnlyWhenDiskDisabled) {
  KernelCacheOptions o;
  o.diskEnabled = false;
  KernelCache cache(o);
  EXPECT_EQ(cache.disk(), nullptr);
  EXPECT_FALSE(cache.put(testKey("k"), "v"));
  EXPECT_EQ(cache.get(testKey("k")), "v");
  EXPECT_EQ(cache.stats().diskMode, DiskMode::kDisabled);
}

}  // namespace
}  // namespace kiln::cache

#include "cache/memory_cache.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace kiln::cache {
namespace {

Digest d(int i) {
  return hash128(std::to_string(i));
}

TEST(MemoryCacheTest, EvictsLeastRecentlyUsedWithinByteBudget) {
  MemoryCache cache(300);
  cache.put(d(1), std::string(100, 'a'));
  cache.put(d(2), std::string(100, 'b'));
  cache.put(d(3), std::string(100, 'c'));
  EXPECT_EQ(cache.bytes(), 300u);
  ASSERT_TRUE(cache.get(d(1)).has_value());  // 1 is now most recent; 2 is oldest
  cache.put(d(4), std::string(100, 'd'));
  EXPECT_FALSE(cache.get(d(2)).has_value());
  EXPECT_EQ(*cache.get(d(1)), std::string(100, 'a'));
  EXPECT_TRUE(cache.get(d(3)).has_value());
  EXPECT_TRUE(cache.get(d(4)).has_value());
  EXPECT_EQ(cache.bytes(), 300u);
  EXPECT_EQ(cache.evictions(), 1u);
}

TEST(MemoryCacheTest, ReplaceAndOversize) {
  MemoryCache cache(100);
  cache.put(d(1), std::string(60, 'a'));
  cache.put(d(1), std::string(30, 'b'));
  EXPECT_EQ(cache.bytes(), 30u);
  EXPECT_EQ(*cache.get(d(1)), std::string(30, 'b'));
  cache.put(d(2), std::string(101, 'c'));  // larger than the budget: not kept, nothing evicted
  EXPECT_FALSE(cache.get(d(2)).has_value());
  EXPECT_TRUE(cache.get(d(1)).has_value());
  EXPECT_TRUE(cache.erase(d(1)));
  EXPECT_EQ(cache.bytes(), 0u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(MemoryCacheTest, ConcurrentUseStaysWithinBudget) {
  MemoryCache cache(1000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const int k = (i * 7 + t) % 50;
        if (auto v = cache.get(d(k))) {
          EXPECT_EQ(*v, std::string(static_cast<size_t>(10 + k), static_cast<char>('a' + k % 26)));
        } else {
          cache.put(d(k),
                    std::string(static_cast<size_t>(10 + k), static_cast<char>('a' + k % 26)));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(cache.bytes(), 1000u);
}

}  // namespace
}  // namespace kiln::cache

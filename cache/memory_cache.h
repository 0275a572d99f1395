#pragma once
// The in-memory tier: a thread-safe LRU over byte payloads with a byte budget.
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cache/cache_key.h"

namespace kiln::cache {

class MemoryCache {
 public:
  explicit MemoryCache(uint64_t maxBytes) : maxBytes_(maxBytes) {}

  // A hit moves the entry to the front.
  std::optional<std::string> get(const Digest& key);
  // Inserts or replaces, then evicts least recently used entries until within budget. A payload
  // larger than the whole budget is not kept.
  void put(const Digest& key, std::string payload);
  bool erase(const Digest& key);
  void clear();

  uint64_t bytes() const;
  size_t size() const;
  uint64_t evictions() const;
  uint64_t maxBytes() const { return maxBytes_; }

 private:
  struct Entry {
    Digest key;
    std::string payload;
  };
  void evictLocked();

  const uint64_t maxBytes_;
  mutable std::mutex mutex_;
  std::list<Entry> order_;  // front = most recently used
  std::unordered_map<Digest, std::list<Entry>::iterator, DigestHash> index_;
  uint64_t bytes_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace kiln::cache

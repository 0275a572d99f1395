#pragma once
// The kernel cache: an in-memory LRU in front of the on-disk store. What the jit asks for compiled
// kernels and tuning records.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cache/cache_key.h"
#include "cache/disk_store.h"
#include "cache/memory_cache.h"

namespace kiln::cache {

inline constexpr uint64_t kDefaultMemoryMaxBytes = uint64_t{256} << 20;

struct KernelCacheOptions {
  // Explicit root for the disk tier; empty -> resolveCacheRoot() (KILN_CACHE_DIR, XDG, HOME).
  std::optional<std::filesystem::path> dir;
  // False: memory only (e.g. KILN_CACHE=off), no warning.
  bool diskEnabled = true;
  uint64_t diskMaxBytes = kDefaultDiskMaxBytes;  // KILN_CACHE_MAX_BYTES
  uint64_t memoryMaxBytes = kDefaultMemoryMaxBytes;
  std::chrono::milliseconds lockTimeout = std::chrono::minutes(2);
};

struct CacheStats {
  uint64_t memoryHits = 0;
  uint64_t diskHits = 0;
  uint64_t misses = 0;    // neither tier had it
  uint64_t produced = 0;  // producer runs through getOrCreate in this process
  uint64_t corruptDropped = 0;
  uint64_t diskWriteFailures = 0;
  uint64_t diskEvictions = 0;
  uint64_t memoryEvictions = 0;
  uint64_t memoryBytes = 0;
  uint64_t memoryEntries = 0;
  uint64_t diskBytes = 0;  // as last seen by this process
  DiskMode diskMode = DiskMode::kDisabled;
};

class KernelCache {
 public:
  explicit KernelCache(KernelCacheOptions options = {});
  KernelCache(const KernelCache&) = delete;
  KernelCache& operator=(const KernelCache&) = delete;

  // Memory, then disk (a disk hit is promoted to memory).
  std::optional<std::string> get(const CacheKey& key);
  // Stores in memory and, when possible, on disk. Returns whether the disk got it.
  bool put(const CacheKey& key, std::string_view payload);
  // Returns the cached payload or runs `producer` and stores its result. Concurrent callers for
  // one key, in this process (threads wait for the first) or across processes (Note
  // [Cross-process compile once]), run the producer once. Producer exceptions propagate to every
  // caller waiting on that run and nothing is stored.
  std::string getOrCreate(const CacheKey& key, const std::function<std::string()>& producer);

  // Tuning records: small blobs (serialized params) keyed by group and bucket, in the same store.
  std::optional<std::string> getTuningRecord(std::string_view groupSignature,
                                             std::string_view bucket, const std::string& arch,
                                             uint32_t codegenVersion);
  bool putTuningRecord(std::string_view groupSignature, std::string_view bucket,
                       const std::string& arch, uint32_t codegenVersion, std::string_view record);

  CacheStats stats() const;
  // The disk tier, for tools (list/verify/clear/usage) and for tests.
  DiskStore* disk() { return disk_.get(); }
  const DiskStore* disk() const { return disk_.get(); }
  // Drops the memory tier (disk untouched).
  void clearMemory() { memory_.clear(); }

 private:
  KernelCacheOptions options_;
  MemoryCache memory_;
  std::unique_ptr<DiskStore> disk_;  // null when diskEnabled is false

  std::mutex inflightMutex_;
  std::unordered_map<Digest, std::shared_future<std::string>, DigestHash> inflight_;

  std::atomic<uint64_t> memoryHits_{0}, diskHits_{0}, misses_{0}, produced_{0};
};

}  // namespace kiln::cache

#include "cache/kernel_cache.h"

namespace kiln::cache {

KernelCache::KernelCache(KernelCacheOptions options)
    : options_(std::move(options)), memory_(options_.memoryMaxBytes) {
  if (options_.diskEnabled) {
    DiskStoreOptions d;
    d.root = options_.dir;
    d.maxBytes = options_.diskMaxBytes;
    d.lockTimeout = options_.lockTimeout;
    disk_ = std::make_unique<DiskStore>(std::move(d));
  }
}

std::optional<std::string> KernelCache::get(const CacheKey& key) {
  const Digest digest = key.digest();
  if (auto hit = memory_.get(digest)) {
    ++memoryHits_;
    return hit;
  }
  if (disk_) {
    if (auto hit = disk_->get(key)) {
      ++diskHits_;
      memory_.put(digest, *hit);
      return hit;
    }
  }
  ++misses_;
  return std::nullopt;
}

bool KernelCache::put(const CacheKey& key, std::string_view payload) {
  memory_.put(key.digest(), std::string(payload));
  return disk_ && disk_->put(key, payload);
}

std::string KernelCache::getOrCreate(const CacheKey& key,
                                     const std::function<std::string()>& producer) {
  const Digest digest = key.digest();
  if (auto hit = memory_.get(digest)) {
    ++memoryHits_;
    return std::move(*hit);
  }
  // One producer per key in this process: later callers wait on the first one's future.
  std::promise<std::string> promise;
  std::shared_future<std::string> future;
  {
    std::lock_guard<std::mutex> lock(inflightMutex_);
    if (auto it = inflight_.find(digest); it != inflight_.end()) {
      future = it->second;
    } else {
      inflight_.emplace(digest, promise.get_future().share());
    }
  }
  if (future.valid()) {
    ++memoryHits_;  // served from the in-process run, without touching disk or compiling
    return future.get();
  }
  try {
    // A racing caller may have finished and left the in-flight map just before we entered it.
    std::optional<std::string> value = memory_.get(digest);
    if (value) {
      ++memoryHits_;
    } else if (disk_) {
      bool ran = false;
      value = disk_->getOrCreate(key, producer, &ran);
      ++(ran ? misses_ : diskHits_);
      if (ran) ++produced_;
      memory_.put(digest, *value);
    } else {
      ++misses_;
      ++produced_;
      value = producer();
      memory_.put(digest, *value);
    }
    promise.set_value(*value);
    std::lock_guard<std::mutex> lock(inflightMutex_);
    inflight_.erase(digest);
    return std::move(*value);
  } catch (...) {
    promise.set_exception(std::current_exception());
    std::lock_guard<std::mutex> lock(inflightMutex_);
    inflight_.erase(digest);
    throw;
  }
}

std::optional<std::string> KernelCache::getTuningRecord(std::string_view groupSignature,
                                                        std::string_view bucket,
                                                        const std::string& arch,
                                                        uint32_t codegenVersion) {
  return get(CacheKey::tuningRecord(groupSignature, bucket, arch, codegenVersion));
}

bool KernelCache::putTuningRecord(std::string_view groupSignature, std::string_view bucket,
                                  const std::string& arch, uint32_t codegenVersion,
                                  std::string_view record) {
  return put(CacheKey::tuningRecord(groupSignature, bucket, arch, codegenVersion), record);
}

CacheStats KernelCache::stats() const {
  CacheStats s;
  s.memoryHits = memoryHits_;
  s.diskHits = diskHits_;
  s.misses = misses_;
  s.produced = produced_;
  s.memoryBytes = memory_.bytes();
  s.memoryEntries = memory_.size();
  s.memoryEvictions = memory_.evictions();
  if (disk_) {
    const DiskStoreStats d = disk_->stats();
    s.corruptDropped = d.corruptDropped;
    s.diskWriteFailures = d.writeFailures;
    s.diskEvictions = d.evictions;
    s.diskBytes = d.bytes;
    s.diskMode = disk_->mode();
  }
  return s;
}

}  // namespace kiln::cache

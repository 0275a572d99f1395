#include "cache/memory_cache.h"

namespace kiln::cache {

std::optional<std::string> MemoryCache::get(const Digest& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  order_.splice(order_.begin(), order_, it->second);
  return it->second->payload;
}

void MemoryCache::put(const Digest& key, std::string payload) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = index_.find(key); it != index_.end()) {
    bytes_ -= it->second->payload.size();
    order_.erase(it->second);
    index_.erase(it);
  }
  if (payload.size() > maxBytes_) return;
  bytes_ += payload.size();
  order_.push_front(Entry{key, std::move(payload)});
  index_[key] = order_.begin();
  evictLocked();
}

bool MemoryCache::erase(const Digest& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  bytes_ -= it->second->payload.size();
  order_.erase(it->second);
  index_.erase(it);
  return true;
}

void MemoryCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  order_.clear();
  index_.clear();
  bytes_ = 0;
}

void MemoryCache::evictLocked() {
  while (bytes_ > maxBytes_ && !order_.empty()) {
    Entry& victim = order_.back();
    bytes_ -= victim.payload.size();
    index_.erase(victim.key);
    order_.pop_back();
    ++evictions_;
  }
}

uint64_t MemoryCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}

size_t MemoryCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return index_.size();
}

uint64_t MemoryCache::evictions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return evictions_;
}

}  // namespace kiln::cache

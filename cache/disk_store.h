#pragma once
// The on-disk tier: one file per entry under a versioned, private root (Note [Disk store layout]).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/cache_key.h"

namespace kiln::cache {

// Note [Disk store layout]
//   <root>/v<kFormatVersion>/<first 2 hex of digest>/<32 hex digest>.kbin   entries
//                                                  /<32 hex digest>.lock   "compile once" locks
//                                                  /.tmp-<hex>-<pid>-<n>   writes in progress
//   <root>/v<kFormatVersion>/VERSION   the kiln that last wrote entries (Note [Cache version file])
// Entry file (integers little-endian):
//   magic "KILNCBIN" | u32 format version | u32 key text size | u64 digest.hi | u64 digest.lo |
//   u64 payload size | key text | payload | u64 checksum (hash128(all preceding bytes).lo)
// The checksum is a trailer so that it covers the header too and a truncated file loses it.
// Publication: write a temp file in the same shard dir, fsync, rename over the entry path; readers
// see either no entry or a complete one. Every published entry's header repeats the full key text,
// compared on read (Note [Cache key contents]).
//
// Note [Trusted cache owners]
// A cubin in the cache is code that will run, so the root, the versioned dir and the shard dirs
// must be owned by the current user or by root, and writable by neither group nor others;
// otherwise the store refuses the disk (memory-only) with one warning. Root is trusted because
// it can replace any code the process runs anyway; this is what a container image needs: a cache
// baked in by root at build time (kiln-warmup, then chmod -R a+rX,go-w so entries are readable)
// and served to a non-root service. Such a cache is not writable by the service, so the store
// opens it read-only (the write probe fails): entries are served, new kernels stay in memory,
// and one warning says so. Missing dirs are created 0700.
//
// Note [Cross-process compile once]
// getOrCreate() takes flock(LOCK_EX) on <digest>.lock, re-checks, produces, publishes, then unlinks
// the lock file while still holding it. Lockers re-check after flock that the path still names
// the inode they locked (else retry), which makes unlinking safe and keeps lock files from piling
// up. The kernel drops a dead holder's flock, so a crashed compiler blocks no one; a live but hung
// holder is bounded by lockTimeout, after which the waiter compiles anyway (a duplicate compile,
// never a wrong or partial entry). flock is advisory and may not work across NFS clients; there,
// duplicates are possible but still correct.
// Note [Cache version file]
// <root>/v<N>/VERSION holds one line, kiln::version() of the last kiln that wrote an entry there
// (written once per store, at its first publish, and only when it differs), so that a cache can
// say which build filled it (kiln-cache stats). It is informational: readers never consult it,
// entries stay readable by any kiln with the same kFormatVersion, and a missing or garbled file
// changes nothing. Opening a store does not write it, so inspecting a cache does not overwrite it.
enum class DiskMode {
  kReadWrite,
  kReadOnly,  // root not writable: existing entries are served, new ones stay in memory
  kDisabled,  // no usable root: memory-only
};
std::string_view toString(DiskMode mode);

enum class EntryStatus {
  kOk,
  kMissing,
  kTruncated,
  kBadMagic,
  kBadVersion,
  kSizeMismatch,
  kBadChecksum,
  kKeyMismatch,
  kIoError,
};
std::string_view toString(EntryStatus status);

inline constexpr uint32_t kFormatVersion = 1;
// Note [Entry files are untrusted] (disk_store.cpp): the largest entry file kiln writes or reads.
// Kernels and captured graphs are megabytes; a larger file under an entry's name is not kiln's,
// and reading it whole could exhaust memory (a sparse file of terabytes costs nothing on disk).
inline constexpr uint64_t kMaxEntryFileBytes = uint64_t{256} << 20;
inline constexpr uint64_t kDefaultDiskMaxBytes = uint64_t{2} << 30;  // 2 GiB

struct DiskStoreOptions {
  // Explicit root; when empty, resolveCacheRoot() decides.
  std::optional<std::filesystem::path> root;
  // KILN_CACHE_MAX_BYTES. Exceeding it evicts least recently used entries down to 90% of it.
  uint64_t maxBytes = kDefaultDiskMaxBytes;
  // When false, a missing root is not created and the store is disabled without a warning (for
  // tools that only inspect a cache).
  bool createIfMissing = true;
  // How long getOrCreate() waits for another process compiling the same key.
  std::chrono::milliseconds lockTimeout = std::chrono::minutes(2);
  // Temp files older than this (or whose writer is dead) are removed when the store opens.
  std::chrono::seconds staleTempAge = std::chrono::seconds(60);
};

struct DiskStoreStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t corruptDropped = 0;
  uint64_t writes = 0;
  uint64_t writeFailures = 0;
  uint64_t evictions = 0;
  uint64_t staleFilesRemoved = 0;  // temp and orphaned lock files cleaned on open
  uint64_t bytes = 0;              // entry bytes on disk as last seen by this process
};

struct DiskEntryInfo {
  std::filesystem::path path;
  std::optional<Digest> digest;  // from the file name
  std::string kind;              // from the header's key text; empty if unreadable
  std::string arch;
  uint64_t fileBytes = 0;
  uint64_t payloadBytes = 0;
  int64_t lastUsedUnixSeconds = 0;  // mtime, bumped on every read hit
};

struct DiskUsage {
  uint64_t entries = 0;
  uint64_t bytes = 0;
  uint64_t tempFiles = 0;
};

struct VerifyResult {
  uint64_t ok = 0;
  // Bad entries found (each deleted when the store is writable), with path and reason.
  std::vector<std::pair<std::filesystem::path, EntryStatus>> bad;
};

// Explicit dir, else $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln (if absolute), else
// $HOME/.cache/kiln (HOME from the password database if unset). nullopt if none can be found.
std::optional<std::filesystem::path> resolveCacheRoot(
    const std::optional<std::filesystem::path>& explicitDir);

// Entry (de)serialization, exposed for tests and tools.
std::string encodeEntry(const CacheKey& key, std::string_view payload);
// Checks `file` against the digest its name implies and, when given, the exact key text. On kOk
// fills payload/keyText when non-null.
EntryStatus decodeEntry(std::string_view file, const Digest& expected,
                        const std::string* expectedKeyText, std::string* payload,
                        std::string* keyText);

// What putEntryFile() did.
enum class PutEntryResult {
  kWritten,
  kAlreadyPresent,  // a valid entry for the digest was there and was kept
  kInvalid,         // the bytes do not decode against the digest; nothing written
  kNotWritten,      // the disk is not writable or the write failed (one warning)
};

class DiskStore {
 public:
  explicit DiskStore(DiskStoreOptions options = {});
  DiskStore(const DiskStore&) = delete;
  DiskStore& operator=(const DiskStore&) = delete;

  DiskMode mode() const { return mode_; }
  // Why the disk is read-only or disabled; empty when read-write.
  const std::string& modeReason() const { return modeReason_; }
  // The resolved root and <root>/v<N>; empty if none could be resolved.
  const std::filesystem::path& root() const { return root_; }
  const std::filesystem::path& versionDir() const { return versionDir_; }
  std::filesystem::path entryPath(const Digest& digest) const;

  // A miss for absent, other-key and corrupt entries; corrupt ones are reported once, deleted
  // and counted. A hit marks the entry as recently used.
  std::optional<std::string> get(const CacheKey& key);
  // Publishes atomically; false (after one warning) if the disk is not writable or the write
  // fails (e.g. disk full). Nothing already stored is affected by a failed write.
  bool put(const CacheKey& key, std::string_view payload);
  // Note [Cross-process compile once]. `producer` runs at most once per call, only on a miss, and
  // (unless a lock wait times out) in only one process at a time for a key. Exceptions from the
  // producer propagate and publish nothing. *produced says whether this call ran it.
  std::string getOrCreate(const CacheKey& key, const std::function<std::string()>& producer,
                          bool* produced = nullptr);

  // Tools. list() reads headers only; verify() reads and checks every entry and deletes bad ones
  // when writable; clear() removes every entry (and temp file) and returns how many entries.
  std::vector<DiskEntryInfo> list() const;
  DiskUsage usage() const;
  VerifyResult verify();
  uint64_t clear();

  // Whole entry files, for copying a cache between machines (cache/pack.h). readEntryFile()
  // returns an entry file's exact bytes when they decode against `digest` (read as Note [Entry
  // files are untrusted] says), else nullopt and *status says why; it changes nothing, not even
  // the entry's last use. putEntryFile() publishes such bytes like put(), under the key's lock,
  // unless a valid entry is already there: that one is kept even if its bytes differ (two builds
  // of one kernel may), while a corrupt one is replaced.
  std::optional<std::string> readEntryFile(const Digest& digest,
                                           EntryStatus* status = nullptr) const;
  PutEntryResult putEntryFile(const Digest& digest, std::string_view file);

  // Note [Cache version file]: what VERSION says, or nullopt if it is missing or unreadable.
  std::optional<std::string> recordedVersion() const;

  DiskStoreStats stats() const;

 private:
  class KeyLock;
  void open();
  void disable(DiskMode mode, std::string reason);
  std::optional<std::string> read(const CacheKey& key, bool haveLock, bool countMiss);
  void dropCorrupt(const std::filesystem::path& path, uint64_t dev, uint64_t ino,
                   EntryStatus status, bool haveLock);
  bool publishLocked(const CacheKey& key, const Digest& digest, std::string_view payload);
  bool publishFileLocked(const Digest& digest, std::string_view data);
  void recordVersion();
  void cleanStaleFiles();
  void evictExcept(const Digest& keep);
  void warnOnce(std::string_view what, const std::string& message) const;

  DiskStoreOptions options_;
  DiskMode mode_ = DiskMode::kDisabled;
  std::string modeReason_;
  std::filesystem::path root_;
  std::filesystem::path versionDir_;

  std::mutex evictMutex_;
  std::atomic<uint64_t> tempCounter_{0};
  std::atomic<bool> versionRecorded_{false};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> hits_{0}, misses_{0}, corruptDropped_{0}, writes_{0}, writeFailures_{0},
      evictions_{0}, staleFilesRemoved_{0};
};

}  // namespace kiln::cache

#include "cache/disk_store.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <fmt/format.h>

#include "cache/file_io.h"
#include "kiln/version.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::cache {
namespace fs = std::filesystem;
namespace {
using detail::getLE;
using detail::putU32;
using detail::putU64;
using detail::readAll;
using detail::writeAll;

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'C', 'B', 'I', 'N'};
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + 8 + 8;
constexpr size_t kTrailerBytes = 8;
// Sanity bounds so that a corrupt size field cannot make us allocate gigabytes.
constexpr uint64_t kMaxKeyTextBytes = uint64_t{1} << 20;
constexpr std::string_view kEntrySuffix = ".kbin";
constexpr std::string_view kLockSuffix = ".lock";
constexpr std::string_view kTempPrefix = ".tmp-";
constexpr std::string_view kVersionFile = "VERSION";  // Note [Cache version file]

std::string errnoText(int err) {
  return std::strerror(err);
}

// Note [Entry files are untrusted]: opens a cache file for reading without following a link and
// without blocking (a FIFO named like an entry would hang open() and read() forever), and returns
// -1 (errno EINVAL) unless it is a regular file of at most kMaxEntryFileBytes. *st is filled when
// fstat succeeds.
int openEntry(const fs::path& path, struct stat* st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return -1;
  if (::fstat(fd, st) != 0 || !S_ISREG(st->st_mode) ||
      static_cast<uint64_t>(st->st_size) > kMaxEntryFileBytes) {
    ::close(fd);
    errno = EINVAL;
    return -1;
  }
  return fd;
}

// Reads the entry file at `path` and decodes it against `digest`; *file holds the bytes read and
// *st what fstat said. kMissing when there is no such file; kIoError when it is not a regular file
// of a plausible size (Note [Entry files are untrusted]) or cannot be read.
EntryStatus readEntryAt(const fs::path& path, const Digest& digest, std::string& file,
                        struct stat& st) {
  int fd = openEntry(path, &st);
  if (fd < 0) return errno == ENOENT ? EntryStatus::kMissing : EntryStatus::kIoError;
  EntryStatus status = EntryStatus::kIoError;
  if (readAll(fd, file)) status = decodeEntry(file, digest, nullptr, nullptr, nullptr);
  ::close(fd);
  return status;
}

bool isHex2(std::string_view name) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return name.size() == 2 && hex(name[0]) && hex(name[1]);
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::vector<std::string> listDir(const fs::path& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// Why `dir` must not hold code we will run, or empty if it is fine (Note [Trusted cache owners]
// in disk_store.h).
std::string untrustedReason(const fs::path& dir, const struct stat& st) {
  if (!S_ISDIR(st.st_mode)) return fmt::format("{} is not a directory", dir.string());
  if (st.st_uid != ::geteuid() && st.st_uid != 0)
    return fmt::format("{} is owned by uid {}, neither the current user (uid {}) nor root",
                       dir.string(), st.st_uid, ::geteuid());
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
    return fmt::format("{} has mode {:04o}, which lets other users write to it", dir.string(),
                       st.st_mode & 07777);
  return {};
}

// mkdir -p with mode 0700 for every directory it creates. Returns 0 or the errno.
int makeDirs(const fs::path& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
  if (errno != ENOENT) return errno;
  fs::path parent = dir.parent_path();
  if (!parent.empty() && parent != dir) {
    if (int err = makeDirs(parent)) return err;
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno;
  return 0;
}

// ".tmp-<hex>-<pid>-<n>" -> pid, or 0.
pid_t tempWriterPid(std::string_view name) {
  name.remove_prefix(kTempPrefix.size());
  size_t a = name.find('-');
  if (a == std::string_view::npos) return 0;
  size_t b = name.find('-', a + 1);
  if (b == std::string_view::npos) return 0;
  std::string pid(name.substr(a + 1, b - a - 1));
  char* end = nullptr;
  long v = std::strtol(pid.c_str(), &end, 10);
  return (end && *end == '\0' && v > 0) ? static_cast<pid_t>(v) : 0;
}

}  // namespace

// Note [Cross-process compile once]: an flock on a lock file that is unlinked by its holder.
class DiskStore::KeyLock {
 public:
  explicit KeyLock(fs::path path) : path_(std::move(path)) {}
  KeyLock(const KeyLock&) = delete;
  KeyLock& operator=(const KeyLock&) = delete;
  ~KeyLock() { release(); }

  // Waits up to `timeout`. 0 when locked; ETIMEDOUT when another holder kept it that long; else
  // the errno of creating or locking the lock file.
  [[nodiscard]] int acquire(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto sleep = std::chrono::microseconds(200);
    for (;;) {
      int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0) return errno;
      for (;;) {
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0) break;
        if (errno != EWOULDBLOCK && errno != EINTR) {
          const int err = errno;
          ::close(fd);
          return err;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
          ::close(fd);
          return ETIMEDOUT;
        }
        std::this_thread::sleep_for(sleep);
        sleep = std::min(sleep * 2, std::chrono::microseconds(5000));
      }
      // The holder before us may have unlinked the file; then our lock guards nothing.
      struct stat held, now;
      if (::fstat(fd, &held) == 0 && ::stat(path_.c_str(), &now) == 0 &&
          held.st_dev == now.st_dev && held.st_ino == now.st_ino) {
        fd_ = fd;
        return 0;
      }
      ::close(fd);
    }
  }

  void release() {
    if (fd_ < 0) return;
    ::unlink(path_.c_str());  // while still holding the lock: see acquire()
    ::close(fd_);
    fd_ = -1;
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

std::string_view toString(DiskMode mode) {
  switch (mode) {
    case DiskMode::kReadWrite:
      return "read-write";
    case DiskMode::kReadOnly:
      return "read-only";
    case DiskMode::kDisabled:
      return "disabled";
  }
  return "?";
}

std::string_view toString(EntryStatus status) {
  switch (status) {
    case EntryStatus::kOk:
      return "ok";
    case EntryStatus::kMissing:
      return "missing";
    case EntryStatus::kTruncated:
      return "truncated";
    case EntryStatus::kBadMagic:
      return "wrong magic";
    case EntryStatus::kBadVersion:
      return "wrong format version";
    case EntryStatus::kSizeMismatch:
      return "size mismatch";
    case EntryStatus::kBadChecksum:
      return "checksum mismatch";
    case EntryStatus::kKeyMismatch:
      return "key mismatch";
    case EntryStatus::kIoError:
      return "I/O error";
  }
  return "?";
}

std::optional<fs::path> resolveCacheRoot(const std::optional<fs::path>& explicitDir) {
  std::error_code ec;
  auto absolute = [&](const fs::path& p) {
    fs::path a = fs::absolute(p, ec);
    return ec ? p : a;
  };
  if (explicitDir && !explicitDir->empty()) return absolute(*explicitDir);
  if (const char* dir = std::getenv("KILN_CACHE_DIR"); dir && *dir) return absolute(dir);
  // The XDG spec says relative values are to be ignored.
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && xdg[0] == '/')
    return fs::path(xdg) / "kiln";
  std::string home;
  if (const char* h = std::getenv("HOME"); h && *h) {
    home = h;
  } else {
    struct passwd pw;
    struct passwd* result = nullptr;
    char buf[4096];
    if (::getpwuid_r(::geteuid(), &pw, buf, sizeof buf, &result) == 0 && result && result->pw_dir &&
        *result->pw_dir)
      home = result->pw_dir;
  }
  if (home.empty()) return std::nullopt;
  return fs::path(home) / ".cache" / "kiln";
}

std::string encodeEntry(const CacheKey& key, std::string_view payload) {
  const std::string keyText = key.keyText();
  const Digest digest = hash128(keyText);
  std::string out;
  out.reserve(kHeaderBytes + keyText.size() + payload.size() + kTrailerBytes);
  out.append(kMagic, sizeof kMagic);
  putU32(out, kFormatVersion);
  putU32(out, static_cast<uint32_t>(keyText.size()));
  putU64(out, digest.hi);
  putU64(out, digest.lo);
  putU64(out, payload.size());
  out += keyText;
  out += payload;
  putU64(out, hash128(out).lo);
  return out;
}

EntryStatus decodeEntry(std::string_view file, const Digest& expected,
                        const std::string* expectedKeyText, std::string* payload,
                        std::string* keyText) {
  const size_t magicBytes = std::min(file.size(), sizeof kMagic);
  if (file.substr(0, magicBytes) != std::string_view(kMagic, magicBytes))
    return EntryStatus::kBadMagic;
  if (file.size() < kHeaderBytes) return EntryStatus::kTruncated;
  if (getLE(file, 8, 4) != kFormatVersion) return EntryStatus::kBadVersion;
  const uint64_t keyBytes = getLE(file, 12, 4);
  const Digest stored{getLE(file, 16, 8), getLE(file, 24, 8)};
  const uint64_t payloadBytes = getLE(file, 32, 8);
  // Bounds first so that the sum below cannot overflow on a corrupt size field.
  if (keyBytes > kMaxKeyTextBytes || payloadBytes > (uint64_t{1} << 48))
    return EntryStatus::kSizeMismatch;
  const uint64_t total = kHeaderBytes + keyBytes + payloadBytes + kTrailerBytes;
  if (file.size() < total) return EntryStatus::kTruncated;
  if (file.size() > total) return EntryStatus::kSizeMismatch;
  const std::string_view body = file.substr(0, total - kTrailerBytes);
  if (hash128(body).lo != getLE(file, total - kTrailerBytes, 8)) return EntryStatus::kBadChecksum;
  const std::string_view text = file.substr(kHeaderBytes, keyBytes);
  if (!(stored == expected) || !(hash128(text) == stored)) return EntryStatus::kKeyMismatch;
  if (expectedKeyText && text != *expectedKeyText) return EntryStatus::kKeyMismatch;
  if (payload) payload->assign(file.substr(kHeaderBytes + keyBytes, payloadBytes));
  if (keyText) keyText->assign(text);
  return EntryStatus::kOk;
}

DiskStore::DiskStore(DiskStoreOptions options) : options_(std::move(options)) {
  open();
}

void DiskStore::warnOnce(std::string_view what, const std::string& message) const {
  logOnce(LogLevel::kWarn, fmt::format("kiln.cache.{}:{}", what, root_.string()),
          fmt::format("kiln cache: {}", message));
}

void DiskStore::disable(DiskMode mode, std::string reason) {
  mode_ = mode;
  modeReason_ = std::move(reason);
  warnOnce("mode",
           mode == DiskMode::kReadOnly
               ? fmt::format("{}; using existing entries, new kernels stay in memory", modeReason_)
               : fmt::format("{}; using an in-memory cache only", modeReason_));
}

void DiskStore::open() {
  std::optional<fs::path> root = resolveCacheRoot(options_.root);
  if (!root) {
    disable(DiskMode::kDisabled, "no cache directory (set KILN_CACHE_DIR or HOME)");
    return;
  }
  root_ = *root;
  versionDir_ = root_ / fmt::format("v{}", kFormatVersion);

  struct stat st;
  if (::stat(root_.c_str(), &st) != 0) {
    if (errno == ENOENT && !options_.createIfMissing) {
      mode_ = DiskMode::kDisabled;
      modeReason_ = fmt::format("{} does not exist", root_.string());
      return;
    }
    if (int err = makeDirs(root_)) {
      disable(DiskMode::kDisabled,
              fmt::format("cannot create cache directory {}: {}", root_.string(), errnoText(err)));
      return;
    }
    if (::stat(root_.c_str(), &st) != 0) {
      disable(DiskMode::kDisabled,
              fmt::format("cannot stat {}: {}", root_.string(), errnoText(errno)));
      return;
    }
  }
  if (std::string why = untrustedReason(root_, st); !why.empty()) {
    disable(DiskMode::kDisabled,
            fmt::format("refusing cache directory: {} (a cached cubin is code that will run; "
                        "fix with chmod 700 / chown, or set KILN_CACHE_DIR)",
                        why));
    return;
  }
  if (::stat(versionDir_.c_str(), &st) != 0) {
    if (::mkdir(versionDir_.c_str(), 0700) != 0 && errno != EEXIST) {
      disable(DiskMode::kDisabled,
              fmt::format("cannot create {}: {}", versionDir_.string(), errnoText(errno)));
      return;
    }
    if (::stat(versionDir_.c_str(), &st) != 0) {
      disable(DiskMode::kDisabled,
              fmt::format("cannot stat {}: {}", versionDir_.string(), errnoText(errno)));
      return;
    }
  }
  if (std::string why = untrustedReason(versionDir_, st); !why.empty()) {
    disable(
        DiskMode::kDisabled,
        fmt::format("refusing cache directory: {} (a cached cubin is code that will run)", why));
    return;
  }
  // Shard dirs are created by us 0700; one that is not is refused like the root.
  for (const std::string& name : listDir(versionDir_)) {
    if (!isHex2(name)) continue;
    fs::path shard = versionDir_ / name;
    if (::stat(shard.c_str(), &st) == 0) {
      if (std::string why = untrustedReason(shard, st); !why.empty()) {
        disable(DiskMode::kDisabled, fmt::format("refusing cache directory: {}", why));
        return;
      }
    }
  }
  // Permission bits do not say whether we can write (read-only mounts, and root ignores them), so
  // try it.
  fs::path probe = versionDir_ / fmt::format("{}probe-{}", kTempPrefix, ::getpid());
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    disable(DiskMode::kReadOnly, fmt::format("cache directory {} is not writable ({})",
                                             versionDir_.string(), errnoText(errno)));
    bytes_ = usage().bytes;
    return;
  }
  ::close(fd);
  ::unlink(probe.c_str());
  mode_ = DiskMode::kReadWrite;
  cleanStaleFiles();
  bytes_ = usage().bytes;
}

void DiskStore::cleanStaleFiles() {
  const auto now = std::chrono::system_clock::now();
  auto cleanIn = [&](const fs::path& dir) {
    for (const std::string& name : listDir(dir)) {
      const fs::path path = dir / name;
      if (name.rfind(kTempPrefix, 0) == 0) {
        struct stat st;
        if (::lstat(path.c_str(), &st) != 0) continue;
        const auto mtime =
            std::chrono::system_clock::time_point(std::chrono::seconds(st.st_mtim.tv_sec));
        const pid_t pid = tempWriterPid(name);
        const bool writerDead = pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
        if (writerDead || now - mtime > options_.staleTempAge) {
          if (::unlink(path.c_str()) == 0) ++staleFilesRemoved_;
        }
      } else if (endsWith(name, kLockSuffix)) {
        // A lock file nobody holds was left by a crashed holder (holders unlink their own). Taking
        // it through KeyLock and releasing unlinks it safely.
        int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) continue;
        const bool unheld = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
        ::close(fd);
        if (unheld) {
          KeyLock lock(path);
          if (lock.acquire(std::chrono::milliseconds(0)) == 0) {
            lock.release();
            ++staleFilesRemoved_;
          }
        }
      }
    }
  };
  cleanIn(versionDir_);
  for (const std::string& name : listDir(versionDir_))
    if (isHex2(name)) cleanIn(versionDir_ / name);
}

fs::path DiskStore::entryPath(const Digest& digest) const {
  const std::string hex = digest.hex();
  return versionDir_ / hex.substr(0, 2) / (hex + std::string(kEntrySuffix));
}

std::optional<std::string> DiskStore::get(const CacheKey& key) {
  return read(key, /*haveLock=*/false, /*countMiss=*/true);
}

std::optional<std::string> DiskStore::read(const CacheKey& key, bool haveLock, bool countMiss) {
  if (mode_ == DiskMode::kDisabled) {
    if (countMiss) ++misses_;
    return std::nullopt;
  }
  const std::string keyText = key.keyText();
  const Digest digest = hash128(keyText);
  const fs::path path = entryPath(digest);
  struct stat st {};
  int fd = openEntry(path, &st);
  if (fd < 0) {
    if (countMiss) ++misses_;
    return std::nullopt;
  }
  std::string file;
  EntryStatus status = EntryStatus::kIoError;
  std::string payload;
  if (readAll(fd, file))
    status = decodeEntry(file, digest, &keyText, &payload, nullptr);
  if (status == EntryStatus::kOk) {
    // Note [LRU by mtime]: a hit bumps mtime (atime is unreliable under noatime/relatime).
    if (mode_ == DiskMode::kReadWrite) ::futimens(fd, nullptr);
    ::close(fd);
    ++hits_;
    return payload;
  }
  ::close(fd);
  if (countMiss) ++misses_;
  if (status != EntryStatus::kIoError)
    dropCorrupt(path, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), status,
                haveLock);
  return std::nullopt;
}

void DiskStore::dropCorrupt(const fs::path& path, uint64_t dev, uint64_t ino, EntryStatus status,
                            bool haveLock) {
  ++corruptDropped_;
  const bool writable = mode_ == DiskMode::kReadWrite;
  logOnce(LogLevel::kWarn, fmt::format("kiln.cache.corrupt:{}", path.string()),
          fmt::format("kiln cache: dropping corrupt entry {} ({}){}", path.string(),
                      toString(status), writable ? "; it will be rebuilt" : ""));
  if (!writable) return;
  // Delete only the file we read: a writer may have just renamed a good entry over it. Under the
  // key's lock no writer can publish in between.
  std::optional<KeyLock> lock;
  if (!haveLock) {
    lock.emplace(fs::path(path).replace_extension(kLockSuffix));
    if (lock->acquire(std::chrono::seconds(1)) != 0) return;
  }
  struct stat now;
  if (::stat(path.c_str(), &now) == 0 && static_cast<uint64_t>(now.st_dev) == dev &&
      static_cast<uint64_t>(now.st_ino) == ino) {
    ::unlink(path.c_str());
  }
}

bool DiskStore::put(const CacheKey& key, std::string_view payload) {
  if (mode_ != DiskMode::kReadWrite) return false;
  const Digest digest = key.digest();
  KeyLock lock(entryPath(digest).replace_extension(kLockSuffix));
  // Without the lock (timeout) publishing is still atomic; only the corrupt-entry cleanup of a
  // concurrent reader could then race with us, costing a rebuild, never a wrong entry.
  const fs::path shard = entryPath(digest).parent_path();
  if (makeDirs(shard) == 0) (void)lock.acquire(options_.lockTimeout);
  return publishLocked(key, digest, payload);
}

bool DiskStore::publishLocked(const CacheKey& key, const Digest& digest, std::string_view payload) {
  if (mode_ != DiskMode::kReadWrite) return false;
  return publishFileLocked(digest, encodeEntry(key, payload));
}

// Publishes `data`, a complete entry file, as the entry for `digest` (temp file, fsync, rename).
bool DiskStore::publishFileLocked(const Digest& digest, std::string_view data) {
  if (mode_ != DiskMode::kReadWrite) return false;
  const fs::path path = entryPath(digest);
  const fs::path shard = path.parent_path();
  auto fail = [&](const std::string& what, int err) {
    ++writeFailures_;
    warnOnce("write", fmt::format("could not write {}: {}: {} (entry kept in memory only; "
                                  "further write failures are not reported)",
                                  path.string(), what, errnoText(err)));
    return false;
  };
  if (data.size() > kMaxEntryFileBytes)  // Note [Entry files are untrusted]: readers skip it
    return fail(
        fmt::format("entry of {} bytes is over the {} byte limit", data.size(), kMaxEntryFileBytes),
        EFBIG);
  if (int err = makeDirs(shard)) return fail("creating shard directory", err);
  const fs::path tmp =
      shard / fmt::format("{}{}-{}-{}", kTempPrefix, digest.hex(), ::getpid(), tempCounter_++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail("creating temp file", errno);
  int err = writeAll(fd, data);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return fail("writing entry", err);
  }
  // Make the rename itself durable; failure here loses at most this entry after a crash.
  if (int dfd = ::open(shard.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  ++writes_;
  if (!versionRecorded_.exchange(true)) recordVersion();
  if ((bytes_ += data.size()) > options_.maxBytes) evictExcept(digest);
  return true;
}

std::optional<std::string> DiskStore::readEntryFile(const Digest& digest,
                                                    EntryStatus* status) const {
  EntryStatus got = EntryStatus::kMissing;
  std::string file;
  struct stat st {};
  if (mode_ != DiskMode::kDisabled) got = readEntryAt(entryPath(digest), digest, file, st);
  if (status) *status = got;
  if (got != EntryStatus::kOk) return std::nullopt;
  return file;
}

PutEntryResult DiskStore::putEntryFile(const Digest& digest, std::string_view file) {
  if (decodeEntry(file, digest, nullptr, nullptr, nullptr) != EntryStatus::kOk)
    return PutEntryResult::kInvalid;
  if (mode_ != DiskMode::kReadWrite) return PutEntryResult::kNotWritten;
  const fs::path path = entryPath(digest);
  // As in put(): without the lock (timeout) the publish is still atomic.
  KeyLock lock(fs::path(path).replace_extension(kLockSuffix));
  if (makeDirs(path.parent_path()) == 0) (void)lock.acquire(options_.lockTimeout);
  if (readEntryFile(digest)) return PutEntryResult::kAlreadyPresent;
  return publishFileLocked(digest, file) ? PutEntryResult::kWritten : PutEntryResult::kNotWritten;
}

// Note [Cache version file]. Best effort: a failure costs only the record.
void DiskStore::recordVersion() {
  if (recordedVersion() == version()) return;
  const fs::path path = versionDir_ / kVersionFile;
  const fs::path tmp = versionDir_ / fmt::format("{}{}-{}-{}", kTempPrefix, kVersionFile,
                                                 ::getpid(), tempCounter_++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return;
  bool ok = writeAll(fd, fmt::format("{}\n", version())) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) ::unlink(tmp.c_str());
}

std::optional<std::string> DiskStore::recordedVersion() const {
  if (mode_ == DiskMode::kDisabled) return std::nullopt;
  struct stat st {};
  int fd = openEntry(versionDir_ / kVersionFile, &st);  // untrusted like an entry
  if (fd < 0) return std::nullopt;
  std::string text(256, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  ::close(fd);
  if (n <= 0) return std::nullopt;
  text.resize(static_cast<size_t>(n));
  text.resize(std::min(text.find('\n'), text.size()));
  // Shown to the user as is: one line of printable ASCII.
  for (char& c : text)
    if (c < 0x20 || c == 0x7f) c = '?';
  return text;
}

// Note [LRU by mtime]
// Eviction removes entries by oldest mtime (hits bump it) until the total is at most 90% of the
// cap, so that the O(entries) scan runs once per ~10% of the cap written, not on every put. The
// entry just written is never a candidate. Concurrent evictors may over-evict slightly; an evicted
// entry is only a future miss, and a reader that already opened it still reads it whole.
void DiskStore::evictExcept(const Digest& keep) {
  std::lock_guard<std::mutex> guard(evictMutex_);
  struct Candidate {
    fs::path path;
    uint64_t bytes;
    struct timespec mtime;
  };
  std::vector<Candidate> candidates;
  uint64_t total = 0;
  const std::string keepName = keep.hex() + std::string(kEntrySuffix);
  for (const std::string& shard : listDir(versionDir_)) {
    if (!isHex2(shard)) continue;
    for (const std::string& name : listDir(versionDir_ / shard)) {
      if (!endsWith(name, kEntrySuffix)) continue;
      fs::path path = versionDir_ / shard / name;
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      total += static_cast<uint64_t>(st.st_size);
      if (name != keepName)
        candidates.push_back({std::move(path), static_cast<uint64_t>(st.st_size), st.st_mtim});
    }
  }
  if (total > options_.maxBytes) {
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
      if (a.mtime.tv_sec != b.mtime.tv_sec) return a.mtime.tv_sec < b.mtime.tv_sec;
      return a.mtime.tv_nsec < b.mtime.tv_nsec;
    });
    const uint64_t target = options_.maxBytes / 10 * 9;
    for (const Candidate& c : candidates) {
      if (total <= target) break;
      if (::unlink(c.path.c_str()) == 0) {
        total -= c.bytes;
        ++evictions_;
      }
    }
  }
  bytes_ = total;
}

std::string DiskStore::getOrCreate(const CacheKey& key,
                                   const std::function<std::string()>& producer, bool* produced) {
  if (produced) *produced = false;
  if (auto hit = read(key, /*haveLock=*/false, /*countMiss=*/true)) return std::move(*hit);
  if (mode_ != DiskMode::kReadWrite) {
    if (produced) *produced = true;
    return producer();
  }
  const Digest digest = key.digest();
  const fs::path path = entryPath(digest);
  KeyLock lock(fs::path(path).replace_extension(kLockSuffix));
  int err = makeDirs(path.parent_path());
  if (err == 0) err = lock.acquire(options_.lockTimeout);
  const bool locked = err == 0;
  if (err == ETIMEDOUT)
    warnOnce("lock", fmt::format("could not lock {} within {} ms (another process held it); "
                                 "compiling without it (it may compile the same kernel)",
                                 path.string(), options_.lockTimeout.count()));
  else if (err != 0)
    warnOnce("lock", fmt::format("could not lock {}: {}; compiling without it (another process "
                                 "may compile the same kernel)",
                                 path.string(), errnoText(err)));
  // Another process may have published while we waited.
  if (auto hit = read(key, /*haveLock=*/locked, /*countMiss=*/false)) return std::move(*hit);
  std::string bytes = producer();
  if (produced) *produced = true;
  publishLocked(key, digest, bytes);
  return bytes;
}

std::vector<DiskEntryInfo> DiskStore::list() const {
  std::vector<DiskEntryInfo> out;
  if (mode_ == DiskMode::kDisabled) return out;
  for (const std::string& shard : listDir(versionDir_)) {
    if (!isHex2(shard)) continue;
    for (const std::string& name : listDir(versionDir_ / shard)) {
      if (!endsWith(name, kEntrySuffix)) continue;
      DiskEntryInfo info;
      info.path = versionDir_ / shard / name;
      info.digest = Digest::fromHex(std::string_view(name).substr(0, name.size() - 5));
      struct stat st {};
      int fd = openEntry(info.path, &st);
      if (fd < 0) {
        // Not a regular file of a plausible size (a FIFO, a directory, a huge sparse file): listed
        // with what lstat says, so that verify() reports it, and never read.
        if (::lstat(info.path.c_str(), &st) != 0) continue;
        info.fileBytes = static_cast<uint64_t>(st.st_size);
        info.lastUsedUnixSeconds = st.st_mtim.tv_sec;
        out.push_back(std::move(info));
        continue;
      }
      info.fileBytes = static_cast<uint64_t>(st.st_size);
      info.lastUsedUnixSeconds = st.st_mtim.tv_sec;
      std::string header(kHeaderBytes, '\0');
      if (::pread(fd, header.data(), kHeaderBytes, 0) == static_cast<ssize_t>(kHeaderBytes) &&
          header.compare(0, sizeof kMagic, kMagic, sizeof kMagic) == 0) {
        const uint64_t keyBytes = getLE(header, 12, 4);
        info.payloadBytes = getLE(header, 32, 8);
        if (keyBytes <= kMaxKeyTextBytes) {
          std::string text(keyBytes, '\0');
          if (::pread(fd, text.data(), keyBytes, kHeaderBytes) == static_cast<ssize_t>(keyBytes)) {
            info.kind = keyTextField(text, "kind");
            info.arch = keyTextField(text, "arch");
          }
        }
      }
      ::close(fd);
      out.push_back(std::move(info));
    }
  }
  return out;
}

DiskUsage DiskStore::usage() const {
  DiskUsage u;
  if (mode_ == DiskMode::kDisabled) return u;
  for (const std::string& shard : listDir(versionDir_)) {
    if (!isHex2(shard)) continue;
    for (const std::string& name : listDir(versionDir_ / shard)) {
      if (name.rfind(kTempPrefix, 0) == 0) {
        ++u.tempFiles;
        continue;
      }
      if (!endsWith(name, kEntrySuffix)) continue;
      struct stat st;
      if (::lstat((versionDir_ / shard / name).c_str(), &st) != 0) continue;
      ++u.entries;
      u.bytes += static_cast<uint64_t>(st.st_size);
    }
  }
  return u;
}

VerifyResult DiskStore::verify() {
  VerifyResult result;
  for (const DiskEntryInfo& info : list()) {
    EntryStatus status = EntryStatus::kIoError;
    struct stat st {};
    if (!info.digest) {
      status = EntryStatus::kKeyMismatch;
      ::lstat(info.path.c_str(), &st);
    } else {
      std::string file;
      status = readEntryAt(info.path, *info.digest, file, st);
      if (status == EntryStatus::kMissing) continue;  // evicted or dropped meanwhile
    }
    if (status == EntryStatus::kOk) {
      ++result.ok;
      continue;
    }
    result.bad.emplace_back(info.path, status);
    if (status != EntryStatus::kIoError)
      dropCorrupt(info.path, static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                  status, /*haveLock=*/!info.digest);
  }
  return result;
}

uint64_t DiskStore::clear() {
  if (mode_ != DiskMode::kReadWrite) return 0;
  uint64_t removed = 0;
  for (const std::string& shard : listDir(versionDir_)) {
    if (!isHex2(shard)) continue;
    for (const std::string& name : listDir(versionDir_ / shard)) {
      const fs::path path = versionDir_ / shard / name;
      if (endsWith(name, kEntrySuffix)) {
        if (::unlink(path.c_str()) == 0) ++removed;
      }
    }
  }
  cleanStaleFiles();
  bytes_ = 0;
  return removed;
}

DiskStoreStats DiskStore::stats() const {
  DiskStoreStats s;
  s.hits = hits_;
  s.misses = misses_;
  s.corruptDropped = corruptDropped_;
  s.writes = writes_;
  s.writeFailures = writeFailures_;
  s.evictions = evictions_;
  s.staleFilesRemoved = staleFilesRemoved_;
  s.bytes = bytes_;
  return s;
}

}  // namespace kiln::cache

#include "cache/pack.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "cache/file_io.h"
#include "kiln/version.h"

namespace kiln::cache {
namespace fs = std::filesystem;
namespace {
using detail::getLE;
using detail::putU32;
using detail::putU64;
using detail::writeAll;

constexpr char kPackMagic[8] = {'K', 'I', 'L', 'N', 'P', 'A', 'C', 'K'};
constexpr uint64_t kVersionsBytes = 4 + 4 + 4;  // pack format, entry format, version text size
constexpr uint64_t kRecordHeaderBytes = 8 + 8 + 8;
constexpr uint64_t kChecksumBytes = 16;
constexpr uint64_t kTrailerBytes = 8 + kChecksumBytes;
constexpr uint64_t kMaxVersionTextBytes = 4096;

std::string alreadyExists(const fs::path& file) {
  return fmt::format("{} already exists (use --force to replace it)", file.string());
}

// One line of printable ASCII: the pack's version text is shown to the user.
std::string printable(std::string text) {
  for (char& c : text)
    if (c < 0x20 || c == 0x7f) c = '?';
  return text;
}

// rename() that refuses to replace an existing target (errno EEXIST). Filesystems without
// RENAME_NOREPLACE get link(), which does not replace either.
bool renameNoReplace(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  if (errno != EINVAL || ::link(from.c_str(), to.c_str()) != 0) return false;
  ::unlink(from.c_str());
  return true;
}

// A pack being written: a temp file beside the target, renamed onto it by commit(). Until then the
// target is untouched; the destructor removes the temp file of an unfinished pack.
class PackWriter {
 public:
  explicit PackWriter(fs::path file) : file_(std::move(file)) {
    fs::path dir = file_.parent_path();
    if (dir.empty()) dir = ".";
    dir_ = dir;
    tmp_ = dir / fmt::format(".{}.tmp-{}-{}", file_.filename().string(), ::getpid(),
                             std::chrono::steady_clock::now().time_since_epoch().count());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0) fail(fmt::format("cannot create a temp file in {}", dir_.string()), errno);
  }
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;
  ~PackWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }

  // Appends bytes covered by the checksum.
  void write(std::string_view bytes) {
    hasher_.update(bytes);
    append(bytes);
  }

  // Appends the checksum, makes the file durable and renames it onto the target; with
  // !overwrite, an existing target is refused, never replaced.
  void commit(bool overwrite) {
    const Digest sum = hasher_.finish();
    std::string trailer;
    putU64(trailer, sum.hi);
    putU64(trailer, sum.lo);
    append(trailer);
    if (::fsync(fd_) != 0) fail("fsync", errno);
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("close", errno);
    if (overwrite) {
      if (::rename(tmp_.c_str(), file_.c_str()) != 0) fail("rename", errno);
    } else if (!renameNoReplace(tmp_, file_)) {
      if (errno == EEXIST) throw PackError(alreadyExists(file_));
      fail("rename", errno);
    }
    committed_ = true;
    // Make the rename durable too; failing here risks only this pack after a crash.
    if (int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

  uint64_t bytes() const { return bytes_; }

 private:
  void append(std::string_view bytes) {
    if (int err = writeAll(fd_, bytes)) fail("write", err);
    bytes_ += bytes.size();
  }

  [[noreturn]] void fail(std::string_view what, int err) const {
    throw PackError(fmt::format("cannot write {}: {}: {} ({} was not changed)", file_.string(),
                                what, std::strerror(err), file_.string()));
  }

  fs::path file_;
  fs::path dir_;
  fs::path tmp_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t bytes_ = 0;
  Hasher128 hasher_;
};

// A pack being read from the start, hashing what it reads.
class PackReader {
 public:
  explicit PackReader(const fs::path& file) : file_(file) {
    // O_NONBLOCK: a FIFO given as the pack must not hang the open.
    fd_ = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0)
      throw PackError(fmt::format("cannot open {}: {}", file.string(), std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw PackError(
          fmt::format("{}: not a regular file, so not a kiln cache pack", file.string()));
    }
    size_ = static_cast<uint64_t>(st.st_size);
  }
  PackReader(const PackReader&) = delete;
  PackReader& operator=(const PackReader&) = delete;
  ~PackReader() { ::close(fd_); }

  uint64_t remaining() const { return size_ - offset_; }

  // The next n <= remaining() bytes, added to the checksum when `hashed`.
  std::string take(uint64_t n, bool hashed = true) {
    std::string out(n, '\0');
    for (uint64_t done = 0; done < n;) {
      const ssize_t got =
          ::pread(fd_, out.data() + done, n - done, static_cast<off_t>(offset_ + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0)
        throw PackError(fmt::format("cannot read {}: {}", file_.string(),
                                    got < 0 ? std::strerror(errno) : "it shrank while being read"));
      done += static_cast<uint64_t>(got);
    }
    offset_ += n;
    if (hashed) hasher_.update(out);
    return out;
  }

  Digest checksum() const { return hasher_.finish(); }

 private:
  fs::path file_;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t offset_ = 0;
  Hasher128 hasher_;
};

using EntryVisitor = std::function<void(const Digest&, std::string_view)>;

// Note [Cache packs]: reads `file` from start to end, passing each entry to `onEntry` when given,
// and returns the exporter's kiln version. Throws PackError for anything but a complete, intact
// pack of this format. Past the two format versions, a checksum mismatch is reported before any
// fault of the layout (which it usually explains).
std::string walkPack(const fs::path& file, const EntryVisitor& onEntry) {
  PackReader in(file);
  const std::string name = file.string();
  const std::string_view magic(kPackMagic, sizeof kPackMagic);
  const std::string start = in.take(std::min<uint64_t>(in.remaining(), magic.size()));
  if (start != magic.substr(0, start.size()) || start.empty())
    throw PackError(
        fmt::format("{}: not a kiln cache pack (it does not start with \"KILNPACK\")", name));
  if (start.size() < magic.size() || in.remaining() < kVersionsBytes)
    throw PackError(fmt::format("{}: truncated kiln cache pack ({} bytes)", name,
                                start.size() + in.remaining()));
  const std::string versions = in.take(kVersionsBytes);
  if (const uint64_t v = getLE(versions, 0, 4); v != kPackFormatVersion)
    throw PackError(fmt::format(
        "{}: pack format version {}, but this kiln reads version {} (export the cache again with "
        "this kiln's kiln-cache)",
        name, v, kPackFormatVersion));
  if (const uint64_t v = getLE(versions, 4, 4); v != kFormatVersion)
    throw PackError(fmt::format(
        "{}: holds cache entries of format version {}, but this kiln's cache uses version {}", name,
        v, kFormatVersion));

  std::string fault;  // the first fault of the layout; after it the rest is only checksummed
  std::string kilnVersion;
  uint64_t entries = 0;
  // Whether n more bytes fit before the trailer.
  auto fits = [&](uint64_t n) {
    return in.remaining() >= kTrailerBytes && n <= in.remaining() - kTrailerBytes;
  };
  const uint64_t versionBytes = getLE(versions, 8, 4);
  if (versionBytes > kMaxVersionTextBytes || !fits(versionBytes))
    fault = fmt::format("its header claims a {} byte version text", versionBytes);
  else
    kilnVersion = in.take(versionBytes);
  while (fault.empty() && in.remaining() > kTrailerBytes) {
    if (!fits(kRecordHeaderBytes)) {
      fault = fmt::format("entry {} is cut short", entries + 1);
      break;
    }
    const std::string head = in.take(kRecordHeaderBytes);
    const Digest digest{getLE(head, 0, 8), getLE(head, 8, 8)};
    const uint64_t size = getLE(head, 16, 8);
    if (size > kMaxEntryFileBytes) {
      fault = fmt::format("entry {} claims {} bytes, over the {} byte limit of an entry",
                          entries + 1, size, kMaxEntryFileBytes);
    } else if (!fits(size)) {
      fault = fmt::format("entry {} ({} bytes) runs past the end of the file", entries + 1, size);
    } else {
      const std::string entry = in.take(size);
      ++entries;
      if (onEntry) onEntry(digest, entry);
    }
  }
  if (fault.empty()) {
    if (in.remaining() < kTrailerBytes) {
      fault = "it ends before its trailer";
    } else if (const uint64_t count = getLE(in.take(8), 0, 8); count != entries) {
      fault = fmt::format("its trailer counts {} entries but it holds {}", count, entries);
    }
  }
  while (in.remaining() > kChecksumBytes)
    in.take(std::min<uint64_t>(in.remaining() - kChecksumBytes, uint64_t{1} << 20));
  const Digest computed = in.checksum();
  bool intact = false;
  if (in.remaining() == kChecksumBytes) {
    const std::string stored = in.take(kChecksumBytes, /*hashed=*/false);
    intact = getLE(stored, 0, 8) == computed.hi && getLE(stored, 8, 8) == computed.lo;
  }
  if (!intact)
    throw PackError(fmt::format(
        "{}: damaged kiln cache pack: checksum mismatch{}{} (the file was truncated or changed "
        "after export)",
        name, fault.empty() ? "" : "; ", fault));
  if (!fault.empty())
    throw PackError(fmt::format("{}: malformed kiln cache pack: {}", name, fault));
  return printable(std::move(kilnVersion));
}

}  // namespace

PackExportSummary exportPack(const DiskStore& store, const fs::path& file, bool overwrite) {
  if (store.mode() == DiskMode::kDisabled)
    throw PackError(fmt::format("cannot export the cache at {}: {}",
                                store.root().empty() ? "(none)" : store.root().string(),
                                store.modeReason()));
  struct stat st {};
  if (!overwrite && ::lstat(file.c_str(), &st) == 0) throw PackError(alreadyExists(file));
  PackWriter out(file);
  std::string header(kPackMagic, sizeof kPackMagic);
  putU32(header, kPackFormatVersion);
  putU32(header, kFormatVersion);
  const std::string_view kilnVersion = version();
  putU32(header, static_cast<uint32_t>(kilnVersion.size()));
  header += kilnVersion;
  out.write(header);

  PackExportSummary summary;
  for (const DiskEntryInfo& info : store.list()) {
    EntryStatus status = EntryStatus::kKeyMismatch;  // a file name that is not a digest
    std::optional<std::string> entry;
    if (info.digest) entry = store.readEntryFile(*info.digest, &status);
    if (!entry) {
      if (status != EntryStatus::kMissing)  // else evicted meanwhile
        summary.skipped.emplace_back(info.path, status);
      continue;
    }
    std::string head;
    putU64(head, info.digest->hi);
    putU64(head, info.digest->lo);
    putU64(head, entry->size());
    out.write(head);
    out.write(*entry);
    ++summary.entries;
  }
  std::string count;
  putU64(count, summary.entries);
  out.write(count);
  out.commit(overwrite);
  summary.bytes = out.bytes();
  return summary;
}

std::string checkPack(const fs::path& file) {
  return walkPack(file, nullptr);
}

PackImportSummary importPack(DiskStore& store, const fs::path& file) {
  if (store.mode() != DiskMode::kReadWrite)
    throw PackError(fmt::format(
        "cannot import into {}: {}",
        store.root().empty() ? "(no cache directory)" : store.root().string(), store.modeReason()));
  PackImportSummary summary;
  summary.packKilnVersion = checkPack(file);
  try {
    walkPack(file, [&](const Digest& digest, std::string_view entry) {
      switch (store.putEntryFile(digest, entry)) {
        case PutEntryResult::kWritten:
          ++summary.imported;
          break;
        case PutEntryResult::kAlreadyPresent:
          ++summary.alreadyPresent;
          break;
        case PutEntryResult::kInvalid:
          summary.rejected.emplace_back(digest,
                                        decodeEntry(entry, digest, nullptr, nullptr, nullptr));
          break;
        case PutEntryResult::kNotWritten:
          ++summary.writeFailures;
          break;
      }
    });
  } catch (const PackError& e) {
    throw PackError(fmt::format(
        "{} (it changed while being imported; {} entries, each verified, went in before that)",
        e.what(), summary.imported));
  }
  return summary;
}

}  // namespace kiln::cache

#include "cache/disk_store.h"

#include <atomic>
#include <csignal>
#include <map>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "cache_test_util.h"

namespace kiln::cache {
namespace {
namespace fs = std::filesystem;
using testing::LogCapture;
using testing::readFile;
using testing::runInChild;
using testing::TempDir;
using testing::testKey;
using testing::writeFile;

DiskStoreOptions at(const fs::path& root) {
  DiskStoreOptions o;
  o.root = root;
  return o;
}

TEST(DiskStoreTest, RoundTripAcrossInstances) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  const CacheKey key = testKey("kernel A");
  std::string payload(
      "\x7f"
      "ELF\0binary\xff",
      12);
  {
    DiskStore store(at(root));
    ASSERT_EQ(store.mode(), DiskMode::kReadWrite) << store.modeReason();
    EXPECT_FALSE(store.get(key).has_value());
    EXPECT_TRUE(store.put(key, payload));
    const std::string hex = key.digest().hex();
    EXPECT_EQ(store.entryPath(key.digest()), root / "v1" / hex.substr(0, 2) / (hex + ".kbin"));
    EXPECT_TRUE(fs::exists(store.entryPath(key.digest())));
  }
  DiskStore fresh(at(root));
  auto got = fresh.get(key);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(*got, payload);
  EXPECT_EQ(fresh.stats().hits, 1u);
  EXPECT_EQ(fresh.stats().corruptDropped, 0u);
  // No temp or lock files are left behind.
  EXPECT_EQ(fresh.usage().tempFiles, 0u);
  for (const auto& e : fs::recursive_directory_iterator(root))
    EXPECT_TRUE(e.is_directory() || e.path().extension() == ".kbin" ||
                e.path().filename() == "VERSION")  // Note [Cache version file]
        << e.path();
}

TEST(DiskStoreTest, MissingRootIsCreated0700) {
  TempDir tmp;
  const fs::path root = tmp.path() / "a" / "b" / "kiln";
  DiskStore store(at(root));
  ASSERT_EQ(store.mode(), DiskMode::kReadWrite) << store.modeReason();
  EXPECT_EQ(testing::modeOf(root), 0700u);
  EXPECT_EQ(testing::modeOf(tmp.path() / "a"), 0700u);
  EXPECT_EQ(testing::modeOf(root / "v1"), 0700u);
  ASSERT_TRUE(store.put(testKey("k"), "x"));
  EXPECT_EQ(testing::modeOf(store.entryPath(testKey("k").digest()).parent_path()), 0700u);
  EXPECT_EQ(testing::modeOf(store.entryPath(testKey("k").digest())), 0600u);
}

TEST(DiskStoreTest, RootResolution) {
  // Explicit dir first; env handling is covered without touching the real HOME.
  EXPECT_EQ(*resolveCacheRoot(fs::path("/x/y")), fs::path("/x/y"));
  const char* saved[3] = {std::getenv("KILN_CACHE_DIR"), std::getenv("XDG_CACHE_HOME"),
                          std::getenv("HOME")};
  std::string keep[3];
  for (int i = 0; i < 3; ++i) keep[i] = saved[i] ? saved[i] : "";
  ::setenv("KILN_CACHE_DIR", "/kcd", 1);
  ::setenv("XDG_CACHE_HOME", "/xdg", 1);
  ::setenv("HOME", "/home/u", 1);
  EXPECT_EQ(*resolveCacheRoot(std::nullopt), fs::path("/kcd"));
  ::unsetenv("KILN_CACHE_DIR");
  EXPECT_EQ(*resolveCacheRoot(std::nullopt), fs::path("/xdg/kiln"));
  ::setenv("XDG_CACHE_HOME", "relative", 1);  // ignored, per the XDG spec
  EXPECT_EQ(*resolveCacheRoot(std::nullopt), fs::path("/home/u/.cache/kiln"));
  const char* names[3] = {"KILN_CACHE_DIR", "XDG_CACHE_HOME", "HOME"};
  for (int i = 0; i < 3; ++i) {
    if (saved[i]) {
      ::setenv(names[i], keep[i].c_str(), 1);
    } else {
      ::unsetenv(names[i]);
    }
  }
}

// Corruption cases: each is detected, reported once, deleted, treated as a miss and rebuilt.
struct CorruptCase {
  const char* name;
  std::function<void(std::string&)> damage;
  EntryStatus expected;
};

class DiskStoreCorruptionTest : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(DiskStoreCorruptionTest, DetectedDeletedReportedOnceAndRebuilt) {
  const CorruptCase& c = GetParam();
  TempDir tmp;
  const CacheKey key = testKey("kernel for corruption");
  const std::string payload(300, 'p');
  const fs::path root = tmp.path() / "cache";
  fs::path path;
  {
    DiskStore store(at(root));
    ASSERT_TRUE(store.put(key, payload));
    path = store.entryPath(key.digest());
  }
  std::string file = readFile(path);
  // decodeEntry accepts the intact file and names the damage precisely.
  ASSERT_EQ(decodeEntry(file, key.digest(), nullptr, nullptr, nullptr), EntryStatus::kOk);
  c.damage(file);
  EXPECT_EQ(decodeEntry(file, key.digest(), nullptr, nullptr, nullptr), c.expected);
  writeFile(path, file);

  LogCapture logs;
  DiskStore store(at(root));
  EXPECT_FALSE(store.get(key).has_value());
  EXPECT_FALSE(fs::exists(path)) << "corrupt entry must be deleted";
  EXPECT_EQ(store.stats().corruptDropped, 1u);
  EXPECT_EQ(logs.count(std::string(toString(c.expected))), 1u);
  // Rebuilt on the next getOrCreate, and then served.
  bool produced = false;
  EXPECT_EQ(store.getOrCreate(
                key, [&] { return payload; }, &produced),
            payload);
  EXPECT_TRUE(produced);
  EXPECT_EQ(*DiskStore(at(root)).get(key), payload);
  // Reported once per entry even if it goes bad again.
  writeFile(path, file);
  EXPECT_FALSE(store.get(key).has_value());
  EXPECT_EQ(logs.count(std::string(toString(c.expected))), 1u);
  EXPECT_EQ(store.stats().corruptDropped, 2u);
}

INSTANTIATE_TEST_SUITE_P(
    Faults, DiskStoreCorruptionTest,
    ::testing::Values(
        CorruptCase{"Truncated", [](std::string& f) { f.resize(f.size() / 2); },
                    EntryStatus::kTruncated},
        CorruptCase{"TruncatedHeader", [](std::string& f) { f.resize(20); },
                    EntryStatus::kTruncated},
        CorruptCase{"Empty", [](std::string& f) { f.clear(); }, EntryStatus::kTruncated},
        CorruptCase{"FlippedPayloadByte", [](std::string& f) { f[f.size() - 20] ^= 0x10; },
                    EntryStatus::kBadChecksum},
        CorruptCase{"FlippedKeyTextByte", [](std::string& f) { f[45] ^= 0x01; },
                    EntryStatus::kBadChecksum},
        CorruptCase{"WrongMagic", [](std::string& f) { f[0] = 'X'; }, EntryStatus::kBadMagic},
        CorruptCase{"WrongVersion", [](std::string& f) { f[8] = 2; }, EntryStatus::kBadVersion},
        CorruptCase{"TrailingGarbage", [](std::string& f) { f += "junk"; },
                    EntryStatus::kSizeMismatch}),
    [](const ::testing::TestParamInfo<CorruptCase>& info) { return info.param.name; });

TEST(DiskStoreTest, EntryUnderAnotherKeysNameIsAKeyMismatch) {
  TempDir tmp;
  DiskStore store(at(tmp.path()));
  const CacheKey a = testKey("A"), b = testKey("B");
  ASSERT_TRUE(store.put(a, "payload of A"));
  fs::create_directories(store.entryPath(b.digest()).parent_path());
  fs::copy_file(store.entryPath(a.digest()), store.entryPath(b.digest()));
  LogCapture logs;
  EXPECT_FALSE(store.get(b).has_value());
  EXPECT_EQ(logs.count("key mismatch"), 1u);
  EXPECT_FALSE(fs::exists(store.entryPath(b.digest())));
  EXPECT_EQ(*store.get(a), "payload of A");  // the valid entry is untouched
}

TEST(DiskStoreTest, EntryForAnotherArchIsAMissNotCorruption) {
  TempDir tmp;
  DiskStore store(at(tmp.path()));
  const CacheKey sm80 = testKey("same source", "sm_80");
  const CacheKey sm90 = testKey("same source", "sm_90");
  ASSERT_TRUE(store.put(sm80, "cubin for sm_80"));
  LogCapture logs;
  EXPECT_FALSE(store.get(sm90).has_value());
  EXPECT_EQ(store.stats().corruptDropped, 0u);
  EXPECT_TRUE(logs.warnings().empty());
  EXPECT_EQ(*store.get(sm80), "cubin for sm_80");
}

TEST(DiskStoreTest, KilledWriterTempFilesAreCleanedOnOpen) {
  TempDir tmp;
  const CacheKey key = testKey("killed writer");
  fs::path shard;
  std::string hex = key.digest().hex();
  {
    DiskStore store(at(tmp.path()));
    ASSERT_TRUE(store.put(testKey("survivor"), "valid"));
    shard = store.entryPath(key.digest()).parent_path();
  }
  fs::create_directories(shard);
  // A writer that dies (SIGKILL) after writing half an entry to its temp file.
  pid_t writer = ::fork();
  if (writer == 0) {
    writeFile(shard / fmt::format(".tmp-{}-{}-0", hex, ::getpid()), encodeEntry(key, "partial"));
    ::kill(::getpid(), SIGKILL);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(writer, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  const fs::path deadTemp = shard / fmt::format(".tmp-{}-{}-0", hex, writer);
  ASSERT_TRUE(fs::exists(deadTemp));
  // An old temp whose "writer" (us) is alive: stale by age. A fresh one of a live writer: kept.
  const fs::path oldTemp = shard / fmt::format(".tmp-{}-{}-1", hex, ::getpid());
  const fs::path liveTemp = shard / fmt::format(".tmp-{}-{}-2", hex, ::getpid());
  writeFile(oldTemp, "old");
  writeFile(liveTemp, "in progress");
  struct timespec times[2] = {{::time(nullptr) - 600, 0}, {::time(nullptr) - 600, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, oldTemp.c_str(), times, 0), 0);
  // An orphaned lock file from a crashed getOrCreate.
  const fs::path orphanLock = shard / (hex + ".lock");
  writeFile(orphanLock, "");

  DiskStore store(at(tmp.path()));
  EXPECT_FALSE(fs::exists(deadTemp));
  EXPECT_FALSE(fs::exists(oldTemp));
  EXPECT_TRUE(fs::exists(liveTemp));
  EXPECT_FALSE(fs::exists(orphanLock));
  EXPECT_EQ(store.stats().staleFilesRemoved, 3u);
  EXPECT_FALSE(store.get(key).has_value());  // the partial write was never published
  EXPECT_EQ(*store.get(testKey("survivor")), "valid");
}

// Note on read-only roots: the tests run as root, for whom permission bits do not stop writes.
// When euid is 0 the check runs in a forked child that first gives the tree to uid/gid 65534
// (nobody) and drops to that user, so the kernel really refuses the writes; otherwise it chmods in
// place. Either way the store's own writability probe, not a simulated failure, is what is tested.
TEST(DiskStoreTest, ReadOnlyRootServesExistingEntriesAndWarnsOnce) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  {
    DiskStore store(at(root));
    ASSERT_TRUE(store.put(testKey("existing"), "existing cubin"));
  }
  const bool asRoot = ::geteuid() == 0;
  if (asRoot) {
    for (const auto& e : fs::recursive_directory_iterator(tmp.path()))
      ASSERT_EQ(::lchown(e.path().c_str(), 65534, 65534), 0);
    ASSERT_EQ(::chown(tmp.path().c_str(), 65534, 65534), 0);
  }
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_directory()) fs::permissions(e.path(), fs::perms(0500));
  fs::permissions(root, fs::perms(0500));

  const int rc = runInChild([&] {
    if (asRoot && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return 10;
    LogCapture logs;
    DiskStore store(at(root));
    if (store.mode() != DiskMode::kReadOnly) return 11;
    if (store.get(testKey("existing")) != std::optional<std::string>("existing cubin")) return 12;
    if (store.put(testKey("new"), "new cubin")) return 13;
    bool produced = false;
    if (store.getOrCreate(
            testKey("new"), [] { return std::string("built"); }, &produced) != "built" ||
        !produced)
      return 14;
    DiskStore again(at(root));  // a second store on the same root does not warn again
    if (logs.count("not writable") != 1) return 15;
    return 0;
  });
  EXPECT_EQ(rc, 0) << "child check failed (see the return codes in the test body)";
}

// Note [Trusted cache owners]: a cache baked in by root (a container image) and made readable is
// served read-only to an unprivileged user, with one warning; nothing in it is lost.
TEST(DiskStoreTest, RootOwnedCacheIsServedReadOnlyToAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to build a root-owned cache and drop to nobody";
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  {
    DiskStore store(at(root));
    ASSERT_TRUE(store.put(testKey("baked"), "baked cubin"));
  }
  // The image build's last step: readable by all, writable by root only.
  ASSERT_EQ(std::system(("chmod -R a+rX,go-w '" + tmp.path().string() + "'").c_str()), 0);
  const int rc = runInChild([&] {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) return 10;
    LogCapture logs;
    DiskStore store(at(root));
    if (store.mode() != DiskMode::kReadOnly) return 11;
    if (store.get(testKey("baked")) != std::optional<std::string>("baked cubin")) return 12;
    if (store.put(testKey("new"), "new cubin")) return 13;
    if (logs.count("not writable") != 1) return 14;
    if (store.verify().ok != 1) return 15;
    return 0;
  });
  EXPECT_EQ(rc, 0) << "child check failed (see the return codes in the test body)";
  DiskStore store(at(root));
  EXPECT_EQ(store.usage().entries, 1u);
  // Writable by others is still refused, whoever owns it.
  ASSERT_EQ(::chmod(root.c_str(), 0757), 0);
  LogCapture logs;
  EXPECT_EQ(DiskStore(at(root)).mode(), DiskMode::kDisabled);
  EXPECT_EQ(logs.count("lets other users write"), 1u);
}

// A lock that cannot be taken at all is reported as such at once, not as a timeout.
TEST(DiskStoreTest, UnusableLockFileIsReportedWithItsCauseAtOnce) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  DiskStoreOptions o = at(root);
  o.lockTimeout = std::chrono::minutes(2);
  DiskStore store(o);
  ASSERT_EQ(store.mode(), DiskMode::kReadWrite);
  const fs::path lock = fs::path(store.entryPath(testKey("k").digest())).replace_extension(".lock");
  fs::create_directories(lock);  // a directory where the lock file goes
  LogCapture logs;
  const auto t0 = std::chrono::steady_clock::now();
  bool produced = false;
  EXPECT_EQ(store.getOrCreate(testKey("k"), [] { return std::string("built"); }, &produced),
            "built");
  EXPECT_TRUE(produced);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(logs.count("Is a directory"), 1u);
  EXPECT_EQ(logs.count("within"), 0u);
}

TEST(DiskStoreTest, UncreatableRootDegradesToMemoryOnly) {
  TempDir tmp;
  writeFile(tmp.path() / "file", "a regular file where a directory should be");
  const fs::path root = tmp.path() / "file" / "kiln";
  LogCapture logs;
  DiskStore store(at(root));
  EXPECT_EQ(store.mode(), DiskMode::kDisabled);
  EXPECT_EQ(logs.count("cannot create cache directory"), 1u);
  EXPECT_FALSE(store.put(testKey("k"), "x"));
  EXPECT_FALSE(store.get(testKey("k")).has_value());
  bool produced = false;
  EXPECT_EQ(store.getOrCreate(
                testKey("k"), [] { return std::string("y"); }, &produced),
            "y");
  EXPECT_TRUE(produced);
}

TEST(DiskStoreTest, RootWritableByOthersIsRefused) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  fs::create_directories(root);
  ::chmod(root.c_str(), 0777);
  LogCapture logs;
  DiskStore store(at(root));
  EXPECT_EQ(store.mode(), DiskMode::kDisabled);
  EXPECT_EQ(logs.count("0777"), 1u);
  EXPECT_FALSE(fs::exists(root / "v1")) << "nothing may be written into a refused root";
  EXPECT_FALSE(store.put(testKey("k"), "x"));

  // Group-writable versioned dir inside a private root: refused as well.
  const fs::path root2 = tmp.path() / "cache2";
  fs::create_directories(root2 / "v1");
  ::chmod(root2.c_str(), 0700);
  ::chmod((root2 / "v1").c_str(), 0770);
  EXPECT_EQ(DiskStore(at(root2)).mode(), DiskMode::kDisabled);
  EXPECT_EQ(logs.count("0770"), 1u);
}

TEST(DiskStoreTest, RootOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown a directory to another user";
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  fs::create_directories(root);
  ::chmod(root.c_str(), 0700);
  ASSERT_EQ(::chown(root.c_str(), 12345, 12345), 0);
  LogCapture logs;
  DiskStore store(at(root));
  EXPECT_EQ(store.mode(), DiskMode::kDisabled);
  EXPECT_EQ(logs.count("owned by uid 12345"), 1u);
}

TEST(DiskStoreTest, DiskFullLosesOnlyTheNewEntry) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  {
    DiskStore store(at(root));
    ASSERT_TRUE(store.put(testKey("before"), "stored before the disk filled up"));
  }
  const int rc = runInChild([&] {
    ::signal(SIGXFSZ, SIG_IGN);  // get EFBIG from write() instead of being killed
    struct rlimit limit = {4096, 4096};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 10;
    LogCapture logs;
    DiskStore store(at(root));
    if (store.mode() != DiskMode::kReadWrite) return 11;
    if (store.put(testKey("big"), std::string(64 << 10, 'b'))) return 12;
    if (store.stats().writeFailures != 1) return 13;
    if (logs.count("could not write") != 1) return 14;
    if (store.usage().tempFiles != 0) return 15;
    if (store.get(testKey("before")) !=
        std::optional<std::string>("stored before the disk filled up"))
      return 16;
    // getOrCreate still returns the produced bytes when publishing fails.
    if (store.getOrCreate(testKey("big2"), [] { return std::string(64 << 10, 'c'); }) !=
        std::string(64 << 10, 'c'))
      return 17;
    if (logs.count("could not write") != 1) return 18;  // warned once
    if (!store.put(testKey("small"), "fits")) return 19;
    return 0;
  });
  ASSERT_EQ(rc, 0) << "child check failed (see the return codes in the test body)";
  DiskStore store(at(root));
  const VerifyResult v = store.verify();
  EXPECT_EQ(v.ok, 2u);
  EXPECT_TRUE(v.bad.empty());
  EXPECT_FALSE(store.get(testKey("big")).has_value());
  EXPECT_EQ(*store.get(testKey("small")), "fits");
}

void setMtime(const fs::path& p, time_t t) {
  struct timespec times[2] = {{t, 0}, {t, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
}

TEST(DiskStoreTest, LruEvictionUnderTheCap) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  const std::string payload(1000, 'x');
  uint64_t entryBytes = 0;
  {
    DiskStore probe(at(root));
    ASSERT_TRUE(probe.put(testKey("A"), payload));
    entryBytes = fs::file_size(probe.entryPath(testKey("A").digest()));
    ASSERT_TRUE(probe.put(testKey("B"), payload));
    ASSERT_TRUE(probe.put(testKey("C"), payload));
  }
  DiskStoreOptions o = at(root);
  o.maxBytes = entryBytes * 3 + entryBytes / 2;  // room for three entries
  DiskStore store(o);
  auto path = [&](const char* s) { return store.entryPath(testKey(s).digest()); };
  setMtime(path("A"), 1000);
  setMtime(path("B"), 2000);
  setMtime(path("C"), 3000);
  ASSERT_TRUE(store.get(testKey("A")).has_value());  // A becomes the most recently used
  ASSERT_TRUE(store.put(testKey("D"), payload));     // 4 entries > cap: evict down to 90%
  EXPECT_FALSE(fs::exists(path("B"))) << "least recently used goes first";
  EXPECT_TRUE(fs::exists(path("A")));
  EXPECT_TRUE(fs::exists(path("C")));
  EXPECT_TRUE(fs::exists(path("D")));
  EXPECT_EQ(store.stats().evictions, 1u);
  EXPECT_LE(store.usage().bytes, o.maxBytes);
}

TEST(DiskStoreTest, EntryJustWrittenIsNeverEvicted) {
  TempDir tmp;
  DiskStoreOptions o = at(tmp.path() / "cache");
  o.maxBytes = 100;  // smaller than any single entry
  DiskStore store(o);
  ASSERT_TRUE(store.put(testKey("first"), std::string(500, 'a')));
  ASSERT_TRUE(store.put(testKey("second"), std::string(500, 'b')));
  EXPECT_FALSE(store.get(testKey("first")).has_value());
  EXPECT_EQ(*store.get(testKey("second")), std::string(500, 'b'));
}

TEST(DiskStoreTest, ProducerExceptionPublishesNothing) {
  TempDir tmp;
  DiskStore store(at(tmp.path()));
  EXPECT_THROW(
      store.getOrCreate(testKey("k"), []() -> std::string { throw std::runtime_error("nvrtc"); }),
      std::runtime_error);
  EXPECT_FALSE(store.get(testKey("k")).has_value());
  EXPECT_EQ(store.getOrCreate(testKey("k"), [] { return std::string("ok"); }), "ok");
  EXPECT_EQ(*store.get(testKey("k")), "ok");
}

TEST(DiskStoreTest, VerifyAndClear) {
  TempDir tmp;
  DiskStore store(at(tmp.path()));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store.put(testKey(std::to_string(i)), "payload"));
  ASSERT_TRUE(store.put(CacheKey::tuningRecord("g", "s0=8", "sm_90", 1), "block=128"));
  std::string f = readFile(store.entryPath(testKey("3").digest()));
  f.back() ^= 1;
  writeFile(store.entryPath(testKey("3").digest()), f);
  const auto listed = store.list();
  ASSERT_EQ(listed.size(), 6u);
  size_t tuning = 0;
  for (const DiskEntryInfo& e : listed) {
    EXPECT_EQ(e.arch, "sm_90");
    tuning += e.kind == "tuning";
  }
  EXPECT_EQ(tuning, 1u);
  LogCapture logs;
  const VerifyResult v = store.verify();
  EXPECT_EQ(v.ok, 5u);
  ASSERT_EQ(v.bad.size(), 1u);
  EXPECT_EQ(v.bad[0].second, EntryStatus::kBadChecksum);
  EXPECT_EQ(store.list().size(), 5u);
  EXPECT_EQ(store.clear(), 5u);
  EXPECT_EQ(store.usage().entries, 0u);
  EXPECT_FALSE(store.get(testKey("0")).has_value());
}

// Note [Entry files are untrusted] (issue 20): a FIFO named like an entry hung every reader, a
// huge sparse file cost its size in memory, and a directory named like an entry could be removed.
TEST(DiskStoreTest, NonRegularAndHugeFilesAreNeitherReadNorRemoved) {
  TempDir tmp;
  DiskStore store(at(tmp.path()));
  const CacheKey good = testKey("good"), fifo = testKey("fifo"), huge = testKey("huge"),
                 dir = testKey("dir");
  ASSERT_TRUE(store.put(good, "payload"));
  for (const CacheKey* k : {&fifo, &huge, &dir})
    fs::create_directories(store.entryPath(k->digest()).parent_path());
  ASSERT_EQ(::mkfifo(store.entryPath(fifo.digest()).c_str(), 0600), 0);
  {
    // 2 GiB on paper, nothing on disk.
    int fd = ::open(store.entryPath(huge.digest()).c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, off_t{2} << 30), 0);
    ::close(fd);
  }
  fs::create_directories(store.entryPath(dir.digest()));
  // Each read returns at once with a miss (a FIFO would block a plain open() forever).
  const int rc = runInChild([&] {
    ::alarm(20);  // a blocked reader ends the child (SIGALRM), not the test run
    const bool allMiss = !store.get(fifo) && !store.get(huge) && !store.get(dir);
    return allMiss ? 0 : 1;
  });
  EXPECT_EQ(rc, 0) << "a read blocked or returned a payload";
  EXPECT_EQ(*store.get(good), "payload");
  EXPECT_EQ(store.list().size(), 4u) << "listed, so that verify can report them";
  const VerifyResult v = store.verify();
  EXPECT_EQ(v.ok, 1u);
  EXPECT_EQ(v.bad.size(), 3u);
  EXPECT_TRUE(fs::is_directory(store.entryPath(dir.digest()))) << "verify never removes a directory";
  EXPECT_EQ(*store.get(good), "payload");
}

// Four processes (two threads each) race getOrCreate over the same keys: each key is produced
// once in total, every caller gets the right bytes, every entry verifies.
TEST(DiskStoreTest, FourProcessesCompileEachKeyOnce) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  const fs::path countFile = tmp.path() / "produced.log";
  constexpr int kKeys = 8, kProcs = 4;
  { DiskStore init(at(root)); }  // create the root once, as a first process would
  auto payloadFor = [](int k) { return std::string(2000 + k, static_cast<char>('a' + k)); };
  std::vector<pid_t> children;
  for (int p = 0; p < kProcs; ++p) {
    pid_t pid = ::fork();
    if (pid == 0) {
      std::atomic<int> rc = 0;
      DiskStore store(at(root));
      auto work = [&](int offset) {
        for (int i = 0; i < kKeys; ++i) {
          const int k = (i + offset) % kKeys;
          const std::string got = store.getOrCreate(testKey(fmt::format("key {}", k)), [&] {
            int fd = ::open(countFile.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0600);
            const std::string line = fmt::format("{}\n", k);
            if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) rc = 20;
            ::close(fd);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a slow compile
            return payloadFor(k);
          });
          if (got != payloadFor(k)) rc = 21;
        }
      };
      std::thread t1(work, p), t2(work, p + 3);
      t1.join();
      t2.join();
      ::_exit(rc.load());
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child " << pid;
  }
  std::map<int, int> produced;
  std::istringstream lines(readFile(countFile));
  for (int k; lines >> k;) ++produced[k];
  EXPECT_EQ(produced.size(), static_cast<size_t>(kKeys));
  for (const auto& [k, n] : produced) EXPECT_EQ(n, 1) << "key " << k << " produced " << n << "x";
  DiskStore store(at(root));
  const VerifyResult v = store.verify();
  EXPECT_EQ(v.ok, static_cast<uint64_t>(kKeys));
  EXPECT_TRUE(v.bad.empty());
  for (int k = 0; k < kKeys; ++k)
    EXPECT_EQ(store.get(testKey(fmt::format("key {}", k))), payloadFor(k));
  EXPECT_EQ(store.usage().tempFiles, 0u);
}

}  // namespace
}  // namespace kiln::cache

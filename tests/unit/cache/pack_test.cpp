// Cache packs (Note [Cache packs]): export/import round trips byte for byte, damaged or foreign
// packs are refused before anything is written, existing entries are kept, and a failed export
// leaves the target as it was. Also the cache's VERSION file (Note [Cache version file]).
#include "cache/pack.h"

#include <csignal>
#include <map>

#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "cache_test_util.h"
#include "kiln/version.h"

namespace kiln::cache {
namespace {
namespace fs = std::filesystem;
using testing::readFile;
using testing::runInChild;
using testing::storeAt;
using testing::TempDir;
using testing::testKey;
using testing::writeFile;

// Every regular file under `dir`, relative path -> bytes.
std::map<std::string, std::string> filesUnder(const fs::path& dir) {
  std::map<std::string, std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = readFile(e.path());
  return out;
}

// Entry files only (VERSION and the like left out), relative path -> bytes.
std::map<std::string, std::string> entriesUnder(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto& [name, bytes] : filesUnder(dir))
    if (fs::path(name).extension() == ".kbin") out[name] = bytes;
  return out;
}

// A cache with entries of every kind; returns their number.
int fill(const fs::path& root) {
  DiskStore store(storeAt(root));
  EXPECT_EQ(store.mode(), DiskMode::kReadWrite) << store.modeReason();
  int n = 0;
  for (int i = 0; i < 5; ++i)
    n += store.put(testKey("kernel " + std::to_string(i)), std::string(100 + 37 * i, 'a' + i));
  n += store.put(CacheKey::tuningRecord("group", "b=8", "sm_90", 1), "block=256");
  n += store.put(CacheKey::capture("module fingerprint", 1), std::string("graph\0text", 10));
  return n;
}

// Recomputes a pack's checksum after a deliberate edit, so that only the edit is refused.
void reseal(std::string& pack) {
  const std::string_view body(pack.data(), pack.size() - 16);
  const Digest sum = hash128(body);
  for (int i = 0; i < 8; ++i) {
    pack[pack.size() - 16 + i] = static_cast<char>((sum.hi >> (8 * i)) & 0xff);
    pack[pack.size() - 8 + i] = static_cast<char>((sum.lo >> (8 * i)) & 0xff);
  }
}

class PackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    entries_ = fill(source());
    ASSERT_EQ(entries_, 7);
    DiskStore store(storeAt(source()));
    const PackExportSummary summary = exportPack(store, pack(), /*overwrite=*/false);
    ASSERT_EQ(summary.entries, 7u);
    ASSERT_TRUE(summary.skipped.empty());
    ASSERT_EQ(summary.bytes, fs::file_size(pack()));
  }
  fs::path source() const { return tmp_.path() / "source"; }
  fs::path target() const { return tmp_.path() / "target"; }
  fs::path pack() const { return tmp_.path() / "cache.kpack"; }

  // Imports `bytes` as a pack into an empty target and expects a refusal naming `why`, with
  // nothing written.
  void expectRefused(const std::string& bytes, const std::string& why) {
    const fs::path bad = tmp_.path() / "bad.kpack";
    writeFile(bad, bytes);
    DiskStore store(storeAt(target()));
    ASSERT_EQ(store.mode(), DiskMode::kReadWrite);
    const auto before = filesUnder(target());
    try {
      importPack(store, bad);
      ADD_FAILURE() << "import of a bad pack succeeded; expected: " << why;
    } catch (const PackError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos)
          << "names the file: " << e.what();
    }
    EXPECT_EQ(filesUnder(target()), before) << "a refused pack must write nothing";
    EXPECT_TRUE(entriesUnder(target()).empty());
  }

  TempDir tmp_;
  int entries_ = 0;
};

TEST_F(PackTest, RoundTripIntoEmptyCacheGivesIdenticalEntries) {
  DiskStore store(storeAt(target()));  // created by the store, as kiln-cache import does
  const PackImportSummary summary = importPack(store, pack());
  EXPECT_EQ(summary.imported, 7u);
  EXPECT_EQ(summary.alreadyPresent, 0u);
  EXPECT_TRUE(summary.rejected.empty());
  EXPECT_EQ(summary.writeFailures, 0u);
  EXPECT_EQ(summary.packKilnVersion, version());
  const auto want = entriesUnder(source() / "v1");
  ASSERT_EQ(want.size(), 7u);
  EXPECT_EQ(entriesUnder(target() / "v1"), want);
  const VerifyResult verified = DiskStore(storeAt(target())).verify();
  EXPECT_EQ(verified.ok, 7u);
  EXPECT_TRUE(verified.bad.empty());
  // And the entries are served.
  DiskStore fresh(storeAt(target()));
  EXPECT_EQ(fresh.get(testKey("kernel 2")), std::string(100 + 74, 'c'));
  EXPECT_EQ(fresh.get(CacheKey::tuningRecord("group", "b=8", "sm_90", 1)), "block=256");
}

TEST_F(PackTest, ExistingEntriesAreKeptAndCorruptOnesReplaced) {
  const CacheKey kept = testKey("kernel 0");
  const CacheKey corrupt = testKey("kernel 1");
  fs::path corruptPath;
  {
    DiskStore store(storeAt(target()));
    // Same key, other bytes (another build of the kernel): it stays.
    ASSERT_TRUE(store.put(kept, "another build"));
    ASSERT_TRUE(store.put(corrupt, "will be damaged"));
    corruptPath = store.entryPath(corrupt.digest());
  }
  std::string damaged = readFile(corruptPath);
  damaged[damaged.size() / 2] ^= 0x40;
  writeFile(corruptPath, damaged);

  DiskStore store(storeAt(target()));
  const PackImportSummary summary = importPack(store, pack());
  EXPECT_EQ(summary.imported, 6u);
  EXPECT_EQ(summary.alreadyPresent, 1u);
  EXPECT_TRUE(summary.rejected.empty());
  EXPECT_EQ(store.get(kept), "another build");
  EXPECT_EQ(store.get(corrupt), std::string(137, 'b'));
  // Importing again adds nothing.
  const PackImportSummary again = importPack(store, pack());
  EXPECT_EQ(again.imported, 0u);
  EXPECT_EQ(again.alreadyPresent, 7u);
}

TEST_F(PackTest, ExportLeavesOutEntriesThatDoNotVerify) {
  fs::path damagedPath;
  {
    DiskStore store(storeAt(source()));
    damagedPath = store.entryPath(testKey("kernel 3").digest());
  }
  std::string bytes = readFile(damagedPath);
  bytes.resize(bytes.size() - 3);
  writeFile(damagedPath, bytes);
  const fs::path second = tmp_.path() / "second.kpack";
  const PackExportSummary summary = exportPack(DiskStore(storeAt(source())), second, false);
  EXPECT_EQ(summary.entries, 6u);
  ASSERT_EQ(summary.skipped.size(), 1u);
  EXPECT_EQ(summary.skipped[0].first, damagedPath);
  EXPECT_EQ(summary.skipped[0].second, EntryStatus::kTruncated);
  EXPECT_TRUE(fs::exists(damagedPath)) << "export changes nothing in the cache";
  DiskStore store(storeAt(target()));
  EXPECT_EQ(importPack(store, second).imported, 6u);
  EXPECT_FALSE(store.get(testKey("kernel 3")).has_value());
}

TEST_F(PackTest, EmptyCacheExportsAnEmptyPack) {
  const fs::path empty = tmp_.path() / "empty";
  const fs::path file = tmp_.path() / "empty.kpack";
  const PackExportSummary summary = exportPack(DiskStore(storeAt(empty)), file, false);
  EXPECT_EQ(summary.entries, 0u);
  DiskStore store(storeAt(target()));
  const PackImportSummary imported = importPack(store, file);
  EXPECT_EQ(imported.imported, 0u);
  EXPECT_EQ(imported.alreadyPresent, 0u);
}

TEST_F(PackTest, TruncatedPacksAreRefused) {
  const std::string bytes = readFile(pack());
  // Inside the magic, inside the header, inside an entry, inside the trailer, one byte short.
  for (size_t keep :
       {size_t{0}, size_t{5}, size_t{14}, bytes.size() / 2, bytes.size() - 20, bytes.size() - 1}) {
    SCOPED_TRACE(keep);
    const std::string why =
        keep == 0 ? "not a kiln cache pack" : (keep < 20 ? "truncated" : "checksum mismatch");
    expectRefused(bytes.substr(0, keep), why);
  }
}

TEST_F(PackTest, BitFlipsAreRefused) {
  const std::string bytes = readFile(pack());
  const size_t firstEntry = 8 + 12 + version().size();
  // In the version text, an entry's digest, an entry's size, a payload, the count, the checksum.
  for (size_t at : {size_t{25}, firstEntry + 3, firstEntry + 17, bytes.size() / 2,
                    bytes.size() - 20, bytes.size() - 3}) {
    SCOPED_TRACE(at);
    std::string flipped = bytes;
    flipped[at] ^= 0x10;
    expectRefused(flipped, "checksum mismatch");
  }
}

TEST_F(PackTest, FilesThatAreNotPacksAreRefused) {
  expectRefused("just some text that is long enough to look like something\n",
                "not a kiln cache pack");
  // An entry file is not a pack either.
  expectRefused(readFile(DiskStore(storeAt(source())).entryPath(testKey("kernel 0").digest())),
                "not a kiln cache pack");
  DiskStore store(storeAt(target()));
  EXPECT_THROW(importPack(store, tmp_.path() / "absent.kpack"), PackError);
  try {
    importPack(store, tmp_.path());
    ADD_FAILURE() << "a directory was imported";
  } catch (const PackError& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(entriesUnder(target()).empty());
}

TEST_F(PackTest, OtherFormatVersionsAreRefused) {
  const std::string bytes = readFile(pack());
  std::string newerPack = bytes;
  newerPack[8] = static_cast<char>(kPackFormatVersion + 1);
  reseal(newerPack);
  expectRefused(newerPack, "pack format version 2, but this kiln reads version 1");
  std::string newerEntries = bytes;
  newerEntries[12] = static_cast<char>(kFormatVersion + 1);
  reseal(newerEntries);
  expectRefused(newerEntries, "holds cache entries of format version 2");
}

TEST_F(PackTest, WellSealedButMalformedPacksAreRefused) {
  std::string bytes = readFile(pack());
  // The trailer's entry count disagrees with the entries, the checksum is right.
  bytes[bytes.size() - 24] ^= 0x01;
  reseal(bytes);
  expectRefused(bytes, "its trailer counts 6 entries but it holds 7");
}

TEST_F(PackTest, EntriesThatDoNotDecodeAreRejectedOthersImported) {
  // A pack whose checksum is right but one entry's bytes are not (a buggy or hostile exporter).
  std::string bytes = readFile(pack());
  const std::string entry =
      readFile(DiskStore(storeAt(source())).entryPath(testKey("kernel 4").digest()));
  const size_t where = bytes.find(entry);
  ASSERT_NE(where, std::string::npos);
  bytes[where + entry.size() - 12] ^= 0x01;  // in the payload
  reseal(bytes);
  writeFile(pack(), bytes);
  DiskStore store(storeAt(target()));
  const PackImportSummary summary = importPack(store, pack());
  EXPECT_EQ(summary.imported, 6u);
  ASSERT_EQ(summary.rejected.size(), 1u);
  EXPECT_EQ(summary.rejected[0].first, testKey("kernel 4").digest());
  EXPECT_EQ(summary.rejected[0].second, EntryStatus::kBadChecksum);
  EXPECT_FALSE(store.get(testKey("kernel 4")).has_value());
}

TEST_F(PackTest, ExportRefusesAnExistingFileUnlessOverwriting) {
  const fs::path file = tmp_.path() / "existing.kpack";
  writeFile(file, "keep me");
  try {
    exportPack(DiskStore(storeAt(source())), file, /*overwrite=*/false);
    ADD_FAILURE() << "an existing file was replaced";
  } catch (const PackError& e) {
    EXPECT_NE(std::string(e.what()).find("already exists (use --force"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(readFile(file), "keep me");
  EXPECT_EQ(exportPack(DiskStore(storeAt(source())), file, /*overwrite=*/true).entries, 7u);
  EXPECT_EQ(readFile(file), readFile(pack()));
  // No temp files are left beside it.
  for (const auto& e : fs::directory_iterator(tmp_.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

TEST_F(PackTest, ExportToAnUnwritablePlaceFailsAndWritesNothing) {
  const fs::path file = tmp_.path() / "no-such-dir" / "x.kpack";
  try {
    exportPack(DiskStore(storeAt(source())), file, false);
    ADD_FAILURE() << "export into a missing directory succeeded";
  } catch (const PackError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot write " + file.string()), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(file.parent_path()));
}

// A full disk, simulated by a file size limit: the write fails, the temp file is removed and the
// target keeps its old content.
TEST_F(PackTest, ExportThatRunsOutOfSpaceLeavesTheTargetAlone) {
  const fs::path file = tmp_.path() / "full.kpack";
  writeFile(file, "old pack");
  const int rc = runInChild([&] {
    std::signal(SIGXFSZ, SIG_IGN);  // write() then fails with EFBIG instead of killing us
    struct rlimit limit {
      256, 256
    };
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 10;
    try {
      exportPack(DiskStore(storeAt(source())), file, /*overwrite=*/true);
      return 11;
    } catch (const PackError& e) {
      const std::string what = e.what();
      if (what.find("File too large") == std::string::npos) return 12;
      if (what.find("was not changed") == std::string::npos) return 13;
      return 0;
    }
  });
  EXPECT_EQ(rc, 0) << "child check failed (see the return codes in the test body)";
  EXPECT_EQ(readFile(file), "old pack");
  for (const auto& e : fs::directory_iterator(tmp_.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

// As in DiskStoreTest.ReadOnlyRootServesExistingEntriesAndWarnsOnce: as root the check runs as
// nobody in a child, so that the kernel really refuses writes.
TEST_F(PackTest, ImportIntoAReadOnlyCacheFails) {
  { DiskStore store(storeAt(target())); }
  ASSERT_TRUE(testing::makeReadOnlyForChecker(tmp_.path(), target()));
  const int rc = runInChild([&] {
    if (!testing::becomeChecker()) return 10;
    DiskStore store(storeAt(target()));
    if (store.mode() != DiskMode::kReadOnly) return 11;
    try {
      importPack(store, pack());
      return 12;
    } catch (const PackError& e) {
      const std::string what = e.what();
      if (what.find("cannot import into") == std::string::npos) return 13;
      if (what.find("not writable") == std::string::npos) return 14;
      return 0;
    }
  });
  EXPECT_EQ(rc, 0) << "child check failed (see the return codes in the test body)";
  EXPECT_TRUE(entriesUnder(target()).empty());
}

TEST(CacheVersionFileTest, FirstWriteRecordsTheKilnVersion) {
  TempDir tmp;
  const fs::path root = tmp.path() / "cache";
  {
    DiskStore store(storeAt(root));
    EXPECT_FALSE(store.recordedVersion().has_value());
    EXPECT_FALSE(fs::exists(root / "v1" / "VERSION")) << "opening a store writes nothing";
    ASSERT_TRUE(store.put(testKey("a"), "x"));
    EXPECT_EQ(readFile(root / "v1" / "VERSION"), std::string(version()) + "\n");
    EXPECT_EQ(store.recordedVersion(), std::string(version()));
  }
  // Another kiln's record is replaced at the next write, not at open; garbage is shown tamed.
  writeFile(root / "v1" / "VERSION", "kiln 0.0.1\x1b[31m\nsecond line");
  DiskStore store(storeAt(root));
  EXPECT_EQ(store.recordedVersion(), "kiln 0.0.1?[31m");
  ASSERT_TRUE(store.put(testKey("b"), "y"));
  EXPECT_EQ(store.recordedVersion(), std::string(version()));
  // The entries stay readable, and VERSION is not mistaken for one.
  EXPECT_EQ(store.get(testKey("a")), "x");
  EXPECT_EQ(store.list().size(), 2u);
  EXPECT_TRUE(store.verify().bad.empty());
}

}  // namespace
}  // namespace kiln::cache

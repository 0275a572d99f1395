// kiln-cache end to end: export/import copy a cache (Note [Cache packs]) with the exit codes and
// messages a deployment script relies on, stats shows the kiln that wrote the cache, bad usage
// exits 2.
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "cache/disk_store.h"
#include "cache/pack.h"
#include "kiln/version.h"
#include "tests/support/run_tool.h"
#include "tests/unit/cache/cache_test_util.h"

namespace kiln::cache {
namespace {
namespace fs = std::filesystem;
using kiln::testing::runTool;
using kiln::testing::ToolRun;
using testing::readFile;
using testing::TempDir;
using testing::testKey;
using testing::writeFile;

ToolRun kilnCache(const fs::path& cacheDir, std::vector<std::string> args,
                  const std::function<bool()>& inChild = {}) {
  args.insert(args.begin(), {"--cache-dir", cacheDir.string()});
  return runTool(KILN_CACHE_BIN, args, inChild);
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// Entry files under a cache root, relative path -> bytes.
std::map<std::string, std::string> entriesUnder(const fs::path& root) {
  std::map<std::string, std::string> out;
  if (!fs::exists(root)) return out;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.path().extension() == ".kbin")
      out[fs::relative(e.path(), root).string()] = readFile(e.path());
  return out;
}

class KilnCacheCli : public ::testing::Test {
 protected:
  void SetUp() override {
    DiskStore store(testing::storeAt(source()));
    ASSERT_EQ(store.mode(), DiskMode::kReadWrite) << store.modeReason();
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(store.put(testKey("cli kernel " + std::to_string(i)), std::string(64 * i, 'k')));
  }
  fs::path source() const { return tmp_.path() / "source"; }
  fs::path target() const { return tmp_.path() / "target"; }
  fs::path pack() const { return tmp_.path() / "cache.kpack"; }

  void exportPackOk() {
    const ToolRun r = kilnCache(source(), {"export", pack().string()});
    ASSERT_EQ(r.rc, 0) << r.output;
  }

  TempDir tmp_;
};

TEST_F(KilnCacheCli, ExportImportRoundTripIsIdenticalAndVerifiesClean) {
  ToolRun r = kilnCache(source(), {"export", pack().string()});
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "exported 3 entries")) << r.output;
  r = kilnCache(target(), {"import", pack().string()});
  ASSERT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "3 new, 0 already present, 0 rejected")) << r.output;
  EXPECT_TRUE(contains(r.output, std::string(version()))) << "names the exporter: " << r.output;
  EXPECT_EQ(entriesUnder(target()), entriesUnder(source()));
  r = kilnCache(target(), {"verify"});
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "3 ok, 0 bad")) << r.output;
  // A second import finds everything there.
  r = kilnCache(target(), {"import", pack().string()});
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "0 new, 3 already present, 0 rejected")) << r.output;
}

TEST_F(KilnCacheCli, ExportRefusesAnExistingFileWithoutForce) {
  writeFile(pack(), "precious");
  ToolRun r = kilnCache(source(), {"export", pack().string()});
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "already exists (use --force to replace it)")) << r.output;
  EXPECT_EQ(readFile(pack()), "precious");
  r = kilnCache(source(), {"export", "--force", pack().string()});
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_EQ(checkPack(pack()), version());
}

TEST_F(KilnCacheCli, ExportFailuresExitOne) {
  ToolRun r = kilnCache(source(), {"export", (tmp_.path() / "missing-dir" / "p.kpack").string()});
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "kiln-cache: cannot write")) << r.output;
  // No cache to export.
  r = kilnCache(tmp_.path() / "no-cache", {"export", pack().string()});
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "cannot export the cache at")) << r.output;
  EXPECT_FALSE(fs::exists(pack()));
}

TEST_F(KilnCacheCli, DamagedForeignAndNonPacksAreRefusedWritingNothing) {
  exportPackOk();
  const std::string good = readFile(pack());
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x01;
  std::string foreign = good;
  foreign[8] = 7;  // pack format version 7; the checksum is not even read
  const std::vector<std::pair<std::string, std::string>> cases = {
      {good.substr(0, good.size() - 30), "checksum mismatch"},
      {flipped, "checksum mismatch"},
      {"#!/bin/sh\necho not a pack\n", "not a kiln cache pack"},
      {foreign, "pack format version 7"},
  };
  for (const auto& [bytes, why] : cases) {
    SCOPED_TRACE(why);
    const fs::path bad = tmp_.path() / "bad.kpack";
    writeFile(bad, bytes);
    const ToolRun r = kilnCache(target(), {"import", bad.string()});
    EXPECT_EQ(r.rc, 1) << r.output;
    EXPECT_TRUE(contains(r.output, "kiln-cache: " + bad.string())) << r.output;
    EXPECT_TRUE(contains(r.output, why)) << r.output;
    EXPECT_FALSE(fs::exists(target())) << "a refused pack creates no cache";
  }
}

TEST_F(KilnCacheCli, ImportIntoAReadOnlyCacheExitsOne) {
  exportPackOk();
  { DiskStore store(testing::storeAt(target())); }
  // As root, the tool runs as nobody so that the kernel refuses the writes.
  ASSERT_TRUE(testing::makeReadOnlyForChecker(tmp_.path(), target()));
  const ToolRun r = kilnCache(target(), {"import", pack().string()}, testing::becomeChecker);
  EXPECT_EQ(r.rc, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "cannot import into")) << r.output;
  EXPECT_TRUE(contains(r.output, "not writable")) << r.output;
  EXPECT_TRUE(entriesUnder(target()).empty());
}

TEST_F(KilnCacheCli, StatsShowsTheKilnThatWroteTheCache) {
  const ToolRun r = kilnCache(source(), {"stats"});
  EXPECT_EQ(r.rc, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "written by: " + std::string(version()) + "\n")) << r.output;
  EXPECT_TRUE(contains(r.output, "entries: 3")) << r.output;
}

TEST_F(KilnCacheCli, BadUsageExitsTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"export"},
                                             {"import"},
                                             {"import", "--force", "p.kpack"},
                                             {"export", "a", "b"},
                                             {"stats", "extra"},
                                             {"pack"},
                                             {}}) {
    const ToolRun r = kilnCache(target(), args);
    EXPECT_EQ(r.rc, 2) << ::testing::PrintToString(args) << ": " << r.output;
    EXPECT_TRUE(contains(r.output, "(try --help)")) << r.output;
  }
  // An empty KILN_CACHE_DIR is a mistake, as the library says (Options::fromEnv), not a quiet
  // fall back to ~/.cache/kiln; --cache-dir, given, wins over it.
  const auto emptyEnv = [] { return ::setenv("KILN_CACHE_DIR", "", 1) == 0; };
  const ToolRun empty = runTool(KILN_CACHE_BIN, {"stats"}, emptyEnv);
  EXPECT_EQ(empty.rc, 2) << empty.output;
  EXPECT_TRUE(contains(empty.output, "KILN_CACHE_DIR is set but empty")) << empty.output;
  EXPECT_EQ(kilnCache(source(), {"stats"}, emptyEnv).rc, 0);
  const ToolRun help = runTool(KILN_CACHE_BIN, {"--help"});
  EXPECT_EQ(help.rc, 0);
  EXPECT_TRUE(contains(help.output, "export [--force] FILE")) << help.output;
  EXPECT_FALSE(fs::exists(target()));
}

}  // namespace
}  // namespace kiln::cache

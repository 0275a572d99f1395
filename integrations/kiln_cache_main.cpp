// kiln-cache: inspect and maintain kiln's persistent kernel cache.
//   kiln-cache [--cache-dir DIR] stats|list|verify|clear
// Bad usage: one line on stderr, exit 2. verify exits 1 if it found (and removed) bad entries; any
// command exits 1 if the cache directory is refused or unusable.
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "cache/disk_store.h"
#include "src/support/version_flag.h"

namespace {
using kiln::cache::DiskMode;
using kiln::cache::DiskStore;
using kiln::cache::DiskStoreOptions;

constexpr std::string_view kUsage =
    "usage: kiln-cache [--cache-dir DIR] stats|list|verify|clear\n"
    "       kiln-cache --version\n"
    "  stats   entries, bytes and location of the cache\n"
    "  list    one line per entry: digest, kind, arch, bytes, last use\n"
    "  verify  check every entry's header, key and checksum; remove bad ones\n"
    "  clear   remove every entry\n"
    "The cache dir defaults to $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.\n";

[[noreturn]] void usageError(const std::string& message) {
  std::fprintf(stderr, "kiln-cache: %s (try --help)\n", message.c_str());
  std::exit(2);
}

std::string formatTime(int64_t unixSeconds) {
  std::time_t t = static_cast<std::time_t>(unixSeconds);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

int run(const std::optional<std::string>& dir, const std::string& command) {
  DiskStoreOptions options;
  if (dir) options.root = *dir;
  // Inspecting must not create a cache; clearing a missing one is a no-op as well.
  options.createIfMissing = false;
  DiskStore store(options);
  if (store.mode() == DiskMode::kDisabled) {
    if (store.root().empty() || !std::filesystem::exists(store.root())) {
      fmt::print("no cache at {}\n", store.root().empty() ? "(none)" : store.root().string());
      return 0;
    }
    fmt::print(stderr, "kiln-cache: cannot use {}: {}\n", store.root().string(),
               store.modeReason());
    return 1;
  }
  if (command == "stats") {
    const auto entries = store.list();
    std::map<std::string, uint64_t> byKind;
    for (const auto& e : entries) ++byKind[e.kind.empty() ? "unreadable" : e.kind];
    const auto usage = store.usage();
    fmt::print("cache dir: {} ({})\n", store.versionDir().string(), toString(store.mode()));
    fmt::print("entries: {}\n", usage.entries);
    for (const auto& [kind, n] : byKind) fmt::print("  {}: {}\n", kind, n);
    fmt::print("bytes: {}\n", usage.bytes);
    fmt::print("temp files: {}\n", usage.tempFiles);
    return 0;
  }
  if (command == "list") {
    for (const auto& e : store.list()) {
      fmt::print("{}  {:<7} {:<8} {:>10}  {}\n",
                 e.digest ? e.digest->hex() : e.path.filename().string(),
                 e.kind.empty() ? "?" : e.kind, e.arch.empty() ? "?" : e.arch, e.fileBytes,
                 formatTime(e.lastUsedUnixSeconds));
    }
    return 0;
  }
  if (command == "verify") {
    const auto result = store.verify();
    const bool removable = store.mode() == DiskMode::kReadWrite;
    for (const auto& [path, status] : result.bad)
      fmt::print("bad {}: {}{}\n", path.string(), toString(status),
                 removable && status != kiln::cache::EntryStatus::kIoError ? " (removed)" : "");
    fmt::print("{} ok, {} bad\n", result.ok, result.bad.size());
    return result.bad.empty() ? 0 : 1;
  }
  // clear
  if (store.mode() != DiskMode::kReadWrite) {
    fmt::print(stderr, "kiln-cache: cannot clear {}: {}\n", store.root().string(),
               store.modeReason());
    return 1;
  }
  fmt::print("removed {} entries from {}\n", store.clear(), store.versionDir().string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<std::string> dir;
  std::optional<std::string> command;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(std::string(kUsage).c_str(), stdout);
      return 0;
    }
    if (arg == "--version") {
      kiln::printVersion();
      return 0;
    }
    if (arg == "--cache-dir") {
      if (i + 1 >= argc) usageError("--cache-dir needs a directory");
      dir = argv[++i];
    } else if (arg.rfind("--cache-dir=", 0) == 0) {
      dir = std::string(arg.substr(12));
    } else if (!arg.empty() && arg[0] == '-') {
      usageError(fmt::format("unknown option '{}'", arg));
    } else if (command) {
      usageError(fmt::format("unexpected argument '{}' after command '{}'", arg, *command));
    } else if (arg == "stats" || arg == "list" || arg == "verify" || arg == "clear") {
      command = std::string(arg);
    } else {
      usageError(fmt::format("unknown command '{}', expected stats|list|verify|clear", arg));
    }
  }
  if (dir && dir->empty()) usageError("--cache-dir needs a non-empty directory");
  if (!command) usageError("missing command, expected stats|list|verify|clear");
  try {
    return run(dir, *command);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-cache: %s\n", e.what());
    return 1;
  }
}

// kiln-cache: inspect, maintain and copy kiln's persistent kernel cache.
//   kiln-cache [--cache-dir DIR] stats|list|verify|clear
//   kiln-cache [--cache-dir DIR] export [--force] FILE | import FILE
// Bad usage: one line on stderr, exit 2. verify exits 1 if it found (and removed) bad entries;
// export and import exit 1 when they fail (nothing is written then) and import also when it
// rejected entries; any command exits 1 if the cache directory is refused or unusable.
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "cache/disk_store.h"
#include "cache/pack.h"
#include "src/support/options.h"
#include "src/support/version_flag.h"

namespace {
using kiln::cache::DiskMode;
using kiln::cache::DiskStore;
using kiln::cache::DiskStoreOptions;

constexpr std::string_view kUsage =
    "usage: kiln-cache [--cache-dir DIR] stats|list|verify|clear\n"
    "       kiln-cache [--cache-dir DIR] export [--force] FILE\n"
    "       kiln-cache [--cache-dir DIR] import FILE\n"
    "       kiln-cache --version\n"
    "  stats   entries, bytes and location of the cache, and the kiln that last wrote it\n"
    "  list    one line per entry: digest, kind, arch, bytes, last use\n"
    "  verify  check every entry's header, key and checksum; remove bad ones\n"
    "  clear   remove every entry\n"
    "  export  write every entry that verifies into FILE, one checksummed pack for copying the\n"
    "          cache to another machine; an existing FILE is kept unless --force\n"
    "  import  check all of pack FILE, then add its entries (existing entries are kept)\n"
    "The cache dir defaults to $KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln.\n"
    "Exit status: 0 done, 1 failed (or verify found bad entries), 2 bad usage.\n";

struct Command {
  std::string name;
  std::optional<std::string> file;  // export / import
  bool force = false;               // export --force
};

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

int exportCache(const DiskStore& store, const Command& command) {
  const auto summary = kiln::cache::exportPack(store, *command.file, command.force);
  for (const auto& [path, status] : summary.skipped)
    fmt::print(stderr, "kiln-cache: left out {}: {} (kiln-cache verify removes it)\n",
               path.string(), toString(status));
  fmt::print("exported {} entries ({} bytes) from {} to {}{}\n", summary.entries, summary.bytes,
             store.versionDir().string(), *command.file,
             summary.skipped.empty()
                 ? std::string()
                 : fmt::format("; left out {} that did not verify", summary.skipped.size()));
  return 0;
}

int importCache(DiskStore& store, const Command& command) {
  const auto summary = kiln::cache::importPack(store, *command.file);
  for (const auto& [digest, status] : summary.rejected)
    fmt::print(stderr, "kiln-cache: rejected entry {}: {}\n", digest.hex(), toString(status));
  fmt::print("imported {} into {} (pack from {}): {} new, {} already present, {} rejected\n",
             *command.file, store.versionDir().string(), summary.packKilnVersion, summary.imported,
             summary.alreadyPresent, summary.rejected.size());
  if (summary.writeFailures > 0)
    fmt::print(stderr, "kiln-cache: {} entries could not be written (see the warning above)\n",
               summary.writeFailures);
  if (const uint64_t evicted = store.stats().evictions; evicted > 0)
    fmt::print(
        "evicted {} least recently used entries to stay under the size cap "
        "(KILN_CACHE_MAX_BYTES)\n",
        evicted);
  return summary.rejected.empty() && summary.writeFailures == 0 ? 0 : 1;
}

int run(const std::optional<std::string>& dir, const Command& command) {
  DiskStoreOptions options;
  if (dir) options.root = *dir;
  if (const char* cap = std::getenv("KILN_CACHE_MAX_BYTES"))  // import may evict
    options.maxBytes = kiln::parseByteSize("KILN_CACHE_MAX_BYTES", cap);
  // Inspecting must not create a cache; clearing a missing one is a no-op as well. Importing
  // creates it, but not for a pack it refuses.
  options.createIfMissing = command.name == "import";
  if (command.name == "import") kiln::cache::checkPack(*command.file);
  DiskStore store(options);
  if (command.name == "export") return exportCache(store, command);
  if (command.name == "import") return importCache(store, command);
  if (store.mode() == DiskMode::kDisabled) {
    if (store.root().empty() || !std::filesystem::exists(store.root())) {
      fmt::print("no cache at {}\n", store.root().empty() ? "(none)" : store.root().string());
      return 0;
    }
    fmt::print(stderr, "kiln-cache: cannot use {}: {}\n", store.root().string(),
               store.modeReason());
    return 1;
  }
  if (command.name == "stats") {
    const auto entries = store.list();
    std::map<std::string, uint64_t> byKind;
    for (const auto& e : entries) ++byKind[e.kind.empty() ? "unreadable" : e.kind];
    const auto usage = store.usage();
    fmt::print("cache dir: {} ({})\n", store.versionDir().string(), toString(store.mode()));
    fmt::print("written by: {}\n", store.recordedVersion().value_or("unknown (no VERSION file)"));
    fmt::print("entries: {}\n", usage.entries);
    for (const auto& [kind, n] : byKind) fmt::print("  {}: {}\n", kind, n);
    fmt::print("bytes: {}\n", usage.bytes);
    fmt::print("temp files: {}\n", usage.tempFiles);
    return 0;
  }
  if (command.name == "list") {
    for (const auto& e : store.list()) {
      fmt::print("{}  {:<7} {:<8} {:>10}  {}\n",
                 e.digest ? e.digest->hex() : e.path.filename().string(),
                 e.kind.empty() ? "?" : e.kind, e.arch.empty() ? "?" : e.arch, e.fileBytes,
                 formatTime(e.lastUsedUnixSeconds));
    }
    return 0;
  }
  if (command.name == "verify") {
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
  std::vector<std::string> positional;
  bool force = false;
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
    } else if (arg == "--force") {
      force = true;
    } else if (!arg.empty() && arg[0] == '-') {
      usageError(fmt::format("unknown option '{}'", arg));
    } else {
      positional.emplace_back(arg);
    }
  }
  if (dir && dir->empty()) usageError("--cache-dir needs a non-empty directory");
  // As Options::fromEnv says for the library: an empty value is a mistake, not "the default".
  if (const char* env = std::getenv("KILN_CACHE_DIR"); !dir && env != nullptr && *env == '\0')
    usageError("KILN_CACHE_DIR is set but empty; unset it to use the default cache directory");
  constexpr std::string_view kCommands = "stats|list|verify|clear|export|import";
  if (positional.empty()) usageError(fmt::format("missing command, expected {}", kCommands));
  Command command;
  command.name = positional[0];
  const bool takesFile = command.name == "export" || command.name == "import";
  if (!takesFile && command.name != "stats" && command.name != "list" && command.name != "verify" &&
      command.name != "clear")
    usageError(fmt::format("unknown command '{}', expected {}", command.name, kCommands));
  if (takesFile && positional.size() < 2) usageError(command.name + " needs a pack FILE");
  if (takesFile) command.file = positional[1];
  if (positional.size() > (takesFile ? 2u : 1u))
    usageError(fmt::format("unexpected argument '{}' after command '{}'",
                           positional[takesFile ? 2 : 1], command.name));
  if (command.file && command.file->empty()) usageError(command.name + " needs a non-empty FILE");
  if (force && command.name != "export") usageError("--force goes with export only");
  command.force = force;
  try {
    return run(dir, command);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln-cache: %s\n", e.what());
    return 1;
  }
}

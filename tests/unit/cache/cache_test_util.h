#pragma once
// Helpers shared by the cache tests: temp dirs, captured warnings, forked children.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "cache/cache_key.h"
#include "cache/disk_store.h"
#include "src/support/log.h"

namespace kiln::cache::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "kiln-cache-test-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    if (!made) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() {
    // Restore permissions first so that removal works after read-only tests.
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
         it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec)) ::chmod(it->path().c_str(), 0700);
    }
    ::chmod(path_.c_str(), 0700);
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Captures log lines for the lifetime of the object.
class LogCapture {
 public:
  LogCapture() {
    std::lock_guard<std::mutex> lock(mutex());
    lines().clear();
    setLogSink(&LogCapture::sink);
  }
  ~LogCapture() { setLogSink(nullptr); }
  std::vector<std::string> warnings() const {
    std::lock_guard<std::mutex> lock(mutex());
    return lines();
  }
  size_t count(const std::string& needle) const {
    size_t n = 0;
    for (const std::string& l : warnings()) n += l.find(needle) != std::string::npos;
    return n;
  }

 private:
  static void sink(LogLevel level, std::string_view message) {
    if (level != LogLevel::kWarn) return;
    std::lock_guard<std::mutex> lock(mutex());
    lines().emplace_back(message);
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<std::string>& lines() {
    static std::vector<std::string> l;
    return l;
  }
};

// Runs `body` in a forked child and returns its exit status (or 128+signal). The child never
// returns into the test framework.
inline int runInChild(const std::function<int()>& body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = body();
    } catch (...) {
      rc = 98;
    }
    ::_exit(rc);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Makes `dir` and every directory below it read-only (0500) for the process that checks it. Root
// ignores permission bits, so when euid is 0 the whole of `tree` (which holds `dir`) is first given
// to nobody (uid/gid 65534), and the checking child must call becomeChecker(), which drops to that
// user. Returns false if the tree could not be handed over.
inline bool makeReadOnlyForChecker(const std::filesystem::path& tree,
                                   const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  if (::geteuid() == 0) {
    for (const auto& e : fs::recursive_directory_iterator(tree))
      if (::lchown(e.path().c_str(), 65534, 65534) != 0) return false;
    if (::chown(tree.c_str(), 65534, 65534) != 0) return false;
  }
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_directory()) fs::permissions(e.path(), fs::perms(0500));
  fs::permissions(dir, fs::perms(0500));
  return true;
}

// In the checking child of makeReadOnlyForChecker(): false if it could not drop to nobody.
inline bool becomeChecker() {
  return ::getuid() != 0 || (::setgid(65534) == 0 && ::setuid(65534) == 0);
}

inline DiskStoreOptions storeAt(const std::filesystem::path& root) {
  DiskStoreOptions o;
  o.root = root;
  return o;
}

inline CacheKey testKey(std::string_view source, std::string arch = "sm_90") {
  return CacheKey::kernel(source, {"--std=c++17", "-default-device"}, std::move(arch), "12.4", 1);
}

inline std::string readFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void writeFile(const std::filesystem::path& p, std::string_view data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

inline unsigned modeOf(const std::filesystem::path& p) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return 0xffff;
  return st.st_mode & 07777;
}

}  // namespace kiln::cache::testing

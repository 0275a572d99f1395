#pragma once
// Runs one of kiln's tool binaries from a test: fork and exec, stdout and stderr captured together.
// Plain C++, so tests that link no LibTorch can use it.
#include <cerrno>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace kiln::testing {

struct ToolRun {
  int rc = -1;         // exit status, or 128 + signal
  std::string output;  // stdout and stderr, interleaved
};

// `args` exclude argv[0]. KILN_CACHE_DIR, KILN_LOG and KILN_ARCH are unset in the child so that
// the test's own environment does not leak in. `inChild`, when given, runs in the child just before
// exec (to drop privileges, say); if it returns false the child exits 127.
inline ToolRun runTool(const std::string& binary, const std::vector<std::string>& args,
                       const std::function<bool()>& inChild = {}) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    for (const char* name : {"KILN_CACHE_DIR", "KILN_LOG", "KILN_ARCH"}) ::unsetenv(name);
    if (inChild && !inChild()) ::_exit(127);
    std::vector<char*> argv{const_cast<char*>(binary.c_str())};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  ToolRun run;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n > 0)
      run.output.append(buf, static_cast<size_t>(n));
    else if (errno != EINTR)
      break;
  }
  ::close(fds[0]);
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return run;
  run.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

}  // namespace kiln::testing

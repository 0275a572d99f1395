// Note [Background jobs at exit] (jit/runtime/session.cpp): a process that exits while a
// background job of a never-destroyed session runs must not run the job under destroyed statics.
// The child half stands a library's lazily made static (LibTorch's cuBLAS handle pool, say) up
// after the session, queues a job that needs it, and exits while the job runs; the parent runs
// that half in a fresh process and checks that it exited cleanly.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <kiln/kiln.h>

#include "tests/support/sessions.h"

namespace {

std::atomic<bool> gLibraryStaticAlive{false};
std::atomic<bool> gJobStarted{false};

struct LibraryStatic {
  LibraryStatic() { gLibraryStaticAlive = true; }
  ~LibraryStatic() { gLibraryStaticAlive = false; }
};

constexpr int kJobSawADestroyedStatic = 42;

TEST(SessionExit, ChildExitsWhileAJobRuns) {
  if (std::getenv("KILN_TEST_EXIT_CHILD") == nullptr)
    GTEST_SKIP() << "run by SessionExit.ExitWaitsForRunningBackgroundJobs";
  static kiln::Session* session =
      new kiln::Session(kiln::Options{}, kiln::testing::noEnvironment());
  static LibraryStatic library;  // made after the session, as a library makes its statics
  session->runInBackground([] {
    gJobStarted = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (!gLibraryStaticAlive.load()) std::_Exit(kJobSawADestroyedStatic);
  });
  while (!gJobStarted.load()) std::this_thread::yield();
  std::exit(0);  // while the job runs
}

TEST(SessionExit, ExitWaitsForRunningBackgroundJobs) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = "KILN_TEST_EXIT_CHILD=1 '" + self +
                          "' --gtest_filter=SessionExit.ChildExitsWhileAJobRuns >/dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of a signal: " << status;
  EXPECT_NE(WEXITSTATUS(status), kJobSawADestroyedStatic)
      << "the job ran after a static made before it was destroyed";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace

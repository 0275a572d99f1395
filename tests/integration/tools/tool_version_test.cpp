// Every kiln tool answers --version with kiln::version() on one line and exits 0 (Note
// [Versions]), without needing a model, a cache or a GPU.
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kiln/version.h"
#include "tests/support/run_tool.h"

namespace {

std::vector<std::string> toolBinaries() {
  std::vector<std::string> tools;
  std::stringstream list(KILN_TOOL_BINS);
  for (std::string path; std::getline(list, path, '|');) tools.push_back(path);
  if (std::filesystem::exists(KILN_AOTI_BENCH_BIN)) tools.push_back(KILN_AOTI_BENCH_BIN);
  return tools;
}

TEST(ToolVersionTest, EveryToolPrintsTheVersionAndExitsZero) {
  const std::vector<std::string> tools = toolBinaries();
  ASSERT_GE(tools.size(), 3u) << "kiln-cache, kiln-warmup and kiln-demo at least";
  const std::string expected = std::string(kiln::version()) + "\n";
  for (const std::string& tool : tools) {
    const kiln::testing::ToolRun run = kiln::testing::runTool(tool, {"--version"});
    EXPECT_EQ(run.rc, 0) << tool << ": " << run.output;
    EXPECT_EQ(run.output, expected) << tool;
  }
}

}  // namespace

#pragma once
// A small subset of LLVM FileCheck for tests that check printed IR / partitions.
//
// Directives, one per line of the check text (anything before "CHECK" on the line, such as "//",
// is ignored; lines without a directive are ignored):
//   CHECK: pat        pat occurs at or after the end of the previous match
//   CHECK-NEXT: pat   pat occurs on the line right after the previous match's line
//   CHECK-SAME: pat   pat occurs on the same line as the previous match, after it
//   CHECK-NOT: pat    pat does not occur between the previous match and the next positive match
//                     (or the end of the input)
//   CHECK-EMPTY:      the line after the previous match is empty
//   CHECK-COUNT-n: pat  n consecutive CHECKs of pat
// A pattern is literal text (leading/trailing spaces trimmed) except for {{regex}} blocks, which
// are ECMAScript regexes. A pattern never spans lines.
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace kiln::testing {

struct FileCheckResult {
  bool ok = true;
  std::string message;  // on failure: the directive, its check line and where the search began
};

FileCheckResult fileCheck(std::string_view input, std::string_view checks);

// For EXPECT_TRUE(matchesFileCheck(text, R"(CHECK: ...)")); the failure shows the whole input.
::testing::AssertionResult matchesFileCheck(std::string_view input, std::string_view checks);

}  // namespace kiln::testing

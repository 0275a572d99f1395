#pragma once
// Pass tests on graphs written as text: run one pass, drop what it left dead, verify, and compare
// the printed graph with the expected text (both printed, so value names need not match).
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "src/ir/graph.h"
#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/ir/verifier.h"
#include "src/passes/eliminate_dead_code.h"

namespace kiln::testing {

inline void expectRewrite(const std::function<bool(ir::Graph&)>& pass, const std::string& input,
                          const std::string& expected, bool changed) {
  auto g = ir::parse(input);
  EXPECT_EQ(pass(*g), changed);
  passes::eliminateDeadCode(*g);
  ir::verify(*g);
  EXPECT_EQ(ir::print(*g), ir::print(*ir::parse(expected)));
}

}  // namespace kiln::testing

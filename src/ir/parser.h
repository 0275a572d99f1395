#pragma once
// Reads the text form described in printer.h (Note [IR text form]).
#include <memory>
#include <string_view>

#include "src/ir/graph.h"

namespace kiln::ir {

// Parses one graph. Each result's type is checked against shape inference where the op's type is
// inferable (and taken from inference when the text omits it); the result is verified (verifier.h).
// Errors are UserError "line L:C: expected X, got Y" (or the shape/verifier error with the line).
std::unique_ptr<Graph> parse(std::string_view text);

}  // namespace kiln::ir

#pragma once
// The textual form of a kiln graph; parser.h reads it back. Tests write graphs in it.
//
// Note [IR text form]
//   graph      := 'graph' '(' [arg (',' arg)*] ')' '{' stmt* 'return' '(' [ref (',' ref)*] ')' '}'
//   arg        := ref ':' type ['param']          inputs and params, in graph order
//   stmt       := [result (',' result)* '='] opname '(' [ref (',' ref)*] ')' [attrs]
//   result     := ref [':' type]                  the type may be omitted where it is inferable
//   ref        := '%' name                        name: [A-Za-z0-9_.]+
//   type       := dtype '[' [dim (',' dim)*] ']'  dtype: bool i32 i64 f16 bf16 f32
//   dim        := SymDim text: integers, symbols by name, + - * and parentheses ("s0*s1", "2*s0+1")
//   attrs      := '{' attr (',' attr)* '}'        attr := name '=' value, sorted by name on print
//   value      := true | false | int | double | "string" | '[' [int (',' int)*] ']'
//                 doubles always print with '.', 'e', or as inf/-inf/nan; ints never do
//   comments   := '//' to the end of the line (parser only)
// Example:
//   graph(%x: f16[s0, 128], %w: f16[128] param) {
//     %c: f32[] = constant() {value = 0.5}
//     %0: f16[s0, 128] = mul(%x, %w)
//     %1: f16[s0, 128] = add(%0, %c)
//     %2: f16[s0, 128] = softmax(%1) {dim = 1}
//     return(%2)
//   }
// Printing rules (what makes print(parse(t)) == t for printed text):
// - Every result prints with its type; every node prints on one line, in graph order.
// - A value with a (non-numeric) name prints as %name; names from text are kept by the parser.
//   Other values are numbered %0, %1, ... in definition order, skipping numbers used as names;
//   numeric names in parsed text are NOT kept, so tests may number values any way they like and
//   compare print(result) with print(parse(expected)).
// - Symbols print by the graph's symbol names (Graph::symbolName).
// - Inputs carry no attrs in text: their name is the value name, their index is their position.
#include <string>
#include <unordered_map>

#include "src/ir/graph.h"

namespace kiln::ir {

std::string print(const Graph& graph);

// Display names of a graph's values, as print() writes them (without the '%'). Also usable by
// other tools that list nodes (partition explain) so their output matches print().
class ValueNames {
 public:
  explicit ValueNames(const Graph& graph);
  // "%x" or "%3". InternalError for a value not in the graph.
  std::string ref(const Value* v) const;

 private:
  std::unordered_map<const Value*, std::string> names_;
};

// "f16[s0, 128]" with the graph's symbol names.
std::string printType(const Graph& graph, const TensorType& type);
std::string printDim(const Graph& graph, const SymDim& dim);
// One node as a statement line (without indentation or newline).
std::string printNode(const Graph& graph, const ValueNames& names, const Node& node);

}  // namespace kiln::ir

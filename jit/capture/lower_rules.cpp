// The lowering table (Note [Lowering table] in lower_rules.h).
#include "jit/capture/lower_rules.h"

#include <string>
#include <utility>

#include "src/support/error.h"

namespace kiln::jit {

void LoweringTable::add(std::string_view qualName, LoweringRule rule) {
  insert(qualName, Entry{std::move(rule), nullptr});
}

void LoweringTable::addMulti(std::string_view qualName, MultiLoweringRule rule) {
  insert(qualName, Entry{nullptr, std::move(rule)});
}

void LoweringTable::insert(std::string_view qualName, Entry entry) {
  const c10::Symbol op = c10::Symbol::fromQualString(std::string(qualName));
  KILN_CHECK(rules_.emplace(op, std::move(entry)).second, "lowering table: {} has two rules",
             qualName);
}

const LoweringTable::Entry* LoweringTable::find(c10::Symbol op) const {
  auto it = rules_.find(op);
  return it == rules_.end() ? nullptr : &it->second;
}

const LoweringTable& loweringTable() {
  static const LoweringTable table = [] {
    LoweringTable t;
    addPointwiseRules(t);
    addReductionRules(t);
    addViewRules(t);
    addLibraryRules(t);
    addIndexingRules(t);
    return t;
  }();
  return table;
}

bool hasLoweringRule(std::string_view qualName) {
  return loweringTable().find(c10::Symbol::fromQualString(std::string(qualName))) != nullptr;
}

}  // namespace kiln::jit

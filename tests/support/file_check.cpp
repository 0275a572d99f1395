#include "tests/support/file_check.h"

#include <optional>
#include <regex>
#include <vector>

#include <fmt/format.h>

namespace kiln::testing {

namespace {

enum class Kind { kCheck, kNext, kSame, kNot, kEmpty };

struct Directive {
  Kind kind = Kind::kCheck;
  int count = 1;     // CHECK-COUNT-n
  std::string text;  // the pattern as written
  std::regex regex;
  int checkLine = 0;     // 1-based line in the check text
  std::string spelling;  // "CHECK-NEXT" etc., for messages
};

std::vector<std::string_view> splitLines(std::string_view s) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string_view::npos) {
      lines.push_back(s.substr(start));
      break;
    }
    lines.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::string escapeRegex(std::string_view literal) {
  static const std::string_view kSpecial = R"(\^$.|?*+()[]{}/)";
  std::string out;
  for (char c : literal) {
    if (kSpecial.find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// Literal text with {{regex}} blocks.
std::regex compilePattern(std::string_view pattern) {
  std::string re;
  size_t pos = 0;
  while (pos < pattern.size()) {
    size_t open = pattern.find("{{", pos);
    if (open == std::string_view::npos) {
      re += escapeRegex(pattern.substr(pos));
      break;
    }
    size_t close = pattern.find("}}", open + 2);
    if (close == std::string_view::npos)
      throw std::invalid_argument(fmt::format("unterminated {{{{ in pattern '{}'", pattern));
    re += escapeRegex(pattern.substr(pos, open - pos));
    re += "(?:" + std::string(pattern.substr(open + 2, close - open - 2)) + ")";
    pos = close + 2;
  }
  return std::regex(re, std::regex::ECMAScript);
}

std::optional<Directive> parseDirective(std::string_view line, int lineNo) {
  size_t at = line.find("CHECK");
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = line.substr(at + 5);
  Directive d;
  d.checkLine = lineNo;
  size_t colon = rest.find(':');
  if (colon == std::string_view::npos)
    throw std::invalid_argument(fmt::format("check line {}: directive without ':'", lineNo));
  std::string_view suffix = rest.substr(0, colon);
  d.spelling = "CHECK" + std::string(suffix);
  if (suffix.empty() || suffix == "-LABEL") {
    d.kind = Kind::kCheck;
  } else if (suffix == "-NEXT") {
    d.kind = Kind::kNext;
  } else if (suffix == "-SAME") {
    d.kind = Kind::kSame;
  } else if (suffix == "-NOT") {
    d.kind = Kind::kNot;
  } else if (suffix == "-EMPTY") {
    d.kind = Kind::kEmpty;
  } else if (suffix.rfind("-COUNT-", 0) == 0) {
    d.kind = Kind::kCheck;
    d.count = std::stoi(std::string(suffix.substr(7)));
    if (d.count < 1) throw std::invalid_argument(fmt::format("check line {}: bad count", lineNo));
  } else {
    throw std::invalid_argument(
        fmt::format("check line {}: unknown directive {}", lineNo, d.spelling));
  }
  d.text = std::string(trim(rest.substr(colon + 1)));
  if (d.kind != Kind::kEmpty) {
    if (d.text.empty())
      throw std::invalid_argument(fmt::format("check line {}: empty pattern", lineNo));
    d.regex = compilePattern(d.text);
  }
  return d;
}

struct Match {
  size_t line;
  size_t begin;
  size_t end;
};

std::optional<Match> searchLine(const std::vector<std::string_view>& lines, size_t line, size_t col,
                                const std::regex& re) {
  if (line >= lines.size() || col > lines[line].size()) return std::nullopt;
  std::string_view s = lines[line].substr(col);
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_search(s.begin(), s.end(), m, re)) return std::nullopt;
  const size_t begin = col + static_cast<size_t>(m.position(0));
  return Match{line, begin, begin + static_cast<size_t>(m.length(0))};
}

std::string context(const std::vector<std::string_view>& lines, size_t from) {
  std::string out;
  for (size_t i = from; i < lines.size() && i < from + 8; ++i)
    out += fmt::format("  {:>4}| {}\n", i + 1, lines[i]);
  return out;
}

}  // namespace

FileCheckResult fileCheck(std::string_view input, std::string_view checks) {
  std::vector<Directive> directives;
  try {
    int lineNo = 0;
    for (std::string_view line : splitLines(checks)) {
      ++lineNo;
      if (auto d = parseDirective(line, lineNo)) directives.push_back(std::move(*d));
    }
  } catch (const std::exception& e) {
    return {false, fmt::format("bad check text: {}", e.what())};
  }
  if (directives.empty()) return {false, "no CHECK directives in the check text"};

  const std::vector<std::string_view> lines = splitLines(input);
  size_t curLine = 0;
  size_t curCol = 0;
  std::optional<size_t> lastLine;  // line of the previous positive match
  std::vector<const Directive*> pendingNots;

  auto fail = [&](const Directive& d, std::string_view what, size_t fromLine) {
    return FileCheckResult{
        false, fmt::format("{}: {} '{}' (check line {}); input from line {}:\n{}", d.spelling, what,
                           d.text, d.checkLine, fromLine + 1, context(lines, fromLine))};
  };
  // CHECK-NOTs between the current position and (endLine, endCol).
  auto checkNots = [&](size_t endLine, size_t endCol) -> std::optional<FileCheckResult> {
    for (const Directive* d : pendingNots) {
      for (size_t l = curLine; l <= endLine && l < lines.size(); ++l) {
        auto m = searchLine(lines, l, l == curLine ? curCol : 0, d->regex);
        if (m && (l < endLine || m->end <= endCol)) return fail(*d, "found excluded pattern", l);
      }
    }
    pendingNots.clear();
    return std::nullopt;
  };

  for (const Directive& d : directives) {
    if (d.kind == Kind::kNot) {
      pendingNots.push_back(&d);
      continue;
    }
    for (int rep = 0; rep < d.count; ++rep) {
      std::optional<Match> match;
      const size_t next = lastLine ? *lastLine + 1 : 0;
      switch (d.kind) {
        case Kind::kCheck:
          for (size_t l = curLine; l < lines.size() && !match; ++l)
            match = searchLine(lines, l, l == curLine ? curCol : 0, d.regex);
          if (!match) return fail(d, "pattern not found", curLine);
          break;
        case Kind::kNext:
          match = searchLine(lines, next, next == curLine ? curCol : 0, d.regex);
          if (!match) return fail(d, "pattern not on the next line", next);
          break;
        case Kind::kSame:
          if (!lastLine) return fail(d, "no previous match for", 0);
          match = searchLine(lines, *lastLine, curCol, d.regex);
          if (!match) return fail(d, "pattern not on the same line", *lastLine);
          break;
        case Kind::kEmpty:
          if (next >= lines.size() || !lines[next].empty())
            return fail(d, "line is not empty", next);
          match = Match{next, 0, 0};
          break;
        case Kind::kNot:
          break;
      }
      if (auto failure = checkNots(match->line, match->begin)) return *failure;
      curLine = match->line;
      curCol = match->end;
      lastLine = match->line;
    }
  }
  if (auto failure = checkNots(lines.size(), 0)) return *failure;
  return {};
}

::testing::AssertionResult matchesFileCheck(std::string_view input, std::string_view checks) {
  FileCheckResult r = fileCheck(input, checks);
  if (r.ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << r.message << "\nfull input:\n" << input;
}

}  // namespace kiln::testing

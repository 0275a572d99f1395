#pragma once
// Stable hashing (FNV-1a 64 over bytes, and a combiner). Stable across processes and builds: the
// results end up in cache keys, so never use std::hash here.
#include <cstdint>
#include <string_view>

namespace kiln {

constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

constexpr uint64_t fnv1a(std::string_view bytes, uint64_t h = kFnvOffset) {
  for (char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= kFnvPrime;
  }
  return h;
}

constexpr uint64_t hashCombine(uint64_t seed, uint64_t v) {
  // boost-style mix, widened to 64 bits.
  return seed ^ (v + 0x9e3779b97f4a7c15ull + (seed << 12) + (seed >> 4));
}

}  // namespace kiln

#include "cache/cache_key.h"

#include <set>

#include <gtest/gtest.h>

namespace kiln::cache {
namespace {

CacheKey baseKey() {
  return CacheKey::kernel("extern \"C\" __global__ void k() {}", {"--std=c++17", "-default-device"},
                          "sm_90", "12.4", 3);
}

// Golden values pin the hash and the key text format: these digests name files that other
// processes and other builds of kiln read. If this test fails, the cache format changed: bump
// kFormatVersion (disk_store.h) or the codegen version instead of updating the goldens lightly.
TEST(CacheKeyTest, GoldenDigests) {
  EXPECT_EQ(hash128("").hex(), "00000000000000000000000000000000");
  EXPECT_EQ(hash128("hello").hex(), "cbd8a7b341bd9b025b1e906a48ae1d19");
  EXPECT_EQ(
      baseKey().keyText(),
      "kind=kernel\nsource=bb8f8e75c7f8b248f56501205a170efc\narch=sm_90\nnvrtc=12.4\ncodegen=3\n"
      "options=2\noption=--std=c++17\noption=-default-device\n");
  EXPECT_EQ(baseKey().digest().hex(), "d12d642ef33b572e5a7ac6d806b855ff");
}

// Hasher128 (used for cache packs) gives hash128 of the concatenation however the bytes are split.
TEST(CacheKeyTest, StreamingHashMatchesOneShot) {
  std::string text;
  for (int i = 0; i < 300; ++i) text += static_cast<char>((i * 131 + 7) & 0xff);
  for (size_t len :
       {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{33}, size_t{300}}) {
    const std::string_view bytes(text.data(), len);
    for (size_t piece : {size_t{1}, size_t{3}, size_t{16}, size_t{29}, size_t{512}}) {
      Hasher128 hasher;
      for (size_t at = 0; at < len; at += piece) hasher.update(bytes.substr(at, piece));
      EXPECT_EQ(hasher.finish(), hash128(bytes)) << "len " << len << ", pieces of " << piece;
    }
  }
}

TEST(CacheKeyTest, DigestIsDeterministic) {
  EXPECT_EQ(baseKey().digest(), baseKey().digest());
  EXPECT_EQ(baseKey(), baseKey());
}

TEST(CacheKeyTest, EveryFieldChangesTheDigest) {
  std::vector<CacheKey> keys;
  keys.push_back(baseKey());
  auto variant = [&](auto&& change) {
    CacheKey k = baseKey();
    change(k);
    keys.push_back(k);
  };
  variant([](CacheKey& k) { k.kind = EntryKind::kTuningRecord; });
  variant([](CacheKey& k) { k.sourceHash = hash128("extern \"C\" __global__ void k2() {}"); });
  variant([](CacheKey& k) { k.options = {"-default-device", "--std=c++17"}; });  // order
  variant([](CacheKey& k) { k.options = {"--std=c++17"}; });
  variant([](CacheKey& k) { k.options.push_back("--use_fast_math"); });
  variant([](CacheKey& k) { k.options = {"--std=c++17\noption=-default-device"}; });  // escaping
  variant([](CacheKey& k) { k.arch = "sm_80"; });
  variant([](CacheKey& k) { k.nvrtcVersion = "12.6"; });
  variant([](CacheKey& k) { k.codegenVersion = 4; });
  std::set<std::string> digests;
  for (const CacheKey& k : keys) digests.insert(k.digest().hex());
  EXPECT_EQ(digests.size(), keys.size());
}

TEST(CacheKeyTest, SourceTextMatters) {
  EXPECT_NE(CacheKey::kernel("a", {}, "sm_90", "12.4", 1).digest(),
            CacheKey::kernel("b", {}, "sm_90", "12.4", 1).digest());
}

TEST(CacheKeyTest, TuningRecordKeys) {
  const CacheKey a = CacheKey::tuningRecord("group-abc", "s0=64", "sm_90", 1);
  EXPECT_EQ(a.kind, EntryKind::kTuningRecord);
  EXPECT_EQ(a.digest(), CacheKey::tuningRecord("group-abc", "s0=64", "sm_90", 1).digest());
  EXPECT_NE(a.digest(), CacheKey::tuningRecord("group-abc", "s0=128", "sm_90", 1).digest());
  EXPECT_NE(a.digest(), CacheKey::tuningRecord("group-abd", "s0=64", "sm_90", 1).digest());
  EXPECT_NE(a.digest(), CacheKey::tuningRecord("group-abc", "s0=64", "sm_80", 1).digest());
  // The boundary between group and bucket is part of the identity.
  EXPECT_NE(CacheKey::tuningRecord("ab", "c", "sm_90", 1).digest(),
            CacheKey::tuningRecord("a", "bc", "sm_90", 1).digest());
  EXPECT_EQ(keyTextField(a.keyText(), "kind"), "tuning");
}

TEST(CacheKeyTest, HexRoundTrip) {
  const Digest d = baseKey().digest();
  EXPECT_EQ(d.hex().size(), 32u);
  ASSERT_TRUE(Digest::fromHex(d.hex()).has_value());
  EXPECT_EQ(*Digest::fromHex(d.hex()), d);
  EXPECT_FALSE(Digest::fromHex("xyz").has_value());
  EXPECT_FALSE(Digest::fromHex(std::string(32, 'G')).has_value());
  EXPECT_FALSE(Digest::fromHex(std::string(31, '0')).has_value());
}

TEST(CacheKeyTest, HashCoversEveryTailLength) {
  // Every length 0..40 hashes differently from its neighbours (exercises block and tail paths).
  std::set<std::string> seen;
  std::string s;
  for (int i = 0; i <= 40; ++i) {
    seen.insert(hash128(s).hex());
    s.push_back(static_cast<char>('a' + i % 26));
  }
  EXPECT_EQ(seen.size(), 41u);
  // One flipped bit anywhere changes both halves.
  std::string t(37, 'x');
  const Digest base = hash128(t);
  for (size_t i = 0; i < t.size(); ++i) {
    std::string u = t;
    u[i] ^= 1;
    const Digest d = hash128(u);
    EXPECT_NE(d.hi, base.hi) << i;
    EXPECT_NE(d.lo, base.lo) << i;
  }
}

}  // namespace
}  // namespace kiln::cache

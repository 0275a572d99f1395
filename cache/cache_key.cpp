#include "cache/cache_key.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace kiln::cache {
namespace {

constexpr uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

constexpr uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

// Little-endian load regardless of host byte order, so digests agree across hosts.
uint64_t load64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Escapes '\\' and '\n' so that keyText() is unambiguous whatever the field values hold.
void appendEscaped(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void appendField(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += '=';
  appendEscaped(out, value);
  out += '\n';
}

}  // namespace

constexpr uint64_t kC1 = 0x87c37b91114253d5ull;
constexpr uint64_t kC2 = 0x4cf5ad432745937full;

void Hasher128::mixBlock(const unsigned char* block) {
  uint64_t k1 = load64(block);
  uint64_t k2 = load64(block + 8);
  k1 *= kC1;
  k1 = rotl(k1, 31);
  k1 *= kC2;
  h1_ ^= k1;
  h1_ = rotl(h1_, 27);
  h1_ += h2_;
  h1_ = h1_ * 5 + 0x52dce729;
  k2 *= kC2;
  k2 = rotl(k2, 33);
  k2 *= kC1;
  h2_ ^= k2;
  h2_ = rotl(h2_, 31);
  h2_ += h1_;
  h2_ = h2_ * 5 + 0x38495ab5;
}

void Hasher128::update(std::string_view bytes) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t len = bytes.size();
  length_ += len;
  if (tailBytes_ > 0) {
    const size_t take = std::min(len, sizeof tail_ - tailBytes_);
    std::memcpy(tail_ + tailBytes_, data, take);
    tailBytes_ += take;
    data += take;
    len -= take;
    if (tailBytes_ < sizeof tail_) return;
    mixBlock(tail_);
    tailBytes_ = 0;
  }
  for (; len >= 16; data += 16, len -= 16) mixBlock(data);
  std::memcpy(tail_, data, len);
  tailBytes_ = len;
}

Digest Hasher128::finish() const {
  uint64_t h1 = h1_, h2 = h2_;
  const size_t rest = tailBytes_;
  uint64_t k1 = 0, k2 = 0;
  for (size_t i = rest; i > 8; --i) k2 ^= uint64_t{tail_[i - 1]} << ((i - 9) * 8);
  if (rest > 8) {
    k2 *= kC2;
    k2 = rotl(k2, 33);
    k2 *= kC1;
    h2 ^= k2;
  }
  for (size_t i = rest < 8 ? rest : 8; i > 0; --i) k1 ^= uint64_t{tail_[i - 1]} << ((i - 1) * 8);
  if (rest > 0) {
    k1 *= kC1;
    k1 = rotl(k1, 31);
    k1 *= kC2;
    h1 ^= k1;
  }
  h1 ^= length_;
  h2 ^= length_;
  h1 += h2;
  h2 += h1;
  h1 = fmix64(h1);
  h2 = fmix64(h2);
  h1 += h2;
  h2 += h1;
  return Digest{h1, h2};
}

Digest hash128(std::string_view bytes) {
  Hasher128 hasher;
  hasher.update(bytes);
  return hasher.finish();
}

std::string Digest::hex() const {
  return fmt::format("{:016x}{:016x}", hi, lo);
}

std::optional<Digest> Digest::fromHex(std::string_view text) {
  if (text.size() != 32) return std::nullopt;
  uint64_t parts[2] = {0, 0};
  for (size_t i = 0; i < 32; ++i) {
    const char c = text[i];
    uint64_t v;
    if (c >= '0' && c <= '9') {
      v = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return std::nullopt;
    }
    parts[i / 16] = (parts[i / 16] << 4) | v;
  }
  return Digest{parts[0], parts[1]};
}

std::string_view toString(EntryKind kind) {
  switch (kind) {
    case EntryKind::kKernelBinary:
      return "kernel";
    case EntryKind::kTuningRecord:
      return "tuning";
    case EntryKind::kCapture:
      return "capture";
  }
  return "?";
}

CacheKey CacheKey::kernel(std::string_view source, std::vector<std::string> options,
                          std::string arch, std::string nvrtcVersion, uint32_t codegenVersion) {
  CacheKey key;
  key.kind = EntryKind::kKernelBinary;
  key.sourceHash = hash128(source);
  key.options = std::move(options);
  key.arch = std::move(arch);
  key.nvrtcVersion = std::move(nvrtcVersion);
  key.codegenVersion = codegenVersion;
  return key;
}

CacheKey CacheKey::tuningRecord(std::string_view groupSignature, std::string_view bucket,
                                std::string arch, uint32_t codegenVersion) {
  // Length-prefix the group so that ("ab", "c") and ("a", "bc") differ.
  CacheKey key;
  key.kind = EntryKind::kTuningRecord;
  key.sourceHash = hash128(fmt::format("{}:{}{}", groupSignature.size(), groupSignature, bucket));
  key.arch = std::move(arch);
  key.codegenVersion = codegenVersion;
  return key;
}

CacheKey CacheKey::capture(std::string_view fingerprint, uint32_t formatVersion) {
  CacheKey key;
  key.kind = EntryKind::kCapture;
  key.sourceHash = hash128(fingerprint);
  key.codegenVersion = formatVersion;
  return key;
}

std::string CacheKey::keyText() const {
  // Field order and spelling are part of the on-disk format (the golden digest test pins them).
  std::string out;
  appendField(out, "kind", toString(kind));
  appendField(out, "source", sourceHash.hex());
  appendField(out, "arch", arch);
  appendField(out, "nvrtc", nvrtcVersion);
  appendField(out, "codegen", fmt::format("{}", codegenVersion));
  appendField(out, "options", fmt::format("{}", options.size()));
  for (const std::string& o : options) appendField(out, "option", o);
  return out;
}

std::string keyTextField(std::string_view keyText, std::string_view field) {
  size_t pos = 0;
  while (pos < keyText.size()) {
    size_t end = keyText.find('\n', pos);
    if (end == std::string_view::npos) end = keyText.size();
    std::string_view line = keyText.substr(pos, end - pos);
    if (line.size() > field.size() && line.substr(0, field.size()) == field &&
        line[field.size()] == '=')
      return std::string(line.substr(field.size() + 1));
    pos = end + 1;
  }
  return {};
}

}  // namespace kiln::cache

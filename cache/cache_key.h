#pragma once
// The identity of a cache entry (Note [Cache key contents]) and the stable 128-bit digest that
// names its file on disk.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::cache {

// A stable 128-bit hash (MurmurHash3 x64-128 construction, seed 0, bytes read little-endian).
// Stable across processes, builds and hosts: it names files that outlive the process. Never
// std::hash.
struct Digest {
  uint64_t hi = 0;
  uint64_t lo = 0;

  // 32 lowercase hex digits, hi first.
  std::string hex() const;
  // Parses what hex() writes; nullopt for anything else.
  static std::optional<Digest> fromHex(std::string_view text);

  friend bool operator==(const Digest&, const Digest&) = default;
};

Digest hash128(std::string_view bytes);

// hash128 over bytes given in pieces: update(a); update(b); finish() == hash128(a + b). For files
// too big to hold in memory (cache packs).
class Hasher128 {
 public:
  void update(std::string_view bytes);
  Digest finish() const;

 private:
  void mixBlock(const unsigned char* block);

  uint64_t h1_ = 0, h2_ = 0;
  uint64_t length_ = 0;
  unsigned char tail_[16] = {};
  size_t tailBytes_ = 0;
};

// Hash functor for unordered containers keyed by Digest (the digest is already uniform).
struct DigestHash {
  size_t operator()(const Digest& d) const noexcept { return static_cast<size_t>(d.lo ^ d.hi); }
};

enum class EntryKind : uint8_t {
  kKernelBinary = 1,  // a cubin/PTX produced by NVRTC
  kTuningRecord = 2,  // chosen schedule params for (group, bucket)
  kCapture = 3,       // a captured graph in IR text (jit/runtime/capture_cache.h)
};
std::string_view toString(EntryKind kind);

// Note [Cache key contents]
// A key must change whenever the bytes it names could change, and nothing else should change it:
//   kind            a kernel binary and a tuning record never share an entry, even for equal
//   inputs. sourceHash      digest of the full CUDA source text (kernel) or of the record's
//   identity
//                   (tuning: group signature + bucket). The source embeds every schedule param.
//   options         NVRTC options in order (-arch, --std, fast-math, -default-device, ...): the
//                   same source compiled with other flags is another binary.
//   arch            "sm_90" etc. A cubin for sm_80 must never be loaded on sm_90 (and vice versa);
//                   keeping it in the key makes another arch's entry a plain miss, not corruption.
//   nvrtcVersion    "12.4": a new compiler may emit different (or newer-PTX-ISA) code.
//   codegenVersion  bumped by kiln when codegen or the runtime ABI of kernels (argument packing,
//                   helper headers) changes in a way the source text alone might not show.
// The on-disk format version is not part of the key: it selects the directory (<root>/v<N>).
// The digest is hash128 over keyText(), an unambiguous text form (values escaped) that is also
// stored in each entry's header and compared on read, so a digest collision reads as a key
// mismatch rather than as the wrong kernel.
struct CacheKey {
  EntryKind kind = EntryKind::kKernelBinary;
  Digest sourceHash;
  std::vector<std::string> options;
  std::string arch;
  std::string nvrtcVersion;
  uint32_t codegenVersion = 0;

  static CacheKey kernel(std::string_view source, std::vector<std::string> options,
                         std::string arch, std::string nvrtcVersion, uint32_t codegenVersion);
  // Tuning records depend on the group and bucket (groupSignature should identify the group's
  // computation, e.g. its codegen-independent hash), the arch and kiln's codegen version; not on
  // NVRTC flags.
  static CacheKey tuningRecord(std::string_view groupSignature, std::string_view bucket,
                               std::string arch, uint32_t codegenVersion);

  // A captured program: `fingerprint` names the module code, its params' names/types and the
  // guard family; `formatVersion` the payload format.
  static CacheKey capture(std::string_view fingerprint, uint32_t formatVersion);

  std::string keyText() const;
  Digest digest() const { return hash128(keyText()); }

  friend bool operator==(const CacheKey&, const CacheKey&) = default;
};

// Pulls "arch" and "kind" back out of a stored keyText() for listings; empty if absent.
std::string keyTextField(std::string_view keyText, std::string_view field);

}  // namespace kiln::cache

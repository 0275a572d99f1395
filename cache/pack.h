#pragma once
// Cache packs: a disk cache's entries in one checksummed file, for copying a cache between
// machines (kiln-cache export / import; Note [Cache packs]).
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "cache/cache_key.h"
#include "cache/disk_store.h"
#include "src/support/error.h"

namespace kiln::cache {

// Note [Cache packs]
// A pack holds the verified entries of one cache, each as the exact bytes of its entry file (Note
// [Disk store layout]), so that an import publishes byte for byte what was exported. Integers are
// little-endian:
//   magic "KILNPACK" | u32 pack format version (kPackFormatVersion) | u32 entry format version
//   (kFormatVersion) | u32 n | n bytes: kiln::version() of the exporter |
//   entries: { u64 digest.hi | u64 digest.lo | u64 size | size bytes: the entry file } ... |
//   u64 entry count | u64 checksum.hi | u64 checksum.lo
// The checksum is hash128 over every byte before it. The count is in the trailer so that an export
// streams: it learns which entries verify only as it reads them.
//
// Export lists the store and reads each entry through DiskStore::readEntryFile (the store's
// untrusted-file reading, Note [Entry files are untrusted]); entries that do not decode against
// their digest are left out and reported. The pack is written to a temp file beside FILE, fsynced
// and renamed onto FILE; an existing FILE is refused unless `overwrite`, also when it appears
// during the export (the rename does not replace then). On any failure FILE is left as it was.
//
// Import first reads the magic and the two format versions (they say how to read the rest), then
// the whole pack: its layout, sizes and checksum (checkPack() is this pass alone). Any fault
// refuses the pack before anything is written. Only then does a second pass publish each entry
// through DiskStore::putEntryFile, which decodes it against its digest again (an entry that fails
// is rejected and counted, the others go in), keeps a valid entry already present (never
// replaced, even by other bytes) and publishes atomically. Two passes keep memory at one entry
// however big the pack is; the second checks the checksum again, so a pack changed in between is
// reported (what went in was verified entry by entry). The pack's kiln version is informational:
// entries are readable by any kiln with the same entry format version, and their keys name the
// compiler and codegen versions.
inline constexpr uint32_t kPackFormatVersion = 1;

// A pack that cannot be written or read; the message names the file and what was wrong.
class PackError : public UserError {
 public:
  using UserError::UserError;
};

struct PackExportSummary {
  uint64_t entries = 0;
  uint64_t bytes = 0;  // of the pack file
  // Entries left out because they do not verify, with the reason.
  std::vector<std::pair<std::filesystem::path, EntryStatus>> skipped;
};

// Writes the verified entries of `store` into `file` (Note [Cache packs]). Throws PackError if the
// store has no usable disk, if `file` exists and !overwrite, or if it cannot be written; then
// `file` is unchanged.
PackExportSummary exportPack(const DiskStore& store, const std::filesystem::path& file,
                             bool overwrite);

struct PackImportSummary {
  std::string packKilnVersion;  // kiln::version() of the exporter, as the pack says
  uint64_t imported = 0;
  uint64_t alreadyPresent = 0;
  std::vector<std::pair<Digest, EntryStatus>> rejected;  // entries that do not verify
  uint64_t writeFailures = 0;
};

// Checks all of `file` as importPack() does first (Note [Cache packs]) and writes nothing. Returns
// the exporter's kiln version; throws PackError, naming what is wrong, for anything but a complete,
// intact pack of this format.
std::string checkPack(const std::filesystem::path& file);

// Checks all of `file` and then publishes its entries into `store` (Note [Cache packs]). Throws
// PackError, having written nothing, if the store is not writable or `file` is not a pack of this
// format, is truncated or fails its checksum.
PackImportSummary importPack(DiskStore& store, const std::filesystem::path& file);

}  // namespace kiln::cache

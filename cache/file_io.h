#pragma once
// Little-endian integers and whole-buffer descriptor I/O, shared by the cache's file formats (the
// disk store's entries and cache packs). Internal to kiln's cache.
#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>

#include <unistd.h>

namespace kiln::cache::detail {

inline void putU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void putU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
// The `bytes`-byte little-endian integer at `offset`; the caller checks the bounds.
inline uint64_t getLE(std::string_view s, size_t offset, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[offset + i]);
  return v;
}

// Reads a whole file from an open descriptor. False on an I/O error.
inline bool readAll(int fd, std::string& out) {
  out.clear();
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) return true;
    out.append(buf, static_cast<size_t>(n));
  }
}

// Writes everything or returns the errno of the failure.
inline int writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

}  // namespace kiln::cache::detail

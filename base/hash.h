// SplitMix64's finaliser (Steele, Lea and Flood, OOPSLA 2014): a cheap 64-bit permutation in which
// every input bit moves every output bit. For hashing and checksums that stay inside this process
// or its own files, never for security.
#ifndef GRIFFIN_BASE_HASH_H_
#define GRIFFIN_BASE_HASH_H_

#include <cstdint>

namespace griffin {

inline uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace griffin

#endif  // GRIFFIN_BASE_HASH_H_

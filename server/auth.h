// API keys for both front ends (DESIGN.md "Security", RELIABILITY.md SEC-6, OPS-4).
//
// Keys come from `--api_key_file` (one key per line, optionally followed by whitespace and a
// tenant name; `#` starts a comment line) and from the environment variable GRIFFIN_API_KEY (one
// key). A key without a tenant name is its own tenant, named "key-" + the first 12 hex digits of
// the key's SHA-256 (stable across reloads, says nothing useful about the key). The file is read
// again on SIGHUP: a key removed from it is refused from the next request on.
//
// Only SHA-256 digests of the keys are kept in memory. A presented key is hashed and compared
// with every stored digest in constant time (CRYPTO_memcmp, no early exit), so neither the
// position of a mismatch nor which key matched shows in the time taken. No key, digest or
// presented credential is ever logged or put in an error message.
#ifndef GRIFFIN_SERVER_AUTH_H_
#define GRIFFIN_SERVER_AUTH_H_

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace griffin::server {

class ApiKeys {
 public:
  struct Entry {
    std::array<unsigned char, 32> digest;  // SHA-256 of the key
    std::string tenant;
  };

  // No keys: every request is allowed (Authenticate answers the tenant "").
  ApiKeys() = default;

  // Reads `file` (may be empty: no file) and `env_key` (may be empty). INVALID_ARGUMENT naming the
  // line for a malformed line, a duplicate key or a bad tenant name; NOT_FOUND if the file cannot
  // be read; FAILED_PRECONDITION if a file was given but holds no key. On error the keys held so
  // far are unchanged.
  absl::Status Load(const std::string& file, const std::string& env_key);
  // Reads the same sources again (SIGHUP). A reload that fails, or that would leave no key at
  // all (which would switch authentication off), keeps the previous keys and returns the error.
  absl::Status Reload();

  // True when at least one key is configured: requests must then present one.
  bool enabled() const;
  int size() const;

  // The tenant of `key`, or nullopt when it matches no configured key. With no keys configured,
  // returns "". Thread-safe (concurrent with Reload); time independent of where `key` differs.
  std::optional<std::string> Authenticate(std::string_view key) const;

  // The credential of an `Authorization` header (HTTP) or metadata value (gRPC): the text after
  // "Bearer " (scheme case-insensitive). nullopt for another scheme or a malformed value.
  static std::optional<std::string_view> BearerToken(std::string_view authorization);

  // Parses the text of a key file (exposed for tests). Same errors as Load.
  static absl::StatusOr<std::vector<Entry>> ParseKeyFile(std::string_view text);
  // The tenant name of a key given without one.
  static std::string FingerprintTenant(std::string_view key);

 private:
  absl::StatusOr<std::vector<Entry>> Read() const;

  std::string file_;
  std::string env_key_;
  mutable std::mutex mu_;
  std::shared_ptr<const std::vector<Entry>> entries_;  // guarded by mu_; replaced whole on reload
};

}  // namespace griffin::server

#endif  // GRIFFIN_SERVER_AUTH_H_

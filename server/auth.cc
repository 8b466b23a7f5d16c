#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace griffin::server {
namespace {

// Debian's Abseil has its own string_view type (not std::string_view).
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view Sv(absl::string_view s) { return std::string_view(s.data(), s.size()); }

std::array<unsigned char, 32> Sha256(std::string_view text) {
  std::array<unsigned char, 32> out{};
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

// A key is visible ASCII without spaces (what fits in an HTTP header and a gRPC metadata value).
bool IsValidKey(std::string_view key) {
  if (key.empty() || key.size() > 1024) return false;
  for (unsigned char c : key) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

bool IsValidTenant(std::string_view tenant) {
  if (tenant.empty() || tenant.size() > 64) return false;
  for (unsigned char c : tenant) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '_' && c != '-' && c != '@') return false;
  }
  return true;
}

}  // namespace

std::string ApiKeys::FingerprintTenant(std::string_view key) {
  const std::array<unsigned char, 32> d = Sha256(key);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "key-";
  for (int i = 0; i < 6; ++i) {
    out += kHex[d[i] >> 4];
    out += kHex[d[i] & 15];
  }
  return out;
}

absl::StatusOr<std::vector<ApiKeys::Entry>> ApiKeys::ParseKeyFile(std::string_view text) {
  std::vector<Entry> entries;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(Av(text), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    // Messages name the line, never its content (it holds a key).
    if (fields.size() > 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("api key file line ", line_number, ": expected KEY [TENANT]"));
    }
    if (!IsValidKey(Sv(fields[0]))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "api key file line ", line_number, ": a key is 1 to 1024 visible ASCII characters"));
    }
    std::string tenant;
    if (fields.size() == 2) {
      if (!IsValidTenant(Sv(fields[1]))) {
        return absl::InvalidArgumentError(absl::StrCat("api key file line ", line_number,
                                                       ": a tenant is 1 to 64 of [A-Za-z0-9._@-]"));
      }
      tenant = std::string(fields[1]);
    } else {
      tenant = FingerprintTenant(Sv(fields[0]));
    }
    Entry e{Sha256(Sv(fields[0])), std::move(tenant)};
    for (const Entry& other : entries) {
      if (other.digest == e.digest) {
        return absl::InvalidArgumentError(
            absl::StrCat("api key file line ", line_number, ": the same key appears twice"));
      }
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::StatusOr<std::vector<ApiKeys::Entry>> ApiKeys::Read() const {
  std::vector<Entry> entries;
  if (!file_.empty()) {
    std::ifstream in(file_, std::ios::binary);
    if (!in) return absl::NotFoundError("--api_key_file cannot be read");
    std::stringstream text;
    text << in.rdbuf();
    if (in.bad()) return absl::NotFoundError("--api_key_file cannot be read");
    absl::StatusOr<std::vector<Entry>> parsed = ParseKeyFile(text.str());
    if (!parsed.ok()) return parsed.status();
    if (parsed->empty()) {
      return absl::FailedPreconditionError("--api_key_file holds no key");
    }
    entries = std::move(*parsed);
  }
  if (!env_key_.empty()) {
    if (!IsValidKey(env_key_)) {
      return absl::InvalidArgumentError(
          "GRIFFIN_API_KEY must be 1 to 1024 visible ASCII characters");
    }
    Entry e{Sha256(env_key_), FingerprintTenant(env_key_)};
    for (const Entry& other : entries) {
      if (other.digest == e.digest) e.tenant = other.tenant;  // the same key in both: one tenant
    }
    entries.push_back(std::move(e));
  }
  return entries;
}

absl::Status ApiKeys::Load(const std::string& file, const std::string& env_key) {
  ApiKeys probe;
  probe.file_ = file;
  probe.env_key_ = env_key;
  absl::StatusOr<std::vector<Entry>> entries = probe.Read();
  if (!entries.ok()) return entries.status();
  std::lock_guard<std::mutex> lock(mu_);
  file_ = file;
  env_key_ = env_key;
  entries_ = std::make_shared<const std::vector<Entry>>(std::move(*entries));
  return absl::OkStatus();
}

absl::Status ApiKeys::Reload() {
  absl::StatusOr<std::vector<Entry>> entries = Read();
  if (!entries.ok()) return entries.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (entries->empty() && entries_ != nullptr && !entries_->empty()) {
    return absl::FailedPreconditionError("the reload would leave no key");
  }
  entries_ = std::make_shared<const std::vector<Entry>>(std::move(*entries));
  return absl::OkStatus();
}

bool ApiKeys::enabled() const { return size() > 0; }

int ApiKeys::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_ == nullptr ? 0 : static_cast<int>(entries_->size());
}

std::optional<std::string> ApiKeys::Authenticate(std::string_view key) const {
  std::shared_ptr<const std::vector<Entry>> entries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entries = entries_;
  }
  if (entries == nullptr || entries->empty()) return std::string();
  // Hashing first makes the comparison independent of the presented key's length; every stored
  // digest is compared, whichever matches.
  const std::array<unsigned char, 32> digest = Sha256(key);
  const Entry* match = nullptr;
  for (const Entry& e : *entries) {
    const bool equal = CRYPTO_memcmp(e.digest.data(), digest.data(), digest.size()) == 0;
    if (equal) match = &e;
  }
  if (match == nullptr) return std::nullopt;
  return match->tenant;
}

std::optional<std::string_view> ApiKeys::BearerToken(std::string_view header) {
  absl::string_view authorization = absl::StripAsciiWhitespace(Av(header));
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return std::nullopt;
  }
  absl::string_view token = absl::StripLeadingAsciiWhitespace(authorization.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  return Sv(token);
}

}  // namespace griffin::server

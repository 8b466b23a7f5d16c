// API keys (SEC-6, OPS-4): the key file format, reload and revocation, tenants, the Bearer
// header, and that errors never carry a key.
#include "server/auth.h"

#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"

namespace griffin::server {
namespace {

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ApiKeysTest, NoKeysMeansOpen) {
  ApiKeys keys;
  EXPECT_FALSE(keys.enabled());
  EXPECT_EQ(keys.Authenticate("anything"), std::optional<std::string>(""));
  ASSERT_TRUE(keys.Load("", "").ok());
  EXPECT_FALSE(keys.enabled());
}

TEST(ApiKeysTest, FileWithTenantsCommentsAndEnvironmentKey) {
  ApiKeys keys;
  const std::string file =
      WriteFile("keys1", "# team keys\n\nsecret-one   alice\n  secret-two\tbob  \nsecret-three\n");
  ASSERT_TRUE(keys.Load(file, "env-secret").ok());
  EXPECT_TRUE(keys.enabled());
  EXPECT_EQ(keys.size(), 4);
  EXPECT_EQ(keys.Authenticate("secret-one"), std::optional<std::string>("alice"));
  EXPECT_EQ(keys.Authenticate("secret-two"), std::optional<std::string>("bob"));
  EXPECT_EQ(keys.Authenticate("secret-three"),
            std::optional<std::string>(ApiKeys::FingerprintTenant("secret-three")));
  EXPECT_EQ(keys.Authenticate("env-secret"),
            std::optional<std::string>(ApiKeys::FingerprintTenant("env-secret")));
  for (const char* wrong : {"", "secret-on", "secret-one ", "SECRET-ONE", "alice", "secret-onex"}) {
    EXPECT_EQ(keys.Authenticate(wrong), std::nullopt) << wrong;
  }
  // The fingerprint names a tenant without revealing the key.
  const std::string tenant = ApiKeys::FingerprintTenant("secret-three");
  EXPECT_EQ(tenant.size(), 16u);
  EXPECT_EQ(tenant.find("secret"), std::string::npos);
}

TEST(ApiKeysTest, MalformedFilesNameTheLineNotTheKey) {
  struct Case {
    const char* text;
    const char* expected;
  };
  for (const Case& c :
       {Case{"zqgood a\nzqbad zqwith zqspaces\n", "line 2"}, Case{"zq1 t1\nzq1 t2\n", "line 2"},
        Case{"zq\x01zq\n", "line 1"}, Case{"zqkey zqtenant/slash\n", "line 1"}}) {
    absl::StatusOr<std::vector<ApiKeys::Entry>> parsed = ApiKeys::ParseKeyFile(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(parsed.status().message());
    EXPECT_NE(message.find(c.expected), std::string::npos) << message;
    EXPECT_EQ(message.find("zq"), std::string::npos) << message;  // no part of the line
  }
  ApiKeys keys;
  EXPECT_EQ(keys.Load("/nonexistent/keys", "").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(keys.Load(WriteFile("empty", "# nothing\n"), "").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(keys.Load("", "has space").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(keys.enabled());  // failed loads change nothing
}

TEST(ApiKeysTest, ReloadRevokesAndNeverLeavesTheServerOpen) {
  const std::string file = WriteFile("keys2", "first-key\nsecond-key\n");
  ApiKeys keys;
  ASSERT_TRUE(keys.Load(file, "").ok());
  ASSERT_TRUE(keys.Authenticate("first-key").has_value());
  WriteFile("keys2", "second-key\nthird-key t3\n");
  ASSERT_TRUE(keys.Reload().ok());
  EXPECT_FALSE(keys.Authenticate("first-key").has_value());  // revoked
  EXPECT_TRUE(keys.Authenticate("second-key").has_value());
  EXPECT_EQ(keys.Authenticate("third-key"), std::optional<std::string>("t3"));
  // A broken or empty file on reload keeps the previous keys.
  WriteFile("keys2", "broken key line here\n");
  EXPECT_FALSE(keys.Reload().ok());
  EXPECT_TRUE(keys.Authenticate("second-key").has_value());
  WriteFile("keys2", "");
  EXPECT_FALSE(keys.Reload().ok());
  EXPECT_TRUE(keys.enabled());
  std::remove(file.c_str());
  EXPECT_FALSE(keys.Reload().ok());
  EXPECT_TRUE(keys.Authenticate("third-key").has_value());
}

TEST(ApiKeysTest, BearerToken) {
  EXPECT_EQ(ApiKeys::BearerToken("Bearer abc"), std::optional<std::string_view>("abc"));
  EXPECT_EQ(ApiKeys::BearerToken("bearer   abc "), std::optional<std::string_view>("abc"));
  EXPECT_EQ(ApiKeys::BearerToken("BEARER abc"), std::optional<std::string_view>("abc"));
  EXPECT_EQ(ApiKeys::BearerToken("Basic abc"), std::nullopt);
  EXPECT_EQ(ApiKeys::BearerToken("Bearer"), std::nullopt);
  EXPECT_EQ(ApiKeys::BearerToken("Bearer "), std::nullopt);
  EXPECT_EQ(ApiKeys::BearerToken("abc"), std::nullopt);
}

}  // namespace
}  // namespace griffin::server

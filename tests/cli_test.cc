// griffin-cli as a user runs it: a separate process, its stdout, stderr and exit code.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/random_checkpoint.h"
#include "gtest/gtest.h"
#include "loader/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/golden_data.h"

namespace griffin {
namespace {

struct Result {
  int exit_code = -1;
  std::string out, err;
};

Result RunCli(const std::string& args) {
  const std::string err_path =
      (std::filesystem::temp_directory_path() / absl::StrCat("griffin_cli_err_", getpid()))
          .string();
  const std::string command = absl::StrCat(GRIFFIN_CLI, " ", args, " 2>", err_path);
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) r.out.append(buffer, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path);
  r.err.assign(std::istreambuf_iterator<char>(err), {});
  std::filesystem::remove(err_path);
  return r;
}

std::string Fixture(const std::string& name) { return golden::FixtureDir(name); }

class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_((std::filesystem::temp_directory_path() /
               absl::StrCat("griffin_cli_", tag, "_", getpid()))
                  .string()) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The recurrentgemma-2b config.json as published on the hub (SPEC.md §1.2).
constexpr char k2BConfig[] = R"({
  "_block_types": ["recurrent", "recurrent", "attention"], "attention_bias": false,
  "attention_window_size": 2048, "conv1d_width": 4, "embeddings_scale_by_sqrt_dim": true,
  "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2560,
  "intermediate_size": 15360, "logits_soft_cap": 30.0, "lru_width": 2560,
  "num_attention_heads": 10, "num_hidden_layers": 26, "num_key_value_heads": 1,
  "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
  "vocab_size": 256000})";

TEST(CliTest, InfoOnConfigAloneReports2BFigures) {
  TempDir dir("info");
  std::ofstream(dir.path() + "/config.json") << k2BConfig;
  Result r = RunCli(absl::StrCat("info --model ", dir.path()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("2,682,862,080"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("16.44 MiB"), std::string::npos) << r.out;

  Result j = RunCli(absl::StrCat("info --json --model ", dir.path()));
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto info = nlohmann::json::parse(j.out);
  EXPECT_EQ(info["parameters"].get<int64_t>(), 2682862080);
  EXPECT_EQ(info["state_bytes_per_sequence_bf16"].get<int64_t>(), 17238016);
  EXPECT_EQ(info["block_pattern"].get<std::string>(), "RRARRARRARRARRARRARRARRARR");
}

// `griffin-cli score` reproduces the reference's log-probabilities, by prefill, decode and chunks.
TEST(CliTest, ScoreReproducesGolden) {
  for (const std::string name : {"griffin", "hawk", "attnfirst"}) {
    std::ifstream config_file(Fixture(name) + "/config.json");
    const int vocab = nlohmann::json::parse(config_file)["vocab_size"].get<int>();
    auto loaded = golden::LoadGolden(Fixture(name), vocab);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    for (const golden::GoldenSequence& g : *loaded) {
      const std::vector<int32_t>& tokens = g.tokens;
      const std::vector<float>& logprobs = g.logprobs;  // the fixtures hold every position
      const std::string ids = absl::StrJoin(tokens, ",");
      for (const std::string mode : {"", "--decode", "--chunk 3"}) {
        Result r = RunCli(absl::StrCat("score --model ", Fixture(name), " --ids ", ids, " ", mode));
        ASSERT_EQ(r.exit_code, 0) << r.err;
        auto out = nlohmann::json::parse(r.out);
        const auto& positions = out["positions"];
        ASSERT_EQ(positions.size(), tokens.size());
        for (size_t t = 0; t + 1 < tokens.size(); ++t) {
          const float expected = logprobs[t * vocab + tokens[t + 1]];
          EXPECT_NEAR(positions[t]["logprob"].get<double>(), expected, 1e-4)
              << name << " " << mode << " position " << t;
          // The argmax is the golden row's largest entry (up to float ties).
          const int argmax = positions[t]["argmax"].get<int>();
          float best = -INFINITY;
          for (int v = 0; v < vocab; ++v) best = std::max(best, logprobs[t * vocab + v]);
          EXPECT_NEAR(logprobs[t * vocab + argmax], best, 1e-4);
        }
      }
    }
  }
}

TEST(CliTest, GenerateIdsIsDeterministicPerSeed) {
  const std::string base =
      absl::StrCat("generate --model ", Fixture("hawk"),
                   " --ids 2,10,11,12 --max_tokens 12 --output_ids --ignore_eos");
  Result greedy = RunCli(base);
  ASSERT_EQ(greedy.exit_code, 0) << greedy.err;
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(greedy.out, '\n', absl::SkipEmpty())).size(),
            12u);
  EXPECT_EQ(RunCli(base).out, greedy.out);

  Result a = RunCli(base + " --temperature 1 --seed 7");
  Result b = RunCli(base + " --temperature 1 --seed 7");
  Result c = RunCli(base + " --temperature 1 --seed 8");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(CliTest, GenerateTextWithTokenizer) {
  ASSERT_TRUE(std::filesystem::exists(Fixture("griffin") + "/tokenizer.model"));
  // Greedy text generation prints the continuation alone: exactly the text of the 16 ids the same
  // request prints with --output_ids, then a newline.
  const std::string base = absl::StrCat("generate --model ", Fixture("griffin"),
                                        " --prompt 'The licence' --max_tokens 16 --ignore_eos");
  Result r = RunCli(base);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Result ids = RunCli(base + " --output_ids");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  const std::vector<std::string> lines = absl::StrSplit(ids.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 16u) << ids.out;
  auto tokenizer = loader::Tokenizer::Load(Fixture("griffin") + "/tokenizer.model");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<int> generated;
  for (const std::string& line : lines) generated.push_back(std::stoi(line));
  const std::string text = (*tokenizer)->Decode(generated);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(r.out, text + "\n");
  Result s = RunCli(absl::StrCat("score --model ", Fixture("griffin"), " --text 'The licence'"));
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto out = nlohmann::json::parse(s.out);
  EXPECT_EQ(out["positions"][0]["token"].get<int>(), 2);  // BOS prepended
}

TEST(CliTest, ErrorsAreOneLineAndNonZero) {
  struct Case {
    std::string args;
    int code;
    std::string needle;
  };
  TempDir empty("empty");
  const std::vector<Case> cases = {
      {"", 2, "expected one command"},
      {"frobnicate --model x", 2, "unknown command"},
      {"info", 1, "--model is required"},
      {"info --model " + empty.path(), 1, "config.json"},
      {"score --model " + Fixture("hawk") + " --ids 2,x,3", 1, "not an integer"},
      {"score --model " + Fixture("hawk") + " --ids 2,99999", 1, "out of range"},
      {"score --model " + Fixture("hawk") + " --text hello", 1, "no tokenizer.model"},
      {"score --model " + Fixture("hawk") + " --ids 2,3 --chunk -1", 1, "--chunk"},
      {"generate --model " + Fixture("hawk") + " --ids 2 --top_p 0", 1, "--top_p"},
      {"generate --model " + Fixture("hawk") + " --ids 2 --temperature -1", 1, "--temperature"},
      {"generate --model " + Fixture("hawk") + " --ids 2 --max_tokens 0", 1, "--max_tokens"},
  };
  for (const Case& c : cases) {
    Result r = RunCli(c.args);
    EXPECT_EQ(r.exit_code, c.code) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << " → " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << " → " << r.err;
  }
}

// A checkpoint whose tensors do not match its config fails at load, naming the tensor (LDR-2).
TEST(CliTest, MismatchedCheckpointFailsAtLoad) {
  TempDir dir("mismatch");
  loader::ModelConfig config = engine::TinyConfig({loader::BlockType::kRecurrent}, 2, 4);
  ASSERT_TRUE(engine::WriteRandomCheckpoint(dir.path(), config, 1).ok());
  config.lru_width = 48;  // the file holds 40-wide recurrent tensors
  std::ofstream(dir.path() + "/config.json") << engine::ConfigJson(config);
  Result r = RunCli(absl::StrCat("score --model ", dir.path(), " --ids 2,3"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("FAILED_PRECONDITION"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.layers.0.temporal_block"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace griffin

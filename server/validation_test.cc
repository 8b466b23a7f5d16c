// Table tests for request validation (RELIABILITY.md VAL-1, -2, -4, -5, -7, TXT-1, TXT-7, LEN-1).
#include "server/validation.h"

#include <cmath>
#include <functional>
#include <limits>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace griffin::server {
namespace {

class ValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = loader::Tokenizer::Load(std::string(GRIFFIN_SOURCE_DIR) +
                                     "/tests/data/griffin/tokenizer.model");
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
    model_ = {.vocab_size = 512, .bos_id = 2, .eos_id = 1, .pad_id = 0};
    limits_.max_prompt_tokens = 10;
    limits_.max_output_tokens = 100;
  }
  GenerateInput Ok() {
    GenerateInput in;
    in.token_ids = std::vector<int64_t>{2, 17, 33};
    return in;
  }
  absl::Status Check(const GenerateInput& in) {
    return ValidateGenerate(in, limits_, model_, tokenizer_.get()).status();
  }
  std::unique_ptr<loader::Tokenizer> tokenizer_;
  ModelLimits model_;
  Limits limits_;
};

struct Case {
  const char* name;
  std::function<void(GenerateInput&)> edit;
  const char* field;  // nullptr: valid
};

TEST_F(ValidationTest, Table) {
  const double nan = std::nan(""), inf = std::numeric_limits<double>::infinity();
  const std::vector<Case> cases = {
      {"valid", [](GenerateInput&) {}, nullptr},
      {"temperature<0", [](GenerateInput& i) { i.temperature = -0.1; }, "temperature"},
      {"temperature nan", [&](GenerateInput& i) { i.temperature = nan; }, "temperature"},
      {"temperature inf", [&](GenerateInput& i) { i.temperature = inf; }, "temperature"},
      {"temperature -inf", [&](GenerateInput& i) { i.temperature = -inf; }, "temperature"},
      {"temperature 1e-8", [](GenerateInput& i) { i.temperature = 1e-8; }, nullptr},
      {"top_p 0", [](GenerateInput& i) { i.top_p = 0.0; }, "top_p"},
      {"top_p >1", [](GenerateInput& i) { i.top_p = 1.0001; }, "top_p"},
      {"top_p nan", [&](GenerateInput& i) { i.top_p = nan; }, "top_p"},
      {"top_p 1e-8", [](GenerateInput& i) { i.top_p = 1e-8; }, nullptr},
      {"top_k -2", [](GenerateInput& i) { i.top_k = -2; }, "top_k"},
      {"top_k 0", [](GenerateInput& i) { i.top_k = 0; }, "top_k"},
      {"top_k -1", [](GenerateInput& i) { i.top_k = -1; }, nullptr},
      {"top_k huge", [](GenerateInput& i) { i.top_k = std::numeric_limits<int64_t>::max(); },
       nullptr},
      {"repetition 0", [](GenerateInput& i) { i.repetition_penalty = 0.0; }, "repetition_penalty"},
      {"repetition nan", [&](GenerateInput& i) { i.repetition_penalty = nan; },
       "repetition_penalty"},
      {"presence 2.1", [](GenerateInput& i) { i.presence_penalty = 2.1; }, "presence_penalty"},
      {"presence -2", [](GenerateInput& i) { i.presence_penalty = -2.0; }, nullptr},
      {"frequency -2.1", [](GenerateInput& i) { i.frequency_penalty = -2.1; }, "frequency_penalty"},
      {"min_p -0.1", [](GenerateInput& i) { i.min_p = -0.1; }, "min_p"},
      {"min_p 1.1", [](GenerateInput& i) { i.min_p = 1.1; }, "min_p"},
      {"max_tokens 0", [](GenerateInput& i) { i.max_tokens = 0; }, "max_tokens"},
      {"max_tokens -1", [](GenerateInput& i) { i.max_tokens = -1; }, "max_tokens"},
      {"max_tokens limit", [](GenerateInput& i) { i.max_tokens = 100; }, nullptr},
      {"max_tokens limit+1", [](GenerateInput& i) { i.max_tokens = 101; }, "max_tokens"},
      {"max_tokens int64 max",
       [](GenerateInput& i) { i.max_tokens = std::numeric_limits<int64_t>::max(); }, "max_tokens"},
      {"min_tokens > max",
       [](GenerateInput& i) {
         i.max_tokens = 5;
         i.min_tokens = 6;
       },
       "min_tokens"},
      {"n 0", [](GenerateInput& i) { i.n = 0; }, "n"},
      {"n max", [](GenerateInput& i) { i.n = 8; }, nullptr},
      {"n max+1", [](GenerateInput& i) { i.n = 9; }, "n"},
      {"top_logprobs max", [](GenerateInput& i) { i.top_logprobs = 20; }, nullptr},
      {"top_logprobs max+1", [](GenerateInput& i) { i.top_logprobs = 21; }, "top_logprobs"},
      {"stop count max+1", [](GenerateInput& i) { i.stop.assign(17, "x"); }, "stop"},
      {"stop count max", [](GenerateInput& i) { i.stop.assign(16, "x"); }, nullptr},
      {"stop too long", [](GenerateInput& i) { i.stop = {std::string(257, 'a')}; }, "stop"},
      {"stop empty", [](GenerateInput& i) { i.stop = {""}; }, "stop"},
      {"stop bad utf8", [](GenerateInput& i) { i.stop = {"\xff"}; }, "stop"},
      {"stop NUL ok", [](GenerateInput& i) { i.stop = {std::string("a\0b", 3)}; }, nullptr},
      {"stop id -1", [](GenerateInput& i) { i.stop_token_ids = {-1}; }, "stop_token_ids"},
      {"stop id vocab", [](GenerateInput& i) { i.stop_token_ids = {512}; }, "stop_token_ids"},
      {"stop id vocab-1", [](GenerateInput& i) { i.stop_token_ids = {511}; }, nullptr},
      {"prompt id -1",
       [](GenerateInput& i) {
         i.token_ids = std::vector<int64_t>{2, -1};
       },
       "prompt"},
      {"prompt id vocab",
       [](GenerateInput& i) {
         i.token_ids = std::vector<int64_t>{2, 512};
       },
       "prompt"},
      {"prompt id vocab+1",
       [](GenerateInput& i) {
         i.token_ids = std::vector<int64_t>{2, 513};
       },
       "prompt"},
      {"prompt id 2^31-1", [](GenerateInput& i) { i.token_ids = std::vector<int64_t>{2147483647}; },
       "prompt"},
      {"prompt id 2^32-1", [](GenerateInput& i) { i.token_ids = std::vector<int64_t>{4294967295}; },
       "prompt"},
      {"prompt empty ids", [](GenerateInput& i) { i.token_ids = std::vector<int64_t>{}; },
       "prompt"},
      {"prompt only special",
       [](GenerateInput& i) {
         i.token_ids = std::vector<int64_t>{2, 1, 0};
       },
       "prompt"},
      {"prompt limit", [](GenerateInput& i) { i.token_ids = std::vector<int64_t>(10, 7); },
       nullptr},
      {"prompt limit+1", [](GenerateInput& i) { i.token_ids = std::vector<int64_t>(11, 7); },
       "prompt"},
      {"both inputs", [](GenerateInput& i) { i.text = "hi"; }, "prompt"},
      {"no input", [](GenerateInput& i) { i.token_ids.reset(); }, "prompt"},
      {"text empty",
       [](GenerateInput& i) {
         i.token_ids.reset();
         i.text = "";
       },
       "prompt"},
      {"text whitespace",
       [](GenerateInput& i) {
         i.token_ids.reset();
         i.text = " \t\n ";
       },
       "prompt"},
      {"text bad utf8",
       [](GenerateInput& i) {
         i.token_ids.reset();
         i.text = "ab\xc3";
       },
       "prompt"},
      {"text surrogate",
       [](GenerateInput& i) {
         i.token_ids.reset();
         i.text = "\xed\xa0\x80";
       },
       "prompt"},
      {"text ok",
       [](GenerateInput& i) {
         i.token_ids.reset();
         i.text = "hello";
       },
       nullptr},
      {"text NUL emoji",
       [](GenerateInput& i) {
         i.token_ids.reset();
         i.text = std::string("a\0\xf0\x9f\x98\x80\r\n\t", 9);
       },
       nullptr},
      {"text over limit",
       [](GenerateInput& i) {
         i.token_ids.reset();
         i.text = std::string(200, 'z') + " y x w v u t";
       },
       "prompt"},
  };
  for (const Case& c : cases) {
    GenerateInput in = Ok();
    c.edit(in);
    absl::Status s = Check(in);
    if (c.field == nullptr) {
      EXPECT_TRUE(s.ok()) << c.name << ": " << s;
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.name;
      EXPECT_EQ(std::string(s.message()).rfind(c.field, 0), 0u) << c.name << ": " << s.message();
    }
  }
}

TEST_F(ValidationTest, ErrorsNeverEchoUserBytes) {  // TXT-7
  const std::string hostile = "\x1b[31m/etc/passwd\n<script>";
  for (auto edit : std::vector<std::function<void(GenerateInput&)>>{
           [&](GenerateInput& i) {
             i.token_ids.reset();
             i.text = hostile + "\xff";
           },
           [&](GenerateInput& i) { i.stop = {hostile + "\xff"}; },
           [&](GenerateInput& i) { i.stop = {hostile + std::string(300, 'a')}; }}) {
    GenerateInput in = Ok();
    edit(in);
    absl::Status s = Check(in);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(std::string(s.message()).find("passwd"), std::string::npos) << s;
    EXPECT_EQ(std::string(s.message()).find('\x1b'), std::string::npos) << s;
  }
}

TEST_F(ValidationTest, DefaultsAndBosForText) {
  GenerateInput in;
  in.text = "hello";
  auto v = ValidateGenerate(in, limits_, model_, tokenizer_.get());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->request.prompt[0], 2);
  EXPECT_EQ(v->request.max_tokens, 100);  // default_max_tokens capped by max_output_tokens
  EXPECT_EQ(v->n, 1);
  EXPECT_FALSE(v->seeded);
}

TEST_F(ValidationTest, ChatTemplateUsesTurnMarkers) {
  auto ids = ApplyGemmaChatTemplate({{"user", "Hi there"}}, *tokenizer_, 2);
  ASSERT_TRUE(ids.ok()) << ids.status();
  const int start = tokenizer_->PieceToId("<start_of_turn>");
  const int end = tokenizer_->PieceToId("<end_of_turn>");
  ASSERT_GE(start, 0);
  EXPECT_EQ((*ids)[0], 2);
  EXPECT_EQ((*ids)[1], start);
  EXPECT_NE(std::find(ids->begin(), ids->end(), end), ids->end());
  EXPECT_EQ(ApplyGemmaChatTemplate({{"robot", "x"}}, *tokenizer_, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyGemmaChatTemplate({{"user", "  "}}, *tokenizer_, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ApplyGemmaChatTemplate({}, *tokenizer_, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RequestIdTest, Charset) {
  EXPECT_TRUE(IsValidRequestId("abc-1.2_x:y"));
  EXPECT_FALSE(IsValidRequestId(""));
  EXPECT_FALSE(IsValidRequestId(std::string(65, 'a')));
  EXPECT_FALSE(IsValidRequestId("../etc"));
  EXPECT_FALSE(IsValidRequestId("a b"));
}

// TXT-6: non-finite log-probabilities still serialise as valid JSON numbers.
TEST(LogprobJsonTest, NonFiniteValuesBecomeTheFloor) {
  EXPECT_EQ(LogprobForJson(-1.5f), -1.5);
  EXPECT_EQ(LogprobForJson(0.0f), 0.0);
  EXPECT_EQ(LogprobForJson(-std::numeric_limits<float>::infinity()), -9999.0);
  EXPECT_EQ(LogprobForJson(std::numeric_limits<float>::quiet_NaN()), -9999.0);
  EXPECT_EQ(LogprobForJson(-1e30f), -9999.0);
  nlohmann::json j = {{"logprob", LogprobForJson(-std::numeric_limits<float>::infinity())}};
  const nlohmann::json back = nlohmann::json::parse(j.dump());
  EXPECT_TRUE(back["logprob"].is_number());
}

}  // namespace
}  // namespace griffin::server

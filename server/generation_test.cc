// Generation (server/generation.cc) on a real EngineCore whose backend plays a fixed script of
// token ids: stop strings matched across token boundaries and never emitted (TXT-5), the hold-back
// of a tail that could begin a stop string and its flush at the end of the stream, the choice
// among several stop strings, stop ids, and the finish reasons and usage that reach the client.
// The tokenizer is the fixture's (tests/data/griffin), whose byte-fallback pieces <0xNN> let a
// script spell any text one byte per token.
#include "server/generation.h"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "engine/engine_core.h"
#include "gtest/gtest.h"
#include "loader/tokenizer.h"
#include "server/metrics.h"

namespace griffin::server {
namespace {

// The greedy next token after position p of a one-token prompt is script[p] (a filler past its end).
class ScriptedBackend : public engine::Backend {
 public:
  ScriptedBackend(int vocab, std::vector<int32_t> script, int32_t filler)
      : script_(std::move(script)), filler_(filler), positions_(2, 0) {
    config_.vocab_size = vocab;
    config_.eos_token_id = 1;
    config_.bos_token_id = 2;
  }
  std::string_view name() const override { return "scripted"; }
  const loader::ModelConfig& config() const override { return config_; }
  int num_slots() const override { return static_cast<int>(positions_.size()); }
  int64_t state_bytes_per_sequence() const override { return 8; }
  absl::Status Step(absl::Span<const engine::StepEntry> entries,
                    absl::Span<float> logits) override {
    const int vocab = config_.vocab_size;
    int64_t row = 0;
    for (const engine::StepEntry& e : entries) {
      if (e.position != positions_[e.slot]) return absl::InvalidArgumentError("position");
      positions_[e.slot] += static_cast<int64_t>(e.tokens.size());
      if (e.logits == engine::LogitsRequest::kNone) continue;
      const size_t next = static_cast<size_t>(positions_[e.slot] - 1);
      const int32_t token = next < script_.size() ? script_[next] : filler_;
      for (int i = 0; i < vocab; ++i) logits[row * vocab + i] = i == token ? 10.0f : -10.0f;
      ++row;
    }
    return absl::OkStatus();
  }
  absl::Status ResetSlot(int slot) override {
    positions_[slot] = 0;
    return absl::OkStatus();
  }
  int64_t NextPosition(int slot) const override { return positions_[slot]; }

 private:
  loader::ModelConfig config_;
  std::vector<int32_t> script_;
  int32_t filler_;
  std::vector<int64_t> positions_;
};

struct Outcome {
  std::vector<std::string> texts;  // the text of each event, in order
  std::string text;                // all of it
  std::vector<int32_t> token_ids;
  Generation::Event final;
};

class GenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = loader::Tokenizer::Load(std::string(GRIFFIN_SOURCE_DIR) +
                                     "/tests/data/griffin/tokenizer.model");
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
  }

  // One token per byte of `text` (byte-fallback pieces).
  std::vector<int32_t> Bytes(const std::string& text) {
    std::vector<int32_t> ids;
    for (unsigned char c : text) {
      const int id = tokenizer_->PieceToId(absl::StrFormat("<0x%02X>", c));
      EXPECT_GE(id, 0) << "no byte piece for " << int(c);
      ids.push_back(id);
    }
    return ids;
  }

  // Runs the script through a fresh engine and Generation; `max_tokens` 0: the script's length.
  Outcome Run(const std::vector<int32_t>& script, std::vector<std::string> stops,
              std::vector<int32_t> stop_ids = {}, int max_tokens = 0) {
    Outcome outcome;
    auto core = engine::EngineCore::Create(
        std::make_unique<ScriptedBackend>(tokenizer_->vocab_size(), script, Bytes(".")[0]), {});
    EXPECT_TRUE(core.ok()) << core.status();
    if (!core.ok()) return outcome;
    Metrics metrics("scripted");
    ServerState state;
    state.engine = core->get();
    state.tokenizer = tokenizer_.get();
    state.metrics = &metrics;
    engine::ValidatedRequest request;
    request.prompt = {2};
    request.sampling.temperature = 0.0f;
    request.max_tokens = max_tokens > 0 ? max_tokens : static_cast<int>(script.size());
    request.stop_token_ids = std::move(stop_ids);
    request.ignore_eos = true;

    std::mutex mu;
    std::condition_variable cv;
    bool ready = false;
    auto generation = Generation::Start(&state, std::move(request), std::move(stops), "test-1",
                                        /*owner=*/"", "test", [&] {
                                          std::lock_guard<std::mutex> lock(mu);
                                          ready = true;
                                          cv.notify_all();
                                        });
    EXPECT_TRUE(generation.ok()) << generation.status();
    if (!generation.ok()) return outcome;
    Generation::Event event;
    bool finished = false;
    while (!finished) {
      {
        std::unique_lock<std::mutex> lock(mu);
        if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return ready; })) {
          ADD_FAILURE() << "no output for 30 s";
          break;
        }
        ready = false;
      }
      while (!finished && (*generation)->Poll(&event)) {
        outcome.texts.push_back(event.text);
        outcome.text += event.text;
        outcome.token_ids.insert(outcome.token_ids.end(), event.token_ids.begin(),
                                 event.token_ids.end());
        if (event.finished) {
          outcome.final = event;
          finished = true;
        }
      }
    }
    (*generation)->ClearNotify();
    (*core)->Stop();
    EXPECT_EQ((*core)->stats().slots_used, 0);
    return outcome;
  }

  std::unique_ptr<loader::Tokenizer> tokenizer_;
};

TEST_F(GenerationTest, NoStopStringsEmitsEverything) {
  const Outcome o = Run(Bytes("abcdef"), {});
  EXPECT_EQ(o.text, "abcdef");
  EXPECT_EQ(o.final.finish_reason, "length");
  EXPECT_EQ(o.final.completion_tokens, 6);
  EXPECT_EQ(o.token_ids, Bytes("abcdef"));
}

TEST_F(GenerationTest, StopSpanningTwoTokens) {
  const Outcome o = Run(Bytes("abcdefgh"), {"cd"});
  EXPECT_EQ(o.text, "ab");
  EXPECT_EQ(o.final.finish_reason, "stop_string");
  EXPECT_EQ(o.final.stop_string, "cd");
  EXPECT_TRUE(o.final.status.ok()) << o.final.status;
  EXPECT_GE(o.final.completion_tokens, 4);  // the engine ends the request within a step
}

TEST_F(GenerationTest, StopSpanningThreeTokens) {
  const Outcome o = Run(Bytes("xyabcdefgh"), {"bcd"});
  EXPECT_EQ(o.text, "xya");
  EXPECT_EQ(o.final.finish_reason, "stop_string");
  EXPECT_EQ(o.final.stop_string, "bcd");
}

TEST_F(GenerationTest, StopInsideOneMultiCharacterToken) {
  // Real pieces: the stop string lies inside one token's text, with text before it.
  auto ids = tokenizer_->Encode("The Licensor grants You a license");
  ASSERT_TRUE(ids.ok());
  std::vector<int32_t> script(ids->begin(), ids->end());
  const Outcome o = Run(script, {"cens"});
  EXPECT_EQ(o.text, "The Li");
  EXPECT_EQ(o.final.stop_string, "cens");
}

TEST_F(GenerationTest, MatchAtOffsetZeroEmitsNothing) {
  const Outcome o = Run(Bytes("abcdef"), {"ab"});
  EXPECT_EQ(o.text, "");
  EXPECT_EQ(o.final.finish_reason, "stop_string");
  EXPECT_EQ(o.final.stop_string, "ab");
}

TEST_F(GenerationTest, SeveralStopStringsTheEarliestMatchWins) {
  // "cd" completes first in the stream ("bcde" needs one more byte), but the answer must not
  // depend on the order of the list either: the earliest match in the text wins.
  for (const std::vector<std::string>& stops :
       {std::vector<std::string>{"zz", "bcd", "cd"}, std::vector<std::string>{"cd", "bcd"}}) {
    const Outcome o = Run(Bytes("abcdefgh"), stops);
    EXPECT_EQ(o.text, "a");
    EXPECT_EQ(o.final.stop_string, "bcd");
  }
  const Outcome later = Run(Bytes("abcdefgh"), {"fg", "zz", "de"});
  EXPECT_EQ(later.text, "abc");
  EXPECT_EQ(later.final.stop_string, "de");
}

TEST_F(GenerationTest, PartialMatchIsHeldBackThenReleased) {
  // "wo" could begin "world" and is held back; "wox" cannot, so it is released. At the end of the
  // stream (length), the held-back "wor" is flushed: nothing is lost.
  const Outcome o = Run(Bytes("hello wox wor"), {"world"});
  EXPECT_EQ(o.text, "hello wox wor");
  EXPECT_EQ(o.final.finish_reason, "length");
  EXPECT_EQ(o.final.stop_string, "");
  // No event ever emitted the start of a possible match before it was decided: every prefix of
  // the streamed text ends in no proper prefix of "world", except at the end.
  std::string streamed;
  for (size_t i = 0; i + 1 < o.texts.size(); ++i) {
    streamed += o.texts[i];
    for (size_t k = 1; k < 5 && k <= streamed.size(); ++k) {
      EXPECT_NE(streamed.substr(streamed.size() - k), std::string("world").substr(0, k))
          << "event " << i << " emitted \"" << streamed << "\"";
    }
  }
}

TEST_F(GenerationTest, StopStringCompletedByTheLastToken) {
  const Outcome o = Run(Bytes("hello world"), {"world"});
  EXPECT_EQ(o.text, "hello ");
  EXPECT_EQ(o.final.finish_reason, "stop_string");
}

TEST_F(GenerationTest, MultiByteCharacterStop) {
  // "é" is two byte tokens (C3 A9): it matches once the character is complete.
  const Outcome o = Run(Bytes("caf\xC3\xA9 au lait"), {"\xC3\xA9"});
  EXPECT_EQ(o.text, "caf");
  EXPECT_EQ(o.final.stop_string, "\xC3\xA9");
}

TEST_F(GenerationTest, StopIdEndsTheStreamAndItsTextIsNotEmitted) {
  const std::vector<int32_t> script = Bytes("abcdefgh");
  const int32_t d = script[3];
  const Outcome o = Run(script, {}, {d});
  EXPECT_EQ(o.text, "abc");
  EXPECT_EQ(o.final.finish_reason, "stop");
  EXPECT_EQ(o.final.stop_token_id, d);
  EXPECT_EQ(o.final.completion_tokens, 4);  // the stop id counts as generated
  EXPECT_EQ(o.token_ids, std::vector<int32_t>(script.begin(), script.begin() + 4));
}

TEST_F(GenerationTest, StopIdAndStopStringTheEarlierWins) {
  const std::vector<int32_t> script = Bytes("abcdefgh");
  const Outcome by_string = Run(script, {"bc"}, {script[5]});
  EXPECT_EQ(by_string.text, "a");
  EXPECT_EQ(by_string.final.finish_reason, "stop_string");
  const Outcome by_id = Run(script, {"fg"}, {script[2]});
  EXPECT_EQ(by_id.text, "ab");
  EXPECT_EQ(by_id.final.finish_reason, "stop");
}

}  // namespace
}  // namespace griffin::server

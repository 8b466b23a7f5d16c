#include "bench/load_client.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace griffin::bench {
namespace {

TEST(SseParserTest, SplitsEventsAcrossArbitraryReads) {
  const std::string stream = "data: {\"a\":1}\n\n: comment\n\ndata: {\"b\":\n\ndata: [DONE]\n\n";
  for (size_t piece : {1u, 3u, 7u, 1000u}) {
    SseParser parser;
    std::vector<std::string> events;
    for (size_t i = 0; i < stream.size(); i += piece) {
      parser.Feed(std::string_view(stream).substr(i, piece),
                  [&](const std::string& e) { events.push_back(e); });
    }
    EXPECT_EQ(events, (std::vector<std::string>{"{\"a\":1}", "{\"b\":", "[DONE]"})) << piece;
  }
}

}  // namespace
}  // namespace griffin::bench

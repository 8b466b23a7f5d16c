#include "engine/attention_tile_plan.h"

#include <algorithm>
#include <functional>
#include <map>
#include <queue>
#include <vector>

#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

// Tiles of `tile` tokens over `sequences` prompts of `tokens` each, from position 0.
std::vector<TileQueries> FreshPrefill(int sequences, int tokens, int tile) {
  std::vector<TileQueries> tiles;
  for (int s = 0; s < sequences; ++s) {
    for (int k = 0; k < tokens; k += tile) {
      tiles.push_back({s * tokens + k, k, std::min(tile, tokens - k)});
    }
  }
  return tiles;
}

// 2B's shapes on an H200: 12-token tiles, 64-key steps, one block per SM on 132 SMs, one kv head.
TilePartPolicy H200Policy() {
  TilePartPolicy p;
  p.window = 2048;
  p.key_tile = 64;
  p.slots = 132;
  p.kv_heads = 1;
  p.max_split_span = 3168;
  p.max_records = 1 << 20;
  return p;
}

// Key steps of a record (the policy's unit of work), overhead included.
double Work(const std::vector<TileQueries>& tiles, const TileRecord& r, const TilePartPolicy& p) {
  const TileQueries& t = tiles[r.tile];
  int64_t lo = std::max<int64_t>(0, t.first_position - p.window), hi = t.first_position + t.count;
  if (r.part == 0) hi = std::min(hi, r.key_split);
  if (r.part == 1) lo = std::max(lo, r.key_split);
  return p.block_overhead + double((hi - lo + p.key_tile - 1) / p.key_tile);
}

// When the last block ends if blocks start in launch order (the last record first) on the first
// free slot: how the GPU places a grid's blocks.
double Makespan(const std::vector<TileQueries>& tiles, const std::vector<TileRecord>& records,
                const TilePartPolicy& p) {
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (int s = 0; s < p.slots; ++s) free_at.push(0.0);
  double end = 0;
  for (auto r = records.rbegin(); r != records.rend(); ++r) {
    const double start = free_at.top();
    free_at.pop();
    free_at.push(start + Work(tiles, *r, p));
    end = std::max(end, start + Work(tiles, *r, p));
  }
  return end;
}

// Every tile once whole or twice as parts 0 and 1 at the same cut, inside its keys.
void ExpectCovers(const std::vector<TileQueries>& tiles, const std::vector<TileRecord>& records,
                  const TilePartPolicy& p) {
  std::map<int, std::vector<TileRecord>> of_tile;
  for (const TileRecord& r : records) of_tile[r.tile].push_back(r);
  ASSERT_EQ(of_tile.size(), tiles.size());
  for (const auto& [i, rs] : of_tile) {
    if (rs.size() == 1) {
      EXPECT_EQ(rs[0].part, -1) << "tile " << i;
      continue;
    }
    ASSERT_EQ(rs.size(), 2u) << "tile " << i;
    EXPECT_EQ(rs[0].part + rs[1].part, 1) << "tile " << i;
    EXPECT_EQ(rs[0].key_split, rs[1].key_split) << "tile " << i;
    const TileQueries& t = tiles[i];
    EXPECT_GT(rs[0].key_split, std::max<int64_t>(0, t.first_position - p.window)) << "tile " << i;
    EXPECT_LT(rs[0].key_split, t.first_position + t.count) << "tile " << i;
  }
  for (size_t k = 1; k < records.size(); ++k) {
    EXPECT_LE(Work(tiles, records[k - 1], p), Work(tiles, records[k], p)) << "record " << k;
  }
}

TEST(AttentionTilePlanTest, CutsTheLongestTilesOfOnePromptAndShortensThePass) {
  const TilePartPolicy p = H200Policy();
  for (const int tokens : {1800, 2048, 2300}) {
    const std::vector<TileQueries> tiles = FreshPrefill(1, tokens, 12);
    const std::vector<TileRecord> plan = PlanAttentionTileParts(tiles, p);
    ExpectCovers(tiles, plan, p);
    std::vector<TileRecord> whole;
    for (int i = 0; i < int(tiles.size()); ++i) whole.push_back({i, -1, 0});
    EXPECT_GT(plan.size(), tiles.size()) << tokens;
    const double before = Makespan(tiles, whole, p), after = Makespan(tiles, plan, p);
    EXPECT_LE(after, (tokens == 2300 ? 0.95 : 0.85) * before)
        << tokens << " tokens: " << after << " vs " << before;
  }
}

TEST(AttentionTilePlanTest, LeavesBalancedPassesAlone) {
  const TilePartPolicy p = H200Policy();
  for (const auto& [sequences, tokens] :
       std::vector<std::pair<int, int>>{{16, 2048}, {2, 2048}, {1, 4096}, {1, 100}}) {
    const std::vector<TileQueries> tiles = FreshPrefill(sequences, tokens, 12);
    const std::vector<TileRecord> plan = PlanAttentionTileParts(tiles, p);
    ASSERT_EQ(plan.size(), tiles.size()) << sequences << " x " << tokens;
    for (int i = 0; i < int(plan.size()); ++i) {
      EXPECT_EQ(plan[i].tile, i);
      EXPECT_EQ(plan[i].part, -1);
    }
  }
}

TEST(AttentionTilePlanTest, KeepsWithinThePartialsAndTheRecords) {
  TilePartPolicy p = H200Policy();
  const std::vector<TileQueries> tiles = FreshPrefill(1, 2048, 12);
  const size_t planned = PlanAttentionTileParts(tiles, p).size() - tiles.size();
  ASSERT_GT(planned, 30u);
  // Room for 30 tiles' partials: the 30 latest (those that see the most keys) are cut.
  p.max_split_span = 30 * 12;
  std::vector<TileRecord> plan = PlanAttentionTileParts(tiles, p);
  ExpectCovers(tiles, plan, p);
  EXPECT_EQ(plan.size(), tiles.size() + 30);
  for (const TileRecord& r : plan) {
    if (r.part >= 0) {
      EXPECT_GE(r.tile, int(tiles.size()) - 30);
    }
  }
  // Room for 5: the pass would still end with the sixth-longest tile, so nothing is cut.
  p.max_split_span = 5 * 12;
  EXPECT_EQ(PlanAttentionTileParts(tiles, p).size(), tiles.size());
  p.max_split_span = 3168;
  p.max_records = int(tiles.size()) + 30;
  plan = PlanAttentionTileParts(tiles, p);
  ExpectCovers(tiles, plan, p);
  EXPECT_EQ(plan.size(), tiles.size() + 30);
  p.max_split_span = 0;
  EXPECT_EQ(PlanAttentionTileParts(tiles, p).size(), tiles.size());
}

}  // namespace
}  // namespace griffin::engine

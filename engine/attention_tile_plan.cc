#include "engine/attention_tile_plan.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <queue>

namespace griffin::engine {

std::vector<TileRecord> PlanAttentionTileParts(absl::Span<const TileQueries> tiles,
                                               const TilePartPolicy& policy) {
  std::vector<TileRecord> records(tiles.size());
  for (size_t i = 0; i < tiles.size(); ++i) records[i] = {static_cast<int>(i), -1, 0};
  if (tiles.empty() || policy.slots <= 0 || policy.key_tile <= 0 || policy.max_split_span <= 0) {
    return records;
  }
  const auto first_key = [&](const TileQueries& t) {
    return std::max<int64_t>(0, t.first_position - policy.window);
  };
  const auto end_key = [](const TileQueries& t) { return t.first_position + t.count; };
  const auto steps = [&](int64_t keys) { return (keys + policy.key_tile - 1) / policy.key_tile; };
  std::vector<double> work(tiles.size());
  double total = 0, longest = 0;
  for (size_t i = 0; i < tiles.size(); ++i) {
    work[i] = policy.block_overhead + double(steps(end_key(tiles[i]) - first_key(tiles[i])));
    total += work[i];
    longest = std::max(longest, work[i]);
  }
  const double mean = total * policy.kv_heads / policy.slots;
  if (longest <= mean) return records;

  // Part 0 takes about a mean load of key steps, part 1 the rest (at least two steps, else the cut
  // buys less than a block's overhead). Longest tiles first, while the partials and records fit.
  const int64_t part0_steps = std::max<int64_t>(1, std::llround(mean));
  std::vector<int> by_work(tiles.size());
  std::iota(by_work.begin(), by_work.end(), 0);
  // Ties: the later tile (its queries see the same keys and it is more often the partial one).
  std::sort(by_work.begin(), by_work.end(),
            [&](int a, int b) { return work[a] != work[b] ? work[a] > work[b] : a > b; });
  std::vector<TileRecord> planned;
  std::vector<double> planned_work;
  std::vector<bool> cut(tiles.size(), false);
  int span_first = 0, span_end = 0, extra_records = 0;
  const int room = policy.max_records - static_cast<int>(tiles.size());
  for (int i : by_work) {
    const TileQueries& t = tiles[i];
    if (steps(end_key(t) - first_key(t)) < part0_steps + 2) break;
    const int first = extra_records == 0 ? t.first_token : std::min(span_first, t.first_token);
    const int end = std::max(span_end, t.first_token + t.count);
    if (end - first > policy.max_split_span || extra_records + 1 > room) break;
    cut[i] = true;
    span_first = first;
    span_end = end;
    ++extra_records;
  }
  if (extra_records == 0) return records;
  for (size_t i = 0; i < tiles.size(); ++i) {
    const TileQueries& t = tiles[i];
    if (!cut[i]) {
      planned.push_back({static_cast<int>(i), -1, 0});
      planned_work.push_back(work[i]);
      continue;
    }
    const int64_t split = first_key(t) + part0_steps * policy.key_tile;
    planned.push_back({static_cast<int>(i), 0, split});
    planned_work.push_back(policy.block_overhead + double(part0_steps));
    planned.push_back({static_cast<int>(i), 1, split});
    planned_work.push_back(policy.block_overhead + double(steps(end_key(t) - split)));
  }
  std::vector<int> order(planned.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return planned_work[a] < planned_work[b]; });
  // Both in launch order: the last record first, the first kv head's blocks before the next's.
  const auto launched = [&](const std::vector<double>& w, const std::vector<int>* by) {
    std::vector<double> blocks;
    for (int h = 0; h < policy.kv_heads; ++h) {
      for (size_t k = w.size(); k-- > 0;) blocks.push_back(w[by ? (*by)[k] : k]);
    }
    return PlacedMakespan(blocks, policy.slots);
  };
  if (launched(work, nullptr) - launched(planned_work, &order) < policy.min_gain) return records;
  records.clear();
  for (int k : order) records.push_back(planned[k]);
  return records;
}

double PlacedMakespan(absl::Span<const double> work, int slots) {
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (int s = 0; s < slots; ++s) free_at.push(0.0);
  double end = 0;
  for (const double w : work) {
    const double start = free_at.top();
    free_at.pop();
    free_at.push(start + w);
    end = std::max(end, start + w);
  }
  return end;
}

}  // namespace griffin::engine

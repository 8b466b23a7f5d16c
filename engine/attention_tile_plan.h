// Which prefill attention tiles are cut in two by key position, and the order their blocks launch.
//
// A prefill pass's attention runs a block per tile of query tokens (and kv head), each walking
// the keys its tokens see. From position 0 the latest tiles see the most keys (up to the window),
// so when the tiles are few for the GPU (2048 tokens are 171 tiles of 12 on 132 SMs, one block
// each) the pass lasts as long as its longest block, about 1.4 x the mean load of an SM (bench/
// NOTES.md, session 19). Cutting the tiles that hold more than the mean into a part of about the
// mean's keys and a remainder, and launching the records longest first, brings the pass near the
// mean; the cut tiles' tokens then pay for the split combine (partial rows written and merged).
// Pure host arithmetic: the CUDA backend applies it to a pass's tiles (QueryTile::part).
#ifndef GRIFFIN_ENGINE_ATTENTION_TILE_PLAN_H_
#define GRIFFIN_ENGINE_ATTENTION_TILE_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace griffin::engine {

// One tile: its first token in the pass, that token's position and the tile's token count.
struct TileQueries {
  int first_token = 0;
  int64_t first_position = 0;
  int count = 0;
};

struct TilePartPolicy {
  int window = 0;     // keys each query sees before itself
  int key_tile = 64;  // keys a block stages per step (its unit of work)
  int slots = 0;      // blocks the GPU runs at once (SMs x blocks per SM) over the kv heads' blocks
  int kv_heads = 1;   // blocks per tile
  // A block's fixed cost (its query rows' loads, its epilogue) in key steps: an estimate, which
  // decides only where the cut falls.
  double block_overhead = 2.0;
  // Cut only when the pass, its blocks placed as the GPU places them (each on the first free
  // slot, in launch order), ends at least this many key steps sooner: the split combine's cost
  // (a launch, the cut tokens' partials written and read back), estimated.
  double min_gain = 2.0;
  // The partials buffer holds rows for this many consecutive tokens of the pass: the cut tiles
  // lie within such a span (0: no cuts).
  int max_split_span = 0;
  int max_records = 0;  // records the tile array holds
};

// One record of the plan: tile `tile` of the input, whole (part -1) or part 0 (keys before
// key_split) or 1 (the rest).
struct TileRecord {
  int tile = 0;
  int part = -1;
  int64_t key_split = 0;
};

// The records for `tiles`, in order of increasing work (the tensor-core kernel launches the last
// record first). With nothing worth cutting, every tile once as part -1, in input order.
std::vector<TileRecord> PlanAttentionTileParts(absl::Span<const TileQueries> tiles,
                                               const TilePartPolicy& policy);

// When the last of `work` (key steps per block, in launch order) ends on `slots` slots, each block
// starting on the first free one.
double PlacedMakespan(absl::Span<const double> work, int slots);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_ATTENTION_TILE_PLAN_H_

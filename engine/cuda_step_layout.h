// The one host-side packer of a forward pass's metadata, which every sequence-aware kernel reads
// (kernels/types.h, read on the device through kernels/step_layout.cuh):
//   tokens     int32 [n]             the token ids, entries flattened in order
//   tok_entry  int32 [n]             each token's entry
//   entries    StepEntryRecord [E]   {start, len, slot, pos0} per entry (a prefill piece or a token)
//   tiles      QueryTile [T]         attention work units: runs of one entry's consecutive tokens,
//                                    possibly cut in two key parts (SplitLongTiles)
//   rows       int32 [R]             tokens whose logits the head computes, in output order
//   head flags int32 [4]             [0]: whether the greedy head writes the capped logits back
//                                    (LaunchSoftCapArgMax's write_capped)
// packed back to back in one pinned host buffer and uploaded with one copy. A pass packed with
// capacities fixed per decode bucket always lands at the same device addresses, which the
// bucket's CUDA graph captured.
#ifndef GRIFFIN_ENGINE_CUDA_STEP_LAYOUT_H_
#define GRIFFIN_ENGINE_CUDA_STEP_LAYOUT_H_

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/attention_tile_plan.h"
#include "kernels/types.h"

namespace griffin::engine {

class StepMetadata {
 public:
  StepMetadata() = default;
  ~StepMetadata();
  StepMetadata(const StepMetadata&) = delete;
  StepMetadata& operator=(const StepMetadata&) = delete;

  // Room for passes of up to `max_tokens` tokens (and as many entries, tiles and rows).
  absl::Status Init(int max_tokens);

  // Starts a pass. With `fixed_capacity` > 0 (a decode bucket) the sections sit at offsets that
  // depend only on it, so the device pointers below stay those a graph captured; otherwise the
  // sections are packed tight (fewer bytes to copy) and the pointers are valid for this pass.
  void Begin(int fixed_capacity = 0);
  // A piece of an entry: tokens[0, count) of slot `slot` starting at `position`. Returns its entry
  // index. `tile_tokens` cuts the piece into attention tiles of at most that many tokens.
  int AddPiece(int slot, int64_t position, absl::Span<const int32_t> tokens, int tile_tokens);
  // The head computes logits for step token `token` (rows in the order they are added).
  void AddRow(int token) { rows_[num_rows_++] = token; }
  void ClearRows() { num_rows_ = 0; }
  // Whether something reads the logits after the greedy head's tokens (sampling, scores, a copy
  // to the host); when not, the head leaves them uncapped and moves half the bytes. Begin sets it.
  void SetLogitsReadAfterHead(bool read) { head_flags_[0] = read ? 1 : 0; }
  bool logits_read_after_head() const { return head_flags_[0] != 0; }
  // Replaces the tiles with one per token (decode tiles: the split-key decode kernels).
  void UseOneTokenTiles();
  // Cuts the longest tiles in two key parts where PlanAttentionTileParts finds it pays (a prefill
  // pass of few tiles; attention_tile_plan.h), reordering the tiles longest last. At most as many
  // tile records as tokens of capacity.
  void SplitLongTiles(TilePartPolicy policy);
  // Whether some tiles are parts (QueryTile::part), and the first token of a cut tile (the
  // partial rows start there: AttentionParams::partial_first_token).
  bool split_tiles() const { return split_tiles_; }
  int split_first_token() const { return split_first_token_; }

  // The pass's entries as packed on the host (profiles count the keys each one reads).
  absl::Span<const kernels::StepEntryRecord> host_entries() const {
    return {entries_, static_cast<size_t>(num_entries_)};
  }
  int num_tokens() const { return num_tokens_; }
  int num_entries() const { return num_entries_; }
  int num_tiles() const { return num_tiles_; }
  int num_rows() const { return num_rows_; }

  // Copies the pass's sections to the device (stream-ordered; the host buffer may be rewritten
  // only after the stream has passed this copy: the caller synchronises between passes).
  absl::Status Upload(cudaStream_t stream);
  // Uploads only the rows (the head of a pass whose rows are compacted after its forward).
  absl::Status UploadRows(cudaStream_t stream);

  // Device views of the sections (valid after Begin; contents after Upload).
  const int32_t* tokens() const { return device_ + tokens_at_; }
  kernels::TokenLayout layout() const {
    return {device_ + tok_entry_at_,
            reinterpret_cast<const kernels::StepEntryRecord*>(device_ + entries_at_)};
  }
  const kernels::QueryTile* tiles() const {
    return reinterpret_cast<const kernels::QueryTile*>(device_ + tiles_at_);
  }
  const int32_t* rows() const { return device_ + rows_at_; }
  const int32_t* write_capped_logits() const { return device_ + head_flags_at_; }

 private:
  // Section offsets (in int32 words) for capacities n (tokens), e (entries), t (tiles), r (rows).
  void Place(int n, int e, int t, int r);

  int max_tokens_ = 0;
  int32_t* scratch_ = nullptr;    // pinned, 11 * max_tokens words: the sections while packing
  int32_t* send_ = nullptr;       // pinned, 11 * max_tokens words: the sections as placed, copied
  int32_t* rows_send_ = nullptr;  // pinned, max_tokens words: UploadRows' own source, so it never
                                  // overwrites bytes an earlier Upload's copy may still read
  int32_t* device_ = nullptr;
  // Host-side sections inside scratch_ (placement on the device is decided at Upload).
  int32_t *tokens_ = nullptr, *tok_entry_ = nullptr, *rows_ = nullptr;
  kernels::StepEntryRecord* entries_ = nullptr;
  kernels::QueryTile* tiles_ = nullptr;
  std::vector<int64_t> tile_positions_;  // host only: each tile's first query position
  bool split_tiles_ = false;
  int split_first_token_ = 0;
  int fixed_capacity_ = 0;
  int num_tokens_ = 0, num_entries_ = 0, num_tiles_ = 0, num_rows_ = 0;
  int32_t head_flags_[4] = {1, 0, 0, 0};
  int64_t head_flags_at_ = 0, tokens_at_ = 0, tok_entry_at_ = 0, entries_at_ = 0, tiles_at_ = 0,
          rows_at_ = 0, used_ = 0;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_CUDA_STEP_LAYOUT_H_

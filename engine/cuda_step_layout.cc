#include "engine/cuda_step_layout.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/cuda_status.h"

namespace griffin::engine {

StepMetadata::~StepMetadata() {
  if (scratch_ != nullptr) cudaFreeHost(scratch_);
  if (send_ != nullptr) cudaFreeHost(send_);
  if (rows_send_ != nullptr) cudaFreeHost(rows_send_);
  if (device_ != nullptr) cudaFree(device_);
}

namespace {
// Sections start on 16-byte boundaries: the kernels read an entry record as one 16-byte load.
int64_t Round4(int64_t words) { return (words + 3) / 4 * 4; }

// Words of each section per token of capacity: tokens, tok_entry, entries, tiles, rows.
constexpr size_t kEntryWords = sizeof(kernels::StepEntryRecord) / 4;
constexpr size_t kTileWords = sizeof(kernels::QueryTile) / 4;
constexpr size_t kWordsPerToken = 1 + 1 + kEntryWords + kTileWords + 1;
constexpr size_t kHeadFlagWords = 4;
}  // namespace

absl::Status StepMetadata::Init(int max_tokens) {
  max_tokens_ = static_cast<int>(Round4(max_tokens));
  max_tokens = max_tokens_;
  const size_t words = kHeadFlagWords + kWordsPerToken * max_tokens;
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&scratch_, words * 4));
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&send_, words * 4));
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&rows_send_, size_t(max_tokens) * 4));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&device_, words * 4));
  CUDA_RETURN_IF_ERROR(cudaMemset(device_, 0, words * 4));
  tokens_ = scratch_;
  tok_entry_ = scratch_ + max_tokens;
  entries_ = reinterpret_cast<kernels::StepEntryRecord*>(scratch_ + 2 * size_t(max_tokens));
  tiles_ = reinterpret_cast<kernels::QueryTile*>(scratch_ + (2 + kEntryWords) * max_tokens);
  rows_ = scratch_ + (2 + kEntryWords + kTileWords) * max_tokens;
  tile_positions_.resize(max_tokens);
  Begin();
  return absl::OkStatus();
}

void StepMetadata::Place(int n, int e, int t, int r) {
  head_flags_at_ = 0;
  tokens_at_ = kHeadFlagWords;
  tok_entry_at_ = tokens_at_ + Round4(n);
  entries_at_ = tok_entry_at_ + Round4(n);
  tiles_at_ = entries_at_ + int64_t{kEntryWords} * e;
  rows_at_ = tiles_at_ + int64_t{kTileWords} * t;
  used_ = rows_at_ + r;
}

void StepMetadata::Begin(int fixed_capacity) {
  fixed_capacity_ = fixed_capacity;
  num_tokens_ = num_entries_ = num_tiles_ = num_rows_ = 0;
  split_tiles_ = false;
  split_first_token_ = 0;
  head_flags_[0] = 1;
  if (fixed_capacity > 0) Place(fixed_capacity, fixed_capacity, fixed_capacity, fixed_capacity);
}

int StepMetadata::AddPiece(int slot, int64_t position, absl::Span<const int32_t> tokens,
                           int tile_tokens) {
  const int entry = num_entries_++;
  const int start = num_tokens_, count = static_cast<int>(tokens.size());
  entries_[entry] = {start, count, slot, static_cast<int32_t>(position)};
  for (int k = 0; k < count; ++k) {
    tokens_[start + k] = tokens[k];
    tok_entry_[start + k] = entry;
  }
  for (int k = 0; k < count; k += tile_tokens) {
    tile_positions_[num_tiles_] = position + k;
    tiles_[num_tiles_++] = {start + k, std::min(tile_tokens, count - k)};
  }
  num_tokens_ += count;
  return entry;
}

void StepMetadata::UseOneTokenTiles() {
  num_tiles_ = num_tokens_;
  for (int t = 0; t < num_tokens_; ++t) {
    const kernels::StepEntryRecord& e = entries_[tok_entry_[t]];
    tile_positions_[t] = int64_t{e.pos0} + t - e.start;
    tiles_[t] = {t, 1};
  }
}

void StepMetadata::SplitLongTiles(TilePartPolicy policy) {
  std::vector<TileQueries> queries(num_tiles_);
  for (int i = 0; i < num_tiles_; ++i) {
    queries[i] = {tiles_[i].first_token, tile_positions_[i], tiles_[i].count};
  }
  policy.max_records = max_tokens_;
  const std::vector<TileRecord> plan = PlanAttentionTileParts(queries, policy);
  if (static_cast<int>(plan.size()) == num_tiles_) return;
  const std::vector<kernels::QueryTile> whole(tiles_, tiles_ + num_tiles_);
  const std::vector<int64_t> positions(tile_positions_.begin(),
                                       tile_positions_.begin() + num_tiles_);
  num_tiles_ = static_cast<int>(plan.size());
  for (int i = 0; i < num_tiles_; ++i) {
    const TileRecord& r = plan[i];
    kernels::QueryTile& t = tiles_[i];
    t = whole[r.tile];
    tile_positions_[i] = positions[r.tile];
    t.part = r.part;
    t.key_split = static_cast<int32_t>(r.key_split);
    if (r.part == 0 && (!split_tiles_ || t.first_token < split_first_token_)) {
      split_first_token_ = t.first_token;
      split_tiles_ = true;
    }
  }
}

absl::Status StepMetadata::Upload(cudaStream_t stream) {
  if (fixed_capacity_ == 0) Place(num_tokens_, num_entries_, num_tiles_, num_rows_);
  std::memcpy(send_ + head_flags_at_, head_flags_, sizeof head_flags_);
  std::memcpy(send_ + tokens_at_, tokens_, size_t(num_tokens_) * 4);
  std::memcpy(send_ + tok_entry_at_, tok_entry_, size_t(num_tokens_) * 4);
  std::memcpy(send_ + entries_at_, entries_,
              size_t(num_entries_) * sizeof(kernels::StepEntryRecord));
  std::memcpy(send_ + tiles_at_, tiles_, size_t(num_tiles_) * sizeof(kernels::QueryTile));
  std::memcpy(send_ + rows_at_, rows_, size_t(num_rows_) * 4);
  CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(device_, send_, size_t(used_) * 4, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

absl::Status StepMetadata::UploadRows(cudaStream_t stream) {
  std::memcpy(rows_send_, rows_, size_t(num_rows_) * 4);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_ + rows_at_, rows_send_, size_t(num_rows_) * 4,
                                       cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

}  // namespace griffin::engine

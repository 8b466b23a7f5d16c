#include "engine/state_layout.h"

#include "absl/strings/str_cat.h"

namespace griffin::engine {

namespace {
int64_t AlignUp(int64_t value, int64_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}
const char* DtypeName(int element_bytes) { return element_bytes == 4 ? "f32" : "bf16"; }
}  // namespace

StateLayout StateLayout::Make(const loader::ModelConfig& c, int activation_bytes,
                              int64_t region_alignment, int64_t slot_alignment) {
  StateLayout s;
  s.activation_bytes_ = activation_bytes;
  const int recurrent = c.num_recurrent_layers(), attention = c.num_attention_layers();
  const int64_t lru = int64_t{c.lru_width} * 4;
  const int64_t conv = int64_t{c.conv1d_width - 1} * c.lru_width * activation_bytes;
  const int64_t ring = int64_t{c.attention_window} * c.num_kv_heads * c.head_dim * activation_bytes;
  int64_t offset = 0;
  auto place = [&](RegionKind kind, int index, int64_t bytes, int element_bytes,
                   std::vector<int64_t>& offsets) {
    offsets.push_back(offset);
    s.regions_.push_back({kind, index, offset, bytes, element_bytes});
    offset = AlignUp(offset + bytes, region_alignment);
  };
  for (int r = 0; r < recurrent; ++r) place(RegionKind::kLruState, r, lru, 4, s.lru_);
  for (int r = 0; r < recurrent; ++r) {
    place(RegionKind::kConvTail, r, conv, activation_bytes, s.conv_);
  }
  for (int a = 0; a < attention; ++a) {
    place(RegionKind::kKeyRing, a, ring, activation_bytes, s.keys_);
  }
  for (int a = 0; a < attention; ++a) {
    place(RegionKind::kValueRing, a, ring, activation_bytes, s.values_);
  }
  s.slot_bytes_ = AlignUp(offset, slot_alignment);
  s.size_ = {recurrent * lru, recurrent * conv, int64_t{2} * attention * ring};
  s.description_ =
      absl::StrCat("lru ", recurrent, "x", c.lru_width, " f32, conv ", recurrent, "x",
                   c.conv1d_width - 1, "x", c.lru_width, " ", DtypeName(activation_bytes), ", kv ",
                   attention, "x", c.attention_window, "x", c.num_kv_heads, "x", c.head_dim, " ",
                   DtypeName(activation_bytes), ", slot ", s.slot_bytes_, " B");
  return s;
}

StateLayout StateLayout::ForCpu(const loader::ModelConfig& config) { return Make(config, 4, 1, 1); }

StateLayout StateLayout::ForCuda(const loader::ModelConfig& config) {
  return Make(config, 2, 16, 256);
}

}  // namespace griffin::engine

#include "engine/slot_budget.h"

#include "gtest/gtest.h"

namespace griffin::engine {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;
constexpr int64_t kMiB = int64_t{1} << 20;

DeviceMemoryBudget H200With(int64_t used_bytes) {
  DeviceMemoryBudget b;
  b.total_bytes = 140 * kGiB;
  b.free_bytes = b.total_bytes - used_bytes;
  b.fraction = 0.5;
  b.reserve_bytes = 1 * kGiB;
  b.slot_bytes = 20 * kMiB;
  b.extra_slots = 1;
  b.max_slots = 100000;
  return b;
}

TEST(SlotBudgetTest, TheSlotsGetWhatTheFractionLeavesAfterEverythingElse) {
  // 70 GiB allowed, 10 in use, 1 reserved: 59 GiB = 3020.8 slots of 20 MiB, less the scratch one.
  auto slots = SlotsForDeviceMemory(H200With(10 * kGiB));
  ASSERT_TRUE(slots.ok()) << slots.status();
  EXPECT_EQ(*slots, 3019);
}

TEST(SlotBudgetTest, MemoryTheWeightsDoNotTakeGoesToSlots) {
  // FP8 weights of the 9B model take 7.46 GB less than bf16 (bench/RESULTS.md session 9).
  const int64_t saved = 17'270'000'000 - 9'810'000'000;
  auto bf16 = SlotsForDeviceMemory(H200With(20 * kGiB));
  auto fp8 = SlotsForDeviceMemory(H200With(20 * kGiB - saved));
  ASSERT_TRUE(bf16.ok() && fp8.ok());
  // 355.7 slots' worth: 355 or 356 more, as the remainders fall.
  EXPECT_GE(*fp8 - *bf16, saved / (20 * kMiB));
  EXPECT_LE(*fp8 - *bf16, saved / (20 * kMiB) + 1);
}

TEST(SlotBudgetTest, AtMostMaxSlots) {
  DeviceMemoryBudget b = H200With(10 * kGiB);
  b.max_slots = 256;
  EXPECT_EQ(*SlotsForDeviceMemory(b), 256);
}

TEST(SlotBudgetTest, NothingLeftIsAClearError) {
  DeviceMemoryBudget b = H200With(69 * kGiB);  // 70 allowed, 69 used, 1 reserved
  auto slots = SlotsForDeviceMemory(b);
  EXPECT_EQ(slots.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(slots.status().message().find("--gpu_memory_utilization"), std::string::npos);
  b = H200With(100 * kGiB);  // more in use than the fraction allows
  EXPECT_EQ(SlotsForDeviceMemory(b).status().code(), absl::StatusCode::kResourceExhausted);
  // Exactly one slot plus the scratch one fits.
  b = H200With(69 * kGiB - 40 * kMiB);
  EXPECT_EQ(*SlotsForDeviceMemory(b), 1);
}

TEST(SlotBudgetTest, BadArgumentsAreRefused) {
  for (double fraction : {0.0, -0.5, 1.01, std::nan("")}) {
    DeviceMemoryBudget b = H200With(kGiB);
    b.fraction = fraction;
    EXPECT_EQ(SlotsForDeviceMemory(b).status().code(), absl::StatusCode::kInvalidArgument)
        << fraction;
  }
  DeviceMemoryBudget b = H200With(kGiB);
  b.slot_bytes = 0;
  EXPECT_EQ(SlotsForDeviceMemory(b).status().code(), absl::StatusCode::kInvalidArgument);
  b = H200With(kGiB);
  b.free_bytes = b.total_bytes + 1;
  EXPECT_EQ(SlotsForDeviceMemory(b).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace griffin::engine

// LDR-1: handcrafted corrupt safetensors files, each rejected with a specific Status that names the
// file and the tensor; plus good-file round trips.
#include "loader/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/numeric.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace griffin::loader {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// [u64 LE header length][header][data]
std::string Raw(uint64_t header_len, std::string_view rest) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &header_len, 8);
  out += rest;
  return out;
}

std::string File(std::string_view header, std::string_view data = "") {
  return Raw(header.size(), std::string(header) + std::string(data));
}

std::string Zeros(size_t n) { return std::string(n, '\0'); }

struct BadCase {
  const char* name;
  std::string bytes;
  absl::StatusCode code;
  std::vector<std::string> message_parts;  // each must appear in the message
};

std::vector<BadCase> BadCases() {
  const std::string big_dim = "18446744073709551615";  // 2^64-1 > INT64_MAX
  return {
      {"Empty", "", absl::StatusCode::kDataLoss, {"shorter than the 8-byte"}},
      {"SevenBytes", std::string(7, '\x01'), absl::StatusCode::kDataLoss, {"7 bytes"}},
      {"HeaderLongerThanFile", Raw(100, "{}"), absl::StatusCode::kDataLoss, {"header length 100"}},
      {"HeaderLengthHuge",
       Raw(~uint64_t{0}, "{}"),
       absl::StatusCode::kInvalidArgument,
       {"exceeds the limit"}},
      {"HeaderOver100MB",
       Raw(kMaxHeaderBytes + 1, "{}"),
       absl::StatusCode::kInvalidArgument,
       {"exceeds the limit"}},
      {"HeaderNotUtf8", File("{\"w\xff\": 1}"), absl::StatusCode::kInvalidArgument, {"UTF-8"}},
      {"HeaderOverlongUtf8",
       File("{\"\xc0\xaf\": 1}"),
       absl::StatusCode::kInvalidArgument,
       {"UTF-8"}},
      {"HeaderSurrogateUtf8",
       File("{\"\xed\xa0\x80\": 1}"),
       absl::StatusCode::kInvalidArgument,
       {"UTF-8"}},
      {"HeaderTruncatedUtf8", File("{\"\xe2\x96"), absl::StatusCode::kInvalidArgument, {"UTF-8"}},
      {"HeaderEmpty", File(""), absl::StatusCode::kInvalidArgument, {"not valid JSON"}},
      {"HeaderNotJson", File("{\"w\": "), absl::StatusCode::kInvalidArgument, {"not valid JSON"}},
      {"HeaderTrailingGarbage",
       File("{} x"),
       absl::StatusCode::kInvalidArgument,
       {"not valid JSON"}},
      {"HeaderArray", File("[]"), absl::StatusCode::kInvalidArgument, {"not a JSON object"}},
      {"HeaderString", File("\"w\""), absl::StatusCode::kInvalidArgument, {"not a JSON object"}},
      {"HeaderNumber", File("12"), absl::StatusCode::kInvalidArgument, {"not a JSON object"}},
      {"HeaderTooDeep",
       File(std::string(200, '[') + std::string(200, ']')),
       absl::StatusCode::kInvalidArgument,
       {"nested"}},
      {"DuplicateTensorName",
       File(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            Zeros(8)),
       absl::StatusCode::kInvalidArgument,
       {"duplicate tensor name \"w\""}},
      {"DuplicateKeyInEntry",
       File(R"({"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "duplicate key \"dtype\""}},
      {"EntryNotObject",
       File(R"({"w": [1, 2]})"),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "not a JSON object"}},
      {"MissingDtype",
       File(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "dtype"}},
      {"DtypeNotString",
       File(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "dtype"}},
      {"UnknownDtype",
       File(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", Zeros(8)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "unsupported dtype"}},
      {"LowercaseDtype",
       File(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "unsupported dtype"}},
      {"MissingShape",
       File(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "shape"}},
      {"ShapeNotArray",
       File(R"({"w":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "shape"}},
      {"ShapeFloat",
       File(R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "not an integer"}},
      {"ShapeString",
       File(R"({"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "not an integer"}},
      {"NegativeDim",
       File(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "negative"}},
      {"DimAboveInt64",
       File(R"({"w":{"dtype":"F32","shape":[)" + big_dim + R"(],"data_offsets":[0,4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "too large"}},
      {"MissingOffsets",
       File(R"({"w":{"dtype":"F32","shape":[1]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "data_offsets"}},
      {"OffsetsWrongLength",
       File(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", Zeros(8)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "data_offsets"}},
      {"OffsetsNotIntegers",
       File(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}})", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "data_offsets begin"}},
      {"NegativeOffset",
       File(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})"),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "negative"}},
      {"BeginAfterEnd",
       File(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", Zeros(8)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "after end"}},
      {"OffsetsOutOfFile",
       File(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", Zeros(8)),
       absl::StatusCode::kDataLoss,
       {"tensor \"w\"", "beyond the data section"}},
      {"OffsetsHugeOutOfFile",
       File(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[9223372036854775800,)"
            R"(9223372036854775804]}})"),
       absl::StatusCode::kDataLoss,
       {"tensor \"w\"", "beyond the data section"}},
      {"ShapeProductOverflow",
       File(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,4]}})",
            Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "overflows"}},
      {"ByteSizeOverflow",
       File(R"({"w":{"dtype":"I64","shape":[4611686018427387904],"data_offsets":[0,8]}})",
            Zeros(8)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "overflows"}},
      {"ShapeDtypeMismatch",
       File(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})", Zeros(24)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"w\"", "needs 12 bytes", "span 24"}},
      {"Overlap",
       File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            Zeros(12)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"SameOffsets",
       File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
            Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"b\"", "overlap tensor \"a\""}},
      {"EmptyTensorInsideAnother",
       File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
            Zeros(8)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"z\"", "overlap"}},
      {"Gap",
       File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            Zeros(12)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"b\"", "gap of 4 bytes"}},
      {"GapAtStart",
       File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", Zeros(8)),
       absl::StatusCode::kInvalidArgument,
       {"tensor \"a\"", "gap"}},
      {"TrailingBytes",
       File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", Zeros(6)),
       absl::StatusCode::kInvalidArgument,
       {"2 bytes after the last tensor", "\"a\""}},
      {"DataButNoTensors",
       File("{}", Zeros(4)),
       absl::StatusCode::kInvalidArgument,
       {"4 bytes after the last tensor"}},
      {"MetadataNotObject",
       File(R"({"__metadata__": "x"})"),
       absl::StatusCode::kInvalidArgument,
       {"__metadata__"}},
      {"MetadataValueNotString",
       File(R"({"__metadata__": {"format": 1}})"),
       absl::StatusCode::kInvalidArgument,
       {"__metadata__", "\"format\""}},
  };
}

class BadFileTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadFileTest, RejectedWithSpecificStatus) {
  const BadCase& c = GetParam();
  const auto result = SafetensorsFile::FromBuffer(c.bytes, "/some/secret/dir/model.safetensors");
  ASSERT_FALSE(result.ok()) << c.name;
  EXPECT_EQ(result.status().code(), c.code) << result.status();
  const std::string message(result.status().message());
  EXPECT_THAT(message, HasSubstr("model.safetensors")) << "names the file";
  EXPECT_THAT(message, Not(HasSubstr("/some/secret"))) << "base name only";
  for (const std::string& part : c.message_parts) EXPECT_THAT(message, HasSubstr(part));
}

INSTANTIATE_TEST_SUITE_P(Ldr1, BadFileTest, ::testing::ValuesIn(BadCases()),
                         [](const ::testing::TestParamInfo<BadCase>& info) {
                           return std::string(info.param.name);
                         });

TEST(SafetensorsTest, HostileTensorNameIsEscapedInErrors) {
  const auto result = SafetensorsFile::FromBuffer(
      File("{\"evil\\nname\\u0007\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}",
           Zeros(4)),
      "x.safetensors");
  ASSERT_FALSE(result.ok());
  const std::string message(result.status().message());
  EXPECT_THAT(message, Not(HasSubstr("\n")));
  EXPECT_THAT(message, Not(HasSubstr("\a")));
  EXPECT_THAT(message, HasSubstr("evil\\x0aname\\x07"));
}

TEST(SafetensorsTest, EmptyHeaderNoTensorsIsValid) {
  auto file = SafetensorsFile::FromBuffer(File("{}"), "empty.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_EQ((*file)->Find("w"), nullptr);
}

TEST(SafetensorsTest, ZeroElementAndScalarTensors) {
  auto file = SafetensorsFile::FromBuffer(
      File(R"({"__metadata__":{"format":"pt"},)"
           R"("s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
           R"("e":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]},)"
           R"("f":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}   )",
           std::string("\x00\x00\x80\x3f", 4)),
      "z.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), 3u);
  EXPECT_EQ(tensors[0].name, "f");  // [0,0) sorts before [0,4)
  EXPECT_EQ(tensors[1].name, "s");
  EXPECT_EQ(tensors[2].name, "e");
  EXPECT_EQ(tensors[1].num_elements(), 1);
  EXPECT_EQ(tensors[2].num_elements(), 0);
  EXPECT_EQ(tensors[2].nbytes, 0u);
  float value = 0;
  ASSERT_TRUE(CopyToFloat32(tensors[1], absl::MakeSpan(&value, 1)).ok());
  EXPECT_EQ(value, 1.0f);
  EXPECT_TRUE(CopyToFloat32(tensors[2], absl::Span<float>()).ok());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
}

TEST(SafetensorsTest, TensorsAreInOffsetOrderNotKeyOrder) {
  auto file =
      SafetensorsFile::FromBuffer(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                                       R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                                       Zeros(8)),
                                  "o.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[0].name, "b");
  EXPECT_EQ((*file)->tensors()[1].name, "a");
  ASSERT_NE((*file)->Find("a"), nullptr);
  EXPECT_EQ((*file)->Find("a")->dtype, DType::kF32);
}

std::string Bytes(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

std::vector<TensorToWrite> SampleTensors() {
  const std::vector<float> f32 = {1.5f, -2.0f, 0.0f, 3.25f, 1e-3f, -7.0f};
  std::vector<uint16_t> bf16;
  for (const float v : {1.0f, -0.5f, 3.0f, 100.0f}) bf16.push_back(FloatToBf16(v));
  // IEEE half: 1.0, -2.0, 0.5, 65504 (max), smallest subnormal 2^-24.
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001};
  const std::vector<int32_t> i32 = {1, -2, 3};
  const std::vector<int64_t> i64 = {int64_t{1} << 40};
  return {
      {"model.embed_tokens.weight", DType::kF32, {2, 3}, Bytes(f32.data(), 24)},
      {"bf", DType::kBF16, {4}, Bytes(bf16.data(), 8)},
      {"half", DType::kF16, {5, 1}, Bytes(f16.data(), 10)},
      {"ints", DType::kI32, {3}, Bytes(i32.data(), 12)},
      {"long", DType::kI64, {1}, Bytes(i64.data(), 8)},
      {"empty", DType::kF32, {0, 4}, ""},
  };
}

void ExpectSampleContents(const SafetensorsFile& file) {
  const auto& tensors = file.tensors();
  ASSERT_EQ(tensors.size(), 6u);
  EXPECT_EQ(tensors[0].name, "model.embed_tokens.weight");  // written order = offset order
  EXPECT_EQ(tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tensors[0].nbytes, 24u);
  std::vector<float> out(6);
  ASSERT_TRUE(CopyToFloat32(tensors[0], absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, (std::vector<float>{1.5f, -2.0f, 0.0f, 3.25f, 1e-3f, -7.0f}));

  const TensorView* bf = file.Find("bf");
  ASSERT_NE(bf, nullptr);
  EXPECT_EQ(bf->dtype, DType::kBF16);
  out.assign(4, 0.0f);
  ASSERT_TRUE(CopyToFloat32(*bf, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, (std::vector<float>{1.0f, -0.5f, 3.0f, 100.0f}));

  const TensorView* half = file.Find("half");
  ASSERT_NE(half, nullptr);
  out.assign(5, 0.0f);
  ASSERT_TRUE(CopyToFloat32(*half, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, (std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f, std::ldexp(1.0f, -24)}));

  const TensorView* ints = file.Find("ints");
  ASSERT_NE(ints, nullptr);
  int32_t iv[3];
  std::memcpy(iv, ints->data, 12);
  EXPECT_EQ(iv[1], -2);
  std::vector<float> three(3);
  EXPECT_EQ(CopyToFloat32(*ints, absl::MakeSpan(three)).code(), absl::StatusCode::kInvalidArgument);

  const TensorView* empty = file.Find("empty");
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->num_elements(), 0);
  EXPECT_EQ(file.metadata().at("format"), "pt");
}

TEST(SafetensorsTest, SerializeRoundTripInMemory) {
  auto bytes = SerializeSafetensors(SampleTensors(), {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  uint64_t header_len;
  std::memcpy(&header_len, bytes->data(), 8);
  EXPECT_EQ(header_len % 8, 0u) << "header padded to a multiple of 8";
  EXPECT_EQ(bytes->substr(8, 1), "{");
  auto file = SafetensorsFile::FromBuffer(*bytes, "mem.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  ExpectSampleContents(**file);
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "/loader_test_XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(SafetensorsTest, WriteThenOpenMapsTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, SampleTensors(), {{"format", "pt"}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), path);
  ExpectSampleContents(**file);
  // The data section starts 8-byte aligned within the (page-aligned) mapping.
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*file)->tensors()[0].data) % 8, 0u);
}

TEST(SafetensorsTest, OpenErrors) {
  TempDir dir;
  auto missing = SafetensorsFile::Open(dir.path() + "/nope.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.safetensors"));
  EXPECT_THAT(std::string(missing.status().message()), Not(HasSubstr(dir.path())));

  auto directory = SafetensorsFile::Open(dir.path());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);

  const std::string empty = dir.path() + "/empty.safetensors";
  FILE* f = std::fopen(empty.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  std::fclose(f);
  EXPECT_EQ(SafetensorsFile::Open(empty).status().code(), absl::StatusCode::kDataLoss);

  const std::string corrupt = dir.path() + "/corrupt.safetensors";
  f = std::fopen(corrupt.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  const std::string bytes = File(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  auto bad = SafetensorsFile::Open(corrupt);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("corrupt.safetensors: tensor \"w\""));
}

TEST(SafetensorsTest, SerializeRejectsInconsistentInput) {
  EXPECT_EQ(SerializeSafetensors({{"w", DType::kF32, {2}, "abc"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SerializeSafetensors({{"w", DType::kF32, {-1}, ""}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SerializeSafetensors({{"w", DType::kI32, {1}, "abcd"}, {"w", DType::kI32, {1}, "abcd"}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SerializeSafetensors({{"__metadata__", DType::kI32, {1}, "abcd"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SerializeSafetensors({{"bad\xff", DType::kI32, {1}, "abcd"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(SerializeSafetensors({}).ok());
}

TEST(SafetensorsTest, CopyToFloat32ChecksOutputSize) {
  auto bytes = SerializeSafetensors(SampleTensors());
  ASSERT_TRUE(bytes.ok());
  auto file = SafetensorsFile::FromBuffer(*bytes, "x");
  ASSERT_TRUE(file.ok());
  std::vector<float> wrong(5);
  EXPECT_EQ(CopyToFloat32((*file)->tensors()[0], absl::MakeSpan(wrong)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, DTypeHelpers) {
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(DTypeName(DType::kF16), "F16");
  EXPECT_TRUE(IsFloat(DType::kBF16));
  EXPECT_FALSE(IsFloat(DType::kI32));
}

// A cheap, deterministic mutation pass over a good file (the nightly libFuzzer run is LDR-3):
// every mutant either parses or fails with a status; views of a parsed mutant stay in bounds.
TEST(SafetensorsTest, MutatedFilesNeverCrash) {
  auto good = SerializeSafetensors(SampleTensors(), {{"format", "pt"}});
  ASSERT_TRUE(good.ok());
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bytes = *good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % bytes.size();
      switch (rng() % 4) {
        case 0:
          bytes[pos] = static_cast<char>(rng());
          break;
        case 1:
          bytes[pos] = "0123456789[]{},:\"-"[rng() % 18];
          break;
        case 2:
          bytes.erase(pos, 1 + rng() % 8);
          break;
        default:
          bytes.insert(pos, 1, static_cast<char>(rng()));
          break;
      }
      if (bytes.empty()) bytes = "x";
    }
    auto file = SafetensorsFile::FromBuffer(bytes, "fuzz");
    if (!file.ok()) continue;
    ++accepted;
    uint64_t total = 0;
    for (const TensorView& t : (*file)->tensors()) {
      EXPECT_EQ(static_cast<uint64_t>(t.num_elements()) * DTypeSize(t.dtype), t.nbytes);
      total += t.nbytes;
    }
    EXPECT_LE(total, bytes.size());
  }
  EXPECT_GT(accepted, 0) << "some mutants (e.g. of tensor data) are still valid";
}

}  // namespace
}  // namespace griffin::loader

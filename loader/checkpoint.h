// A model folder in the Hugging Face RecurrentGemma layout (SPEC.md §8.3):
//   config.json
//   model.safetensors | model.safetensors.index.json + the shards it names
//   tokenizer.model (optional: without it the model still serves token ids)
#ifndef GRIFFIN_LOADER_CHECKPOINT_H_
#define GRIFFIN_LOADER_CHECKPOINT_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "loader/model_config.h"
#include "loader/safetensors.h"

namespace griffin::loader {

// What the engine expects to find: a name and its exact shape. Optional tensors may be absent
// (an untied lm_head.weight copy).
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool optional = false;
};

class Checkpoint {
 public:
  // Opens `dir`: parses config.json, maps every safetensors file (a single model.safetensors, or the
  // shards listed by model.safetensors.index.json, each checked to hold exactly the tensors the index
  // assigns it), and notes tokenizer.model if present. Errors: NOT_FOUND for a missing folder,
  // config.json or weights file; the parser's errors otherwise. Nothing is left open on error.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const ModelConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  // Empty when the folder has no tokenizer.model.
  const std::string& tokenizer_path() const { return tokenizer_path_; }

  // nullptr if no file holds `name`. Views stay valid while the Checkpoint lives.
  const TensorView* Find(std::string_view name) const;
  std::vector<const TensorView*> tensors() const;

  // LDR-2: every non-optional spec present with exactly its shape, every tensor in the files named
  // by a spec, and float dtypes only. FAILED_PRECONDITION naming the tensor (and both shapes for a
  // shape mismatch). The first problem found is reported.
  absl::Status Validate(absl::Span<const TensorSpec> expected) const;

 private:
  Checkpoint() = default;

  std::string dir_;
  std::string tokenizer_path_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace griffin::loader

#endif  // GRIFFIN_LOADER_CHECKPOINT_H_

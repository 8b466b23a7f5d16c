// Test support: writes a model folder (config.json + model.safetensors) with random weights for any
// configuration, so engine, CLI and server tests need no downloaded model.
#ifndef GRIFFIN_ENGINE_RANDOM_CHECKPOINT_H_
#define GRIFFIN_ENGINE_RANDOM_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "loader/model_config.h"
#include "loader/safetensors.h"

namespace griffin::engine {

// A small configuration for tests: the given block pattern over `num_layers`, window `window`.
loader::ModelConfig TinyConfig(std::vector<loader::BlockType> pattern, int num_layers, int window);

// config.json text for `config` (Hugging Face field names; both block-type keys).
std::string ConfigJson(const loader::ModelConfig& config);

// Writes `dir`/config.json and `dir`/model.safetensors (created if needed). Weights are drawn from
// N(0, 1/fan_in) with a fixed `seed`; RG-LRU a_param so that a ∈ [0.9, 0.999] as in the paper's init.
// `dtype` is F32, BF16 or F16.
absl::Status WriteRandomCheckpoint(const std::string& dir, const loader::ModelConfig& config,
                                   uint64_t seed, loader::DType dtype = loader::DType::kF32);

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_RANDOM_CHECKPOINT_H_

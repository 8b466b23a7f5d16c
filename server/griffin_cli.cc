// griffin-cli: run a Griffin-family checkpoint from the command line.
//
//   griffin-cli info     --model DIR [--json]
//   griffin-cli generate --model DIR (--prompt TEXT | --ids 2,17,9) [sampling flags] [--output-ids]
//   griffin-cli score    --model DIR (--text TEXT | --ids 2,17,9) [--decode | --chunk N]
//
// Errors are one line on stderr and exit code 1 (2 for usage errors).
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/program_info.h"
#include "base/status_macros.h"
#include "base/utf8.h"
#include "engine/backend_factory.h"
#include "engine/cpu_backend.h"
#include "engine/griffin_model.h"
#include "engine/sampler.h"
#include "engine/state_layout.h"
#include "loader/checkpoint.h"
#include "loader/model_config.h"
#include "loader/tokenizer.h"
#include "nlohmann/json.hpp"
#include "server/detokenizer.h"

ABSL_FLAG(std::string, model, "", "model folder (Hugging Face RecurrentGemma layout)");
ABSL_FLAG(bool, json, false, "info: print JSON");
ABSL_FLAG(std::string, quantization, "none",
          "generate, score: none, or fp8 (the projections' weights in FP8 E4M3 with one scale per "
          "output row, emulated: the numbers griffin-server --quantization fp8 computes)");
ABSL_FLAG(bool, fp8_activations, true,
          "generate, score with --quantization fp8: the activations quantized per token too "
          "(W8A8: what griffin-server's GPU path computes for prefill and decode batches; its "
          "batch-1 decode is W8A16); false: W8A16");
ABSL_FLAG(std::string, numerics, "float32",
          "generate, score without --quantization: float32 (the reference) or bf16 (weights and "
          "every GEMM input rounded to bf16, as the GPU's bf16 path sees them): the baseline an "
          "FP8 figure is compared to");
ABSL_FLAG(std::string, prompt, "", "generate: prompt text (BOS is prepended)");
ABSL_FLAG(std::string, text, "", "score: text to score (BOS is prepended)");
ABSL_FLAG(std::string, ids, "", "comma-separated token ids, used as given (no BOS added)");
ABSL_FLAG(int, max_tokens, 64, "generate: tokens to generate at most");
ABSL_FLAG(double, temperature, 0.0, "generate: sampling temperature, 0 = greedy");
ABSL_FLAG(int, top_k, -1, "generate: keep the k most likely tokens (-1 = off)");
ABSL_FLAG(double, top_p, 1.0, "generate: nucleus probability in (0, 1]");
ABSL_FLAG(double, min_p, 0.0, "generate: drop tokens below min_p x the top probability");
ABSL_FLAG(double, repetition_penalty, 1.0, "generate: > 0, 1 = off");
ABSL_FLAG(uint64_t, seed, 0, "generate: random seed (same seed, same output)");
ABSL_FLAG(std::string, stop_ids, "", "generate: extra comma-separated ids that end generation");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep going past the end-of-sequence id");
ABSL_FLAG(bool, output_ids, false, "generate: print ids (one per line) instead of text");
ABSL_FLAG(bool, decode, false, "score: feed the tokens one at a time (decode path)");
ABSL_FLAG(int, chunk, 0, "score: prefill in chunks of this many tokens (0 = all at once)");

namespace griffin {
namespace {

using engine::CpuBackend;
using engine::LogitsRequest;
using engine::StepEntry;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "griffin-cli: %s\n", status.ToString().c_str());
  return 1;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& text, const char* flag) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, " holds a value that is not an integer id"));
    }
    ids.push_back(id);
  }
  return ids;
}

struct Model {
  std::unique_ptr<loader::Checkpoint> checkpoint;
  std::unique_ptr<loader::Tokenizer> tokenizer;  // null without tokenizer.model
  std::unique_ptr<CpuBackend> backend;
};

// "loading DIR: <status>": every load error names the folder it came from.
absl::Status InFolder(const std::string& dir, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat("loading ", SafeName(dir), ": ", status.message()));
}

absl::StatusOr<Model> LoadModel() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  Model model;
  absl::StatusOr<std::unique_ptr<loader::Checkpoint>> checkpoint = loader::Checkpoint::Open(dir);
  if (!checkpoint.ok()) return InFolder(dir, checkpoint.status());
  model.checkpoint = std::move(*checkpoint);
  if (!model.checkpoint->tokenizer_path().empty()) {
    absl::StatusOr<std::unique_ptr<loader::Tokenizer>> tokenizer =
        loader::Tokenizer::Load(model.checkpoint->tokenizer_path());
    if (!tokenizer.ok()) return InFolder(dir, tokenizer.status());
    model.tokenizer = std::move(*tokenizer);
  }
  absl::StatusOr<engine::WeightQuantization> quantization =
      engine::ParseWeightQuantization(absl::GetFlag(FLAGS_quantization));
  if (!quantization.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--quantization: ", quantization.status().message()));
  }
  const std::string numerics = absl::GetFlag(FLAGS_numerics);
  if (numerics != "float32" && numerics != "bf16") {
    return absl::InvalidArgumentError("--numerics must be float32 or bf16");
  }
  const bool fp8 = *quantization == engine::WeightQuantization::kFp8;
  if (fp8 && numerics != "float32") {
    return absl::InvalidArgumentError(
        "--numerics applies without --quantization (FP8's emulation rounds to bf16 already)");
  }
  // FP8: W8A8 emulated on every pass; the GPU runs its passes of two or more tokens (prefill,
  // decode batches) so, and a lone sequence's one-token decode passes W8A16.
  const engine::CpuNumerics chosen =
      fp8 ? (absl::GetFlag(FLAGS_fp8_activations)
                 ? engine::CpuNumerics::kEmulateFp8WeightsAndActivations
                 : engine::CpuNumerics::kEmulateFp8Weights)
          : (numerics == "bf16" ? engine::CpuNumerics::kEmulateBf16Gemm
                                : engine::CpuNumerics::kFloat32);
  absl::StatusOr<std::unique_ptr<CpuBackend>> backend =
      CpuBackend::Create(*model.checkpoint, /*num_slots=*/1, chosen);
  if (!backend.ok()) return InFolder(dir, backend.status());
  model.backend = std::move(*backend);
  return model;
}

// The prompt as ids: --ids verbatim, else BOS + the encoded text flag.
absl::StatusOr<std::vector<int32_t>> PromptIds(const Model& model, const std::string& text,
                                               const char* text_flag) {
  const std::string ids_flag = absl::GetFlag(FLAGS_ids);
  if (!ids_flag.empty() && !text.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("give either --ids or --", text_flag, ", not both"));
  }
  std::vector<int32_t> ids;
  if (!ids_flag.empty()) {
    ASSIGN_OR_RETURN(ids, ParseIds(ids_flag, "ids"));
  } else {
    if (model.tokenizer == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the model folder has no tokenizer.model: pass --ids instead of --", text_flag));
    }
    ids.push_back(model.checkpoint->config().bos_token_id);
    ASSIGN_OR_RETURN(std::vector<int> encoded, model.tokenizer->Encode(text));
    ids.insert(ids.end(), encoded.begin(), encoded.end());
  }
  if (ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  const int vocab = model.checkpoint->config().vocab_size;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is out of range [0, ", vocab, ")"));
    }
  }
  return ids;
}

// 2682862080 → "2,682,862,080".
std::string WithThousands(int64_t n) {
  std::string digits = absl::StrCat(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

// 16.44 MiB, 180.00 KiB, 768 B: small models' state is not "0.00 MiB".
std::string HumanBytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 20)) return absl::StrFormat("%.2f MiB", bytes / 1048576.0);
  if (bytes >= 1024) return absl::StrFormat("%.2f KiB", bytes / 1024.0);
  return absl::StrCat(bytes, " B");
}

absl::Status Info() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  // Only config.json is needed: info works on a folder without weights.
  absl::StatusOr<loader::ModelConfig> parsed = loader::LoadModelConfig(dir + "/config.json");
  if (!parsed.ok()) return InFolder(dir, parsed.status());
  const loader::ModelConfig& c = *parsed;
  const int64_t params = engine::GriffinParameterCount(c);
  const engine::StateSize gpu = engine::StateLayout::ForCuda(c).size();
  const engine::StateSize cpu = engine::StateLayout::ForCpu(c).size();
  std::string pattern;
  for (loader::BlockType t : c.block_types)
    pattern += t == loader::BlockType::kRecurrent ? 'R' : 'A';
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = {
        {"vocab_size", c.vocab_size},
        {"hidden_size", c.hidden_size},
        {"mlp_width", c.mlp_width},
        {"num_layers", c.num_layers},
        {"recurrent_layers", c.num_recurrent_layers()},
        {"attention_layers", c.num_attention_layers()},
        {"block_pattern", pattern},
        {"num_heads", c.num_heads},
        {"num_kv_heads", c.num_kv_heads},
        {"head_dim", c.head_dim},
        {"lru_width", c.lru_width},
        {"attention_window", c.attention_window},
        {"conv1d_width", c.conv1d_width},
        {"logits_soft_cap", c.logits_soft_cap},
        {"parameters", params},
        {"weight_bytes_bf16", engine::DeviceWeightBytes(c, false)},
        {"weight_bytes_fp8", engine::DeviceWeightBytes(c, true)},
        {"state_bytes_per_sequence_bf16", gpu.total()},
        {"state_bytes_per_sequence_float32", cpu.total()},
        {"state_bytes_bf16",
         {{"rg_lru", gpu.lru_bytes}, {"conv", gpu.conv_bytes}, {"kv", gpu.kv_bytes}}},
    };
    std::cout << j.dump(2) << "\n";
    return absl::OkStatus();
  }
  // A Hawk model (no attention layer) has no heads, window or KV cache to speak of.
  const std::string attention =
      c.num_attention_layers() == 0
          ? std::string("none (all layers recurrent)")
          : absl::StrFormat("%d heads x %d, %d kv heads, window %d (+ the current token)",
                            c.num_heads, c.head_dim, c.num_kv_heads, c.attention_window);
  std::string parts = absl::StrCat("RG-LRU ", HumanBytes(gpu.lru_bytes), " fp32, conv ",
                                   HumanBytes(gpu.conv_bytes));
  if (c.num_attention_layers() > 0) absl::StrAppend(&parts, ", KV ", HumanBytes(gpu.kv_bytes));
  std::cout << absl::StrFormat(
      "model            %s\n"
      "layers           %d (%d recurrent, %d attention): %s\n"
      "hidden_size      %d, lru_width %d, mlp_width %d, vocab %d\n"
      "attention        %s\n"
      "parameters       %s\n"
      "weights          %s on the GPU in bf16, %s with --quantization fp8\n"
      "state/sequence   %s with bf16 activations (%s)\n"
      "                 %s on the float32 CPU backend; constant in sequence length\n",
      dir, c.num_layers, c.num_recurrent_layers(), c.num_attention_layers(), pattern, c.hidden_size,
      c.lru_width, c.mlp_width, c.vocab_size, attention, WithThousands(params),
      HumanBytes(engine::DeviceWeightBytes(c, false)),
      HumanBytes(engine::DeviceWeightBytes(c, true)), HumanBytes(gpu.total()), parts,
      HumanBytes(cpu.total()));
  return absl::OkStatus();
}

absl::Status Generate() {
  ASSIGN_OR_RETURN(Model model, LoadModel());
  const loader::ModelConfig& config = model.checkpoint->config();
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                   PromptIds(model, absl::GetFlag(FLAGS_prompt), "prompt"));
  engine::SamplingParams params;
  params.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  params.top_k = absl::GetFlag(FLAGS_top_k);
  params.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  params.min_p = static_cast<float>(absl::GetFlag(FLAGS_min_p));
  params.repetition_penalty = static_cast<float>(absl::GetFlag(FLAGS_repetition_penalty));
  params.seed = absl::GetFlag(FLAGS_seed);
  if (!(params.temperature >= 0.0f) || params.temperature > 1e6f) {
    return absl::InvalidArgumentError("--temperature must be finite and >= 0");
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError("--top_p must be in (0, 1]");
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    return absl::InvalidArgumentError("--min_p must be in [0, 1]");
  }
  if (!(params.repetition_penalty > 0.0f) || params.repetition_penalty > 1e6f) {
    return absl::InvalidArgumentError("--repetition_penalty must be finite and > 0");
  }
  if (params.top_k == 0 || params.top_k < -1) {
    return absl::InvalidArgumentError("--top_k must be -1 (off) or positive");
  }
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  if (max_tokens <= 0) return absl::InvalidArgumentError("--max_tokens must be positive");
  ASSIGN_OR_RETURN(std::vector<int32_t> stop_ids,
                   ParseIds(absl::GetFlag(FLAGS_stop_ids), "stop_ids"));
  if (!absl::GetFlag(FLAGS_ignore_eos)) stop_ids.push_back(config.eos_token_id);
  const bool output_ids = absl::GetFlag(FLAGS_output_ids) || model.tokenizer == nullptr;

  std::vector<int32_t> context = prompt;
  std::vector<float> logits(config.vocab_size);
  server::IncrementalDetokenizer detokenizer(model.tokenizer.get());
  StepEntry entry{.slot = 0, .position = 0, .tokens = prompt, .logits = LogitsRequest::kLast};
  for (int step = 0; step < max_tokens; ++step) {
    RETURN_IF_ERROR(model.backend->Step({&entry, 1}, absl::MakeSpan(logits)));
    ASSIGN_OR_RETURN(int token, engine::SampleToken(logits, params, context, step));
    if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) break;
    context.push_back(token);
    if (output_ids) {
      std::cout << token << "\n";
    } else {
      std::cout << detokenizer.Add(token);
    }
    std::cout.flush();
    entry.position = model.backend->NextPosition(0);
    entry.tokens = absl::MakeConstSpan(context).subspan(context.size() - 1, 1);
  }
  if (!output_ids) std::cout << detokenizer.Finish() << "\n";
  return absl::OkStatus();
}

absl::Status Score() {
  ASSIGN_OR_RETURN(Model model, LoadModel());
  const int vocab = model.checkpoint->config().vocab_size;
  ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                   PromptIds(model, absl::GetFlag(FLAGS_text), "text"));
  const bool decode = absl::GetFlag(FLAGS_decode);
  int chunk = absl::GetFlag(FLAGS_chunk);
  if (chunk < 0) return absl::InvalidArgumentError("--chunk must be >= 0");
  if (decode && chunk > 0) return absl::InvalidArgumentError("give --decode or --chunk, not both");
  if (decode) chunk = 1;
  const int T = static_cast<int>(tokens.size());
  if (chunk == 0) chunk = T;

  // logits[t] is the distribution of the token after position t.
  std::vector<float> logits(static_cast<size_t>(T) * vocab);
  for (int start = 0; start < T; start += chunk) {
    const int n = std::min(chunk, T - start);
    StepEntry entry{.slot = 0,
                    .position = start,
                    .tokens = absl::MakeConstSpan(tokens).subspan(start, n),
                    .logits = LogitsRequest::kAll};
    RETURN_IF_ERROR(model.backend->Step(
        {&entry, 1}, absl::MakeSpan(logits).subspan(static_cast<size_t>(start) * vocab,
                                                    static_cast<size_t>(n) * vocab)));
  }
  nlohmann::json positions = nlohmann::json::array();
  std::vector<float> log_probs(vocab);
  double total = 0.0;
  for (int t = 0; t < T; ++t) {
    absl::Span<const float> row =
        absl::MakeConstSpan(logits).subspan(static_cast<size_t>(t) * vocab, vocab);
    engine::LogSoftmax(row, absl::MakeSpan(log_probs));
    const int argmax = engine::ArgMax(row);
    nlohmann::json p = {{"position", t},
                        {"token", tokens[t]},
                        {"argmax", argmax},
                        {"argmax_logprob", log_probs[argmax]}};
    if (t + 1 < T) {
      p["next_token"] = tokens[t + 1];
      p["logprob"] = log_probs[tokens[t + 1]];
      total += log_probs[tokens[t + 1]];
    }
    positions.push_back(std::move(p));
  }
  nlohmann::json out = {
      {"mode", decode ? "decode" : (chunk == T ? "prefill" : absl::StrCat("chunk:", chunk))},
      {"num_tokens", T},
      {"total_logprob", total},
      {"mean_nll", T > 1 ? -total / (T - 1) : 0.0},
      {"positions", std::move(positions)}};
  std::cout << out.dump() << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace griffin

int main(int argc, char** argv) {
  std::vector<char*> args = griffin::ParseProgramFlags(
      argc, argv, "griffin-cli", "server/griffin_cli.cc",
      "runs a Griffin-family model folder from the command line.\n\n"
      "  griffin-cli <info|generate|score> --model DIR [flags]\n"
      "  info      config, parameter count and state bytes per sequence (config.json suffices)\n"
      "  generate  stream a continuation of --prompt TEXT or --ids a,b,c\n"
      "  score     JSON log-probabilities of --text TEXT or --ids a,b,c (--decode, --chunk N)");
  if (args.size() != 2) {
    std::fprintf(stderr,
                 "griffin-cli: expected one command (info, generate or score); see --help\n");
    return 2;
  }
  const std::string command = args[1];
  absl::Status status;
  if (command == "info") {
    status = griffin::Info();
  } else if (command == "generate") {
    status = griffin::Generate();
  } else if (command == "score") {
    status = griffin::Score();
  } else {
    std::fprintf(stderr, "griffin-cli: unknown command (expected info, generate or score)\n");
    return 2;
  }
  return status.ok() ? 0 : griffin::Fail(status);
}

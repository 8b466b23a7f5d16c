// What a forward pass costs, learned from the passes the engine runs: t = a + b * decode_rows +
// c * prefill_tokens, fitted by least squares over the most recent steps. The engine uses it to cap
// each step's prefill tokens while sequences are decoding (EngineOptions::step_time_target): a
// chunked prefill then never stretches the running decodes' time per output token beyond the
// target (Sarathi-Serve's SLO-derived token budget), whatever the model size or GPU, where a fixed
// token budget is right for one of them only (issue 13).
#ifndef GRIFFIN_ENGINE_STEP_COST_MODEL_H_
#define GRIFFIN_ENGINE_STEP_COST_MODEL_H_

#include <cstdint>
#include <deque>
#include <optional>

#include "absl/time/time.h"

namespace griffin::engine {

class StepCostModel {
 public:
  // Steps kept for the fit: recent enough to follow a change (a longer context slows attention),
  // many enough to average out timing noise.
  static constexpr int kWindow = 64;
  // A step tells the prefill cost only if it carries this many prompt tokens; the fit waits for
  // kMinInformative of them in the window and keeps its last good coefficients through a run of
  // decode-only steps (they say nothing new about prefill).
  static constexpr int64_t kInformativeTokens = 64;
  static constexpr int kMinInformative = 4;

  void Observe(int decode_rows, int64_t prefill_tokens, absl::Duration time);

  // The most prefill tokens a step with `decode_rows` decodes can carry and still be predicted to
  // take at most `target` (0 when the decodes alone are predicted to take longer); nullopt until
  // the model has seen enough prefill to know its cost.
  std::optional<int64_t> PrefillTokensWithin(absl::Duration target, int decode_rows) const;

  // The fitted coefficients (seconds; per row, per token), once there are any.
  struct Coefficients {
    double base = 0, per_row = 0, per_token = 0;
  };
  std::optional<Coefficients> coefficients() const { return fit_; }

 private:
  struct Sample {
    double rows, tokens, seconds;
  };
  void Fit();

  std::deque<Sample> samples_;
  std::optional<Coefficients> fit_;
};

}  // namespace griffin::engine

#endif  // GRIFFIN_ENGINE_STEP_COST_MODEL_H_

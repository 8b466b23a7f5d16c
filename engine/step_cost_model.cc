#include "engine/step_cost_model.h"

#include <algorithm>
#include <cmath>

namespace griffin::engine {
namespace {

// Solves the 3x3 system m x = v by Gaussian elimination with partial pivoting; false when
// singular.
bool Solve3(double m[3][3], double v[3], double x[3]) {
  for (int col = 0; col < 3; ++col) {
    int pivot = col;
    for (int r = col + 1; r < 3; ++r) {
      if (std::fabs(m[r][col]) > std::fabs(m[pivot][col])) pivot = r;
    }
    if (std::fabs(m[pivot][col]) < 1e-300) return false;
    if (pivot != col) {
      for (int c = 0; c < 3; ++c) std::swap(m[col][c], m[pivot][c]);
      std::swap(v[col], v[pivot]);
    }
    for (int r = col + 1; r < 3; ++r) {
      const double f = m[r][col] / m[col][col];
      for (int c = col; c < 3; ++c) m[r][c] -= f * m[col][c];
      v[r] -= f * v[col];
    }
  }
  for (int r = 2; r >= 0; --r) {
    double s = v[r];
    for (int c = r + 1; c < 3; ++c) s -= m[r][c] * x[c];
    x[r] = s / m[r][r];
  }
  return true;
}

}  // namespace

void StepCostModel::Observe(int decode_rows, int64_t prefill_tokens, absl::Duration time) {
  if (decode_rows < 0 || prefill_tokens < 0 || decode_rows + prefill_tokens == 0) return;
  samples_.push_back({static_cast<double>(decode_rows), static_cast<double>(prefill_tokens),
                      absl::ToDoubleSeconds(time)});
  if (samples_.size() > kWindow) samples_.pop_front();
  Fit();
}

void StepCostModel::Fit() {
  int informative = 0;
  for (const Sample& s : samples_) informative += s.tokens >= kInformativeTokens;
  if (informative < kMinInformative) return;  // keep the last good fit
  // Features scaled to order one (rows / 256, tokens / 4096) so the normal equations are well
  // conditioned. A small ridge on the per-row cost keeps them solvable when the rows never vary
  // (the base and the per-row cost are then one number, which is all a prediction at those rows
  // needs); it leaves the per-token cost, the one the target is met with, unbiased.
  constexpr double kRowScale = 256.0, kTokenScale = 4096.0;
  double m[3][3] = {}, v[3] = {};
  for (const Sample& s : samples_) {
    const double x[3] = {1.0, s.rows / kRowScale, s.tokens / kTokenScale};
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) m[i][j] += x[i] * x[j];
      v[i] += x[i] * s.seconds;
    }
  }
  const double trace = m[0][0] + m[1][1] + m[2][2];
  m[1][1] += 1e-6 * trace;
  m[2][2] += 1e-12 * trace;
  double theta[3];
  if (!Solve3(m, v, theta)) return;
  const Coefficients c{theta[0], theta[1] / kRowScale, theta[2] / kTokenScale};
  // A prompt token that costs nothing is a fit of noise, not a cost: keep the last good one.
  if (!(c.per_token > 0) || !std::isfinite(c.base) || !std::isfinite(c.per_row)) return;
  fit_ = c;
}

std::optional<int64_t> StepCostModel::PrefillTokensWithin(absl::Duration target,
                                                          int decode_rows) const {
  if (!fit_.has_value()) return std::nullopt;
  const double left =
      absl::ToDoubleSeconds(target) - fit_->base - fit_->per_row * std::max(decode_rows, 0);
  if (left <= 0) return 0;
  const double tokens = std::floor(left / fit_->per_token);
  return tokens >= 9e18 ? INT64_MAX : static_cast<int64_t>(tokens);
}

}  // namespace griffin::engine

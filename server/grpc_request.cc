#include "server/grpc_request.h"

namespace griffin::server {

absl::StatusOr<GenerateInput> GenerateInputFromProto(const griffin::v1::GenerateRequest& req) {
  namespace pb = ::griffin::v1;
  GenerateInput in;
  switch (req.input_case()) {
    case pb::GenerateRequest::kText:
      in.text = req.text();
      break;
    case pb::GenerateRequest::kTokenIds:
      in.token_ids =
          std::vector<int64_t>(req.token_ids().ids().begin(), req.token_ids().ids().end());
      break;
    default:
      return absl::InvalidArgumentError("input must set text or token_ids");
  }
  const pb::SamplingParams& s = req.sampling();
  if (s.has_temperature()) in.temperature = s.temperature();
  if (s.has_top_k()) in.top_k = s.top_k();
  if (s.has_top_p()) in.top_p = s.top_p();
  if (s.has_min_p()) in.min_p = s.min_p();
  if (s.has_repetition_penalty()) in.repetition_penalty = s.repetition_penalty();
  if (s.has_presence_penalty()) in.presence_penalty = s.presence_penalty();
  if (s.has_frequency_penalty()) in.frequency_penalty = s.frequency_penalty();
  if (s.has_seed()) in.seed = s.seed();
  for (const auto& [id, bias] : s.logit_bias()) in.logit_bias.emplace_back(id, bias);
  const pb::StoppingCriteria& st = req.stopping();
  if (st.has_max_tokens()) in.max_tokens = st.max_tokens();
  if (st.has_min_tokens()) in.min_tokens = st.min_tokens();
  in.stop.assign(st.stop().begin(), st.stop().end());
  in.stop_token_ids.assign(st.stop_token_ids().begin(), st.stop_token_ids().end());
  in.ignore_eos = st.ignore_eos();
  if (req.has_top_logprobs()) in.top_logprobs = req.top_logprobs();
  if (req.has_prompt_logprobs()) in.prompt_logprobs = req.prompt_logprobs();
  if (req.has_cache_salt()) in.cache_salt = req.cache_salt();
  if (req.has_session_id()) in.session_id = req.session_id();
  if (req.has_n()) in.n = req.n();
  return in;
}

}  // namespace griffin::server

// Status propagation macros. Abseil's own are not in the Debian (LTS 2022-06) release.
#ifndef GRIFFIN_BASE_STATUS_MACROS_H_
#define GRIFFIN_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define GRIFFIN_CONCAT_INNER_(a, b) a##b
#define GRIFFIN_CONCAT_(a, b) GRIFFIN_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status griffin_status_ = (expr);           \
    if (!griffin_status_.ok()) return griffin_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())`: evaluates F() (an absl::StatusOr<T>); on error returns its
// status, otherwise moves the value into the declaration on the left.
#define ASSIGN_OR_RETURN(lhs, expr) \
  GRIFFIN_ASSIGN_OR_RETURN_IMPL_(GRIFFIN_CONCAT_(griffin_statusor_, __LINE__), lhs, expr)
#define GRIFFIN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return std::move(tmp).status();       \
  lhs = std::move(tmp).value()

#endif  // GRIFFIN_BASE_STATUS_MACROS_H_

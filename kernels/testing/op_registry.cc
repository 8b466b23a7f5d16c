#include "kernels/testing/op_registry.h"

namespace griffin::kernels::testing {
namespace {
// Function-local statics: registration runs during static initialisation of other translation
// units, in no defined order, so nothing here may depend on a namespace-scope object.
std::vector<std::vector<OpCase> (*)()>& Makers() {
  static auto* makers = new std::vector<std::vector<OpCase> (*)()>();
  return *makers;
}
}  // namespace

int RegisterOpCases(std::vector<OpCase> (*make_cases)()) {
  Makers().push_back(make_cases);
  return static_cast<int>(Makers().size());
}

const std::vector<OpCase>& AllOpCases() {
  static const auto* cases = [] {
    auto* all = new std::vector<OpCase>();
    for (auto* make : Makers()) {
      for (OpCase& c : make()) all->push_back(std::move(c));
    }
    return all;
  }();
  return *cases;
}

}  // namespace griffin::kernels::testing

#include "loader/json_util.h"

#include <exception>
#include <set>
#include <utility>
#include <vector>

namespace griffin::loader {
namespace {

struct Frame {
  std::set<std::string> keys;
  std::string owner;  // the key in the parent object whose value this object is ("" at the top)
};

}  // namespace

StrictJson ParseStrictJson(std::string_view text) {
  StrictJson result;
  std::vector<Frame> frames;
  std::string last_key;
  bool duplicate = false;
  bool too_deep = false;
  using Event = nlohmann::json::parse_event_t;
  auto callback = [&](int depth, Event event, nlohmann::json& parsed) -> bool {
    switch (event) {
      case Event::object_start:
        if (depth >= kMaxJsonDepth) too_deep = true;
        frames.push_back(Frame{{}, last_key});
        break;
      case Event::array_start:
        if (depth >= kMaxJsonDepth) too_deep = true;
        break;
      case Event::object_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case Event::key: {
        if (frames.empty() || !parsed.is_string()) break;
        const std::string& key = parsed.get_ref<const std::string&>();
        last_key = key;
        if (!frames.back().keys.insert(key).second && !duplicate) {
          duplicate = true;
          result.duplicate_key = key;
          result.duplicate_depth = depth;
          result.duplicate_owner = frames.back().owner;
        }
        break;
      }
      default:
        break;
    }
    // Once something is wrong, stop building the tree (the parse still runs to its end).
    return !(duplicate || too_deep);
  };
  try {
    nlohmann::json value = nlohmann::json::parse(text.data(), text.data() + text.size(), callback,
                                                 /*allow_exceptions=*/false);
    if (duplicate) {
      result.error = StrictJson::Error::kDuplicateKey;
    } else if (too_deep) {
      result.error = StrictJson::Error::kTooDeep;
    } else if (value.is_discarded()) {
      result.error = StrictJson::Error::kSyntax;
    } else {
      result.value = std::move(value);
    }
  } catch (const std::exception&) {
    result.error = StrictJson::Error::kSyntax;
  }
  return result;
}

}  // namespace griffin::loader

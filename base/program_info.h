// What a program says about itself: `--version` (project version, git commit, build type, CUDA
// targets) and `--help` restricted to the program's own flags. Used by griffin-server,
// griffin-cli and griffin-bench; the values come from a source generated at build time
// (cmake/build_info.cmake), so this library is linked only by those programs.
#ifndef GRIFFIN_BASE_PROGRAM_INFO_H_
#define GRIFFIN_BASE_PROGRAM_INFO_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace griffin {

struct BuildInfo {
  const char* version;     // the project version (CMakeLists.txt), e.g. "0.1.0"
  const char* commit;      // 12 hex digits, "-dirty" when tracked files had changed, or "unknown"
  const char* build_type;  // CMAKE_BUILD_TYPE, e.g. "RelWithDebInfo"
  const char* cuda;        // "CUDA 13.0.88 (SASS 80 86 89 90a, PTX compute_80, ...)", "" without
};

// Defined in the generated build_info.cc.
const BuildInfo& GetBuildInfo();

// One line: "<program> <version> (commit <commit>, <build type>[, <cuda>])".
std::string VersionString(absl::string_view program);

// Parses the command line (absl::ParseCommandLine) after configuring Abseil's usage output:
// `--help` lists the flags defined in `main_file` (a path suffix such as
// "server/griffin_server_main.cc") with their help text, `--helpfull` every flag, `--version`
// prints VersionString(program). Returns the positional arguments, argv[0] first.
std::vector<char*> ParseProgramFlags(int argc, char** argv, absl::string_view program,
                                     absl::string_view main_file, absl::string_view usage);

}  // namespace griffin

#endif  // GRIFFIN_BASE_PROGRAM_INFO_H_

#include "base/program_info.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace griffin {
namespace {

// --help and --helpshort (before a "--" that ends the flags).
bool AsksForHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (arg == "--help" || arg == "-help" || arg == "--helpshort" || arg == "-helpshort") {
      return true;
    }
  }
  return false;
}

// Appends `text` to `out` wrapped at 100 columns, each line indented by `indent` spaces.
void AppendWrapped(std::string* out, absl::string_view text, int indent) {
  const std::string pad(indent, ' ');
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && line.size() + 1 + word.size() + indent > 100) {
      absl::StrAppend(out, pad, line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(out, pad, line, "\n");
}

// The usage message, then every flag defined in `main_file` with its default and help text.
std::string ProgramHelp(absl::string_view main_file) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!flag->IsRetired() && absl::EndsWith(flag->Filename(), main_file)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) {
              return a->Name() < b->Name();
            });
  std::string out = absl::StrCat(absl::ProgramUsageMessage(), "\n\nFlags (--name=value):\n");
  for (const absl::CommandLineFlag* flag : flags) {
    std::string default_value = flag->DefaultValue();
    if (flag->IsOfType<std::string>()) default_value = absl::StrCat("\"", default_value, "\"");
    absl::StrAppend(&out, "  --", flag->Name(), " (default ", default_value, ")\n");
    AppendWrapped(&out, flag->Help(), 6);
  }
  absl::StrAppend(&out, "\n");
  AppendWrapped(&out,
                "--helpfull lists every flag, the libraries' included; --version prints the "
                "version, git commit and build type.",
                0);
  return out;
}

}  // namespace

std::string VersionString(absl::string_view program) {
  const BuildInfo& info = GetBuildInfo();
  std::string out = absl::StrCat(program, " ", info.version, " (commit ", info.commit, ", ",
                                 info.build_type[0] != '\0' ? info.build_type : "no build type");
  if (info.cuda[0] != '\0') absl::StrAppend(&out, ", ", info.cuda);
  absl::StrAppend(&out, ")");
  return out;
}

std::vector<char*> ParseProgramFlags(int argc, char** argv, absl::string_view program,
                                     absl::string_view main_file, absl::string_view usage) {
  // Abseil's own --help shows the flags of files named after the program (griffin-server.cc or
  // griffin-server_main.cc); ours are griffin_server_main.cc and so on, so it printed "No flags
  // matched", and it exits 1. --help and --helpshort are answered here (exit 0); the other usage
  // flags (--helpfull, --helpon=, --helpmatch=) stay Abseil's, shown with the same file filter.
  const std::string file(main_file);
  const std::string version = VersionString(program) + "\n";
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [file](absl::string_view f) { return absl::EndsWith(f, file); };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.version_string = [version] { return version; };
  config.normalize_filename = [file](absl::string_view f) {
    // __FILE__ is absolute, or relative to the build directory under ccache's base_dir.
    if (absl::EndsWith(f, file)) return file;
    while (absl::ConsumePrefix(&f, "../")) {
    }
    return std::string(f);
  };
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  if (AsksForHelp(argc, argv)) {
    std::fputs(ProgramHelp(main_file).c_str(), stdout);
    std::exit(0);
  }
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace griffin

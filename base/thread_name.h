// Names the calling thread as `top -H`, gdb, perf and /proc/PID/task/*/comm show it, so that a
// profile or a per-thread CPU count (bench/thread_cpu.py) says which of the server's threads did
// the work. Linux keeps 15 bytes; longer names are cut there. A no-op where naming fails.
#ifndef GRIFFIN_BASE_THREAD_NAME_H_
#define GRIFFIN_BASE_THREAD_NAME_H_

#include <string_view>

namespace griffin {

void SetCurrentThreadName(std::string_view name);

}  // namespace griffin

#endif  // GRIFFIN_BASE_THREAD_NAME_H_

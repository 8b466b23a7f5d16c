"""Repository-wide pytest policy (tests/README.md): a skip is allowed only where the machine lacks a
GPU or where the Triton interpreter cannot be imported (CPU-only torch has no Triton), and such a
test says so in its reason. Any other skip (a missing binary, package, tool or fixture) is made a
failure of the run, so a regression cannot hide as a skip."""

ALLOWED_SKIP_PREFIXES = ("no GPU", "no CUDA device", "Triton interpreter cannot be imported")

_unexpected = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if not reason.startswith(ALLOWED_SKIP_PREFIXES):
            _unexpected.append(f"{report.nodeid}: {reason}")


def pytest_terminal_summary(terminalreporter):
    if _unexpected:
        terminalreporter.section("unexpected skips (a failure: only a missing GPU may skip)")
        for line in _unexpected:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session, exitstatus):
    if _unexpected and exitstatus == 0:
        session.exitstatus = 1

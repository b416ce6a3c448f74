"""pytest plugin: a skipped database test fails the run (``make test`` must not pass without PostGIS).

Tests that use the ``database_url`` fixture (directly or through another fixture) are marked ``db``. An xfailed
``db`` test (pytest reports it as skipped) ran, and is not counted.
"""

from __future__ import annotations

import pytest

_skipped: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # an xfailed test is reported as skipped too (with ``wasxfail``): it ran, so it is not counted
    if report.skipped and "db" in report.keywords and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: {len(_skipped)} database test(s) were skipped: {', '.join(_skipped[:5])}",
                                red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

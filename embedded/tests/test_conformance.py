"""The conformance run's reading of PyMongo's results and its report (the run
itself needs a PyMongo checkout: ``./dev conformance PATH``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobwatch_embedded import conformance

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="5">
<testcase classname="test.test_change_stream.TestUnifiedChangeStreams" name="test_a" time="0.5"/>
<testcase classname="test.test_change_stream.TestUnifiedChangeStreams" name="test_b" time="0.25">
  <failure message="AssertionError: boom">def test_b():
E   AssertionError: boom
E   assert 1 == 2</failure>
</testcase>
<testcase classname="test.test_change_stream.TestUnifiedChangeStreamsNsType" name="test_c" time="0.0">
  <skipped type="pytest.skip" message="TestUnifiedChangeStreamsNsType runOnRequirements not satisfied">skip</skipped>
</testcase>
<testcase classname="test.test_change_stream.TestCollectionChangeStream" name="test_d" time="1.25"/>
<testcase classname="test.test_change_stream.TestCollectionChangeStream" name="test_e" time="0.5">
  <error message="error">E   TimeoutError</error>
</testcase>
</testsuite></testsuites>
"""


@pytest.fixture
def results(tmp_path: Path) -> conformance.Results:
    report = tmp_path / "junit.xml"
    report.write_text(REPORT)
    unified, prose = conformance.count_outcomes(conformance.read_report(report))
    return conformance.Results(
        "abc123", "jobwatch-embedded 0", "3.13.0", "2026-01-01T00:00:00+00:00", 9.0, unified, prose
    )


def test_outcomes_are_counted_apart_for_unified_and_prose_tests(results: conformance.Results) -> None:
    unified, prose = results.unified, results.prose
    assert (unified.passed, unified.failed, unified.skipped) == (1, 1, 1)
    assert (prose.passed, prose.failed, prose.skipped) == (1, 1, 0)
    assert [(f.test, f.message) for f in unified.failures] == [("TestUnifiedChangeStreams::test_b", "assert 1 == 2")]
    assert unified.skip_reasons == {"TestUnifiedChangeStreamsNsType: runOnRequirements not satisfied": 1}
    assert round(prose.seconds, 1) == 1.8
    lines = conformance.summary(results)
    assert lines[0].startswith("unified change-stream spec tests: 1 passed, 1 failed, 1 skipped (of 3")
    assert "  FAILED TestCollectionChangeStream::test_e: TimeoutError" in lines


def test_the_docs_section_is_rewritten_from_the_figures(results: conformance.Results, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"before\n\n{conformance.MARK_START}\nold figures\n{conformance.MARK_END}\nafter\n")
    conformance.update_page(page, results)
    text = page.read_text()
    assert text.startswith("before\n\n") and text.endswith("\nafter\n") and "old figures" not in text
    assert "| unified change-stream spec tests | 1 | 1 | 1 | 1 s |" in text
    assert conformance.from_json(conformance.to_json(results)) == results

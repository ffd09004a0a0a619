"""The policy file is the one configuration surface: checks, their options, suites and gate settings,
validated at load with messages that name the key and list what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunegate.core.pipeline import build_checks
from tunegate.core.policy import DEFAULT_CHECKS, GatePolicy, load_policy
from tunegate.exceptions import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_configuration_runs_the_whole_gate() -> None:
    policy = GatePolicy()
    assert [name for name, _ in policy.enabled_checks()] == list(DEFAULT_CHECKS) == [
        "record_size", "exact_duplicate", "near_duplicate", "embedding_outlier", "poison_trigger", "poison_content",
        "contributor_policy", "source_diversity"]
    assert policy.suites == ("instruction_record", "instruction_quality")
    keys = [c.key for c in build_checks(policy)]
    assert keys == [*DEFAULT_CHECKS, "gx_instruction_record", "gx_instruction_quality"]


def test_a_checks_section_turns_one_off_and_changes_an_option(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "checks:\n  embedding_outlier: false\n"
                                          "  near_duplicate: {threshold: 0.97, k: 20}\nsuites: []\n"))
    assert policy.disabled_checks() == ["embedding_outlier"]
    checks = {c.key: c for c in build_checks(policy)}
    assert set(checks) == {"record_size", "exact_duplicate", "near_duplicate", "poison_trigger", "poison_content",
                           "contributor_policy", "source_diversity"}
    assert (checks["near_duplicate"].threshold, checks["near_duplicate"].k) == (0.97, 20)  # type: ignore[attr-defined]
    # written into the summary as given, and read back to the same policy
    assert GatePolicy.from_mapping(policy.to_json()) == policy


def test_a_list_of_checks_runs_exactly_those(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "checks: [exact_duplicate, poison_content]\n"))
    assert [n for n, _ in policy.enabled_checks()] == ["exact_duplicate", "poison_content"]


def test_overrides_merge_into_the_file(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "checks:\n  near_duplicate: {threshold: 0.97}\n"))
    changed = policy.with_overrides(checks={"near_duplicate": {"k": 5}, "poison_trigger": False})
    assert dict(changed.enabled_checks())["near_duplicate"] == {"threshold": 0.97, "k": 5}
    assert changed.disabled_checks() == ["poison_trigger"]
    back_on = changed.with_overrides(checks={"poison_trigger": True})
    assert back_on.disabled_checks() == []


@pytest.mark.parametrize(("text", "message"), [
    ("checks:\n  nearest_duplicate: {}\n",
     "checks: unknown check(s) ['nearest_duplicate']; known: record_size, exact_duplicate, near_duplicate"),
    ("checks:\n  gx_suite: {}\n", "Great Expectations suites go under `suites:`"),
    ("checks:\n  near_duplicate: {treshold: 0.9}\n",
     "checks.near_duplicate: unknown option 'treshold'; allowed: threshold (default None), k (default 10)"),
    ("checks:\n  near_duplicate: {threshold: 1.5}\n",
     "checks.near_duplicate: near_duplicate threshold must be a number in (0.0, 1.0], got 1.5"),
    ("checks:\n  near_duplicate: {history_dir: /tmp/h}\n",
     "checks.near_duplicate.history_dir cannot be set in a policy: the history location is set per run"),
    ("checks:\n  exact_duplicate: {k: 3}\n", "checks.exact_duplicate: unknown option 'k'; this check takes no options"),
    ("checks:\n  near_duplicate: maybe\n", "checks.near_duplicate: expected true, false or a mapping of options"),
    ("checks:\n  near_duplicate: {enabled: sometimes}\n", "checks.near_duplicate.enabled must be true or false"),
    ("checks: near_duplicate\n", "checks must be a mapping"),
    ("suites: [no_such_suite]\n", "unknown expectation suite 'no_such_suite'; known suites: instruction_quality"),
    ("ignore_reasons: [near_dup]\n",
     "ignore_reasons names unknown reason codes ['near_dup']; known: canary_flip, check_skipped"),
    ("halt_reasons: [poison_campagin]\n", "halt_reasons names unknown reason codes ['poison_campagin']"),
    ("quarantine_reasons: [gx_expect_column_values_to_be_unicorns]\n", "names unknown reason codes"),
    ("halt_severities: [fatal]\n", "unknown severities ['fatal']; allowed: ['critical', 'warning', 'info']"),
    ("max_quarantined_fraction: 2\n", "max_quarantined_fraction must be a fraction between 0 and 1, got 2"),
    ("chekcs: {}\n", "unknown policy settings ['chekcs']"),
])
def test_a_bad_policy_fails_at_load_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)  # which file


def test_reason_codes_of_the_configured_suites_are_known(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "ignore_reasons: [gx_expect_column_values_to_not_match_regex_list, "
                                          "embedding_outlier]\nhalt_reasons: [poison_campaign]\n"))
    assert policy.quarantines("near_duplicate") and not policy.quarantines("embedding_outlier")
    # a suite's reasons are known only when that suite runs
    with pytest.raises(ConfigError, match="unknown reason codes"):
        load_policy(_write(tmp_path, "suites: [instruction_record]\n"
                                     "ignore_reasons: [gx_expect_column_values_to_not_match_regex_list]\n"))


def test_a_policy_names_the_specific_gx_codes_of_the_configured_suites(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "ignore_reasons: [gx_mojibake]\nquarantine_reasons: [gx_refusal, "
                                          "gx_template_leftover, gx_mojibake, gx_empty_output]\n"))
    assert not policy.quarantines("gx_mojibake")
    assert policy.quarantines("gx_refusal") and policy.quarantines("gx_empty_output")
    assert not policy.quarantines("gx_invisible_characters")  # not in quarantine_reasons
    # gx_mojibake belongs to instruction_quality: without that suite it is an unknown code
    with pytest.raises(ConfigError, match=r"unknown reason codes \['gx_mojibake'\]"):
        load_policy(_write(tmp_path, "suites: [instruction_record]\nignore_reasons: [gx_mojibake]\n"))


def test_a_legacy_expectation_type_still_loads_and_matches_every_code_of_that_type(tmp_path: Path) -> None:
    legacy = "gx_expect_column_values_to_not_match_regex_list"
    policy = load_policy(_write(tmp_path, f"ignore_reasons: [{legacy}]\n"))
    assert policy.ignore_reasons == (legacy,)  # the policy (and the summary) keep what was written
    assert not any(policy.quarantines(c) for c in ("gx_mojibake", "gx_template_leftover", "gx_refusal"))
    assert policy.quarantines("gx_invisible_characters") and policy.quarantines("near_duplicate")
    assert GatePolicy.from_mapping(policy.to_json()) == policy
    # in quarantine_reasons too: only the records of that expectation type are quarantined
    only = GatePolicy(quarantine_reasons=("gx_expect_column_values_to_match_regex",))
    assert only.quarantines("gx_empty_output") and only.quarantines("gx_empty_instruction")
    assert not only.quarantines("gx_overlong_field")


def _suite(tmp_path: Path, meta: dict[str, object] | None) -> Path:
    import json

    exp: dict[str, object] = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"},
                              "severity": "warning"}
    if meta is not None:
        exp["meta"] = meta
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "expectations": [exp]}), encoding="utf-8")
    return path


def test_a_user_suite_without_codes_falls_back_to_the_expectation_type(tmp_path: Path) -> None:
    suite = _suite(tmp_path, None)
    policy = GatePolicy(suites=(str(suite),), ignore_reasons=("gx_expect_column_values_to_not_be_null",))
    assert not policy.quarantines("gx_expect_column_values_to_not_be_null")
    coded = GatePolicy(suites=(str(_suite(tmp_path, {"reason": "gx_no_id"})),), ignore_reasons=("gx_no_id",))
    assert not coded.quarantines("gx_no_id")


@pytest.mark.parametrize(("reason", "message"), [
    ("Mojibake", "meta.reason must be a snake_case code starting with 'gx_'"),
    ("mojibake", "meta.reason must be a snake_case code starting with 'gx_'"),
    ("gx_expect_things", "codes starting with 'gx_expect_' are the fallback"),
    ("gx_critical_failure", "is already a tunegate reason code"),
])
def test_a_bad_meta_reason_fails_at_policy_load(tmp_path: Path, reason: str, message: str) -> None:
    suite = _suite(tmp_path, {"reason": reason})
    with pytest.raises(ConfigError, match="expectation #1 \\(expect_column_values_to_not_be_null\\)") as err:
        GatePolicy(suites=(str(suite),))
    assert message in str(err.value) and str(suite) in str(err.value)


def _doc_tables(path: Path) -> dict[str, dict[str, str]]:
    """``## section`` -> {code: severity} of the tables of docs/reasons.md (first column a code, second its
    severity)."""
    tables: dict[str, dict[str, str]] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tables.setdefault(section, {})[cells[0].strip("`")] = cells[1]
    return tables


def test_docs_list_every_reason_code() -> None:
    """docs/reasons.md is the one list of reason codes: every code tunegate and the shipped suites define, with
    its severity, and none that no longer exists."""
    from tunegate.core.checks.gx_load import suite_reasons
    from tunegate.core.reasons import ISSUE_SEVERITY, RECORD_SEVERITY, gx_severity

    tables = _doc_tables(Path(__file__).resolve().parents[2] / "docs" / "reasons.md")
    assert tables["Record reasons"] == RECORD_SEVERITY
    assert tables["Issue reasons"] == ISSUE_SEVERITY
    assert tables["Great Expectations codes"] == gx_severity(
        r for suite in ("instruction_record", "instruction_quality") for r in suite_reasons(suite))


def test_every_expectation_of_the_shipped_suites_names_its_code() -> None:
    from tunegate.core.checks.gx_load import suite_reasons
    from tunegate.core.policy import DEFAULT_SUITES
    from tunegate.core.reasons import GX_LEGACY_PREFIX

    for suite in DEFAULT_SUITES:
        fallbacks = [r.expectation_type for r in suite_reasons(suite) if r.code.startswith(GX_LEGACY_PREFIX)]
        assert fallbacks == [], suite

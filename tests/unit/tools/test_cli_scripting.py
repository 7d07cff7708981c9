"""The CLI in scripts and CI: --fail-on exit codes, --json outputs, progress on JSON lines, and
every command's --help naming the environment it reads."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from processors.cli.check import EXIT_FAILED_ON
from processors.cli.common import COMMAND_ENV
from processors.cli.main import main, parser
from tests.factories import message, template_entry

UTILITY = {"topic": "whatsapp.templates", "value": template_entry(name="notice",
                                                                  category="UTILITY")}
ACCEPTED = message(message_id="ok", template={"name": "notice", "language": "en_US"})
REJECTED = message(message_id="us", recipient="+12025550123",
                   template={"name": "promo", "language": "en_US"})


def write(path: Path, lines: list[object]) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))
    return str(path)


@pytest.mark.parametrize(("lines", "fail_on", "code"), [
    ([UTILITY, ACCEPTED], ["rejected"], 0),
    ([UTILITY, ACCEPTED, REJECTED], ["rejected"], EXIT_FAILED_ON),
    ([UTILITY, ACCEPTED, REJECTED], [], 0),                     # no --fail-on: 0 as before
    ([UTILITY, ACCEPTED, "{not json"], ["rejected"], 0),
    ([UTILITY, ACCEPTED, "{not json"], ["dead_letter"], EXIT_FAILED_ON),
    ([UTILITY, ACCEPTED, REJECTED], ["dead_letter", "rejected"], EXIT_FAILED_ON),
])
def test_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[object],
                 fail_on: list[str], code: int) -> None:
    flags = [flag for kind in fail_on for flag in ("--fail-on", kind)]
    source = write(tmp_path / "in.jsonl", lines)
    assert main(["check", source, "-o", str(tmp_path / "out.jsonl"), *flags]) == code
    assert ("--fail-on" in capsys.readouterr().err) == (code == EXIT_FAILED_ON)


def test_fail_on_monitored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = json.loads((Path(__file__).resolve().parents[3] / "processors/core/policy/"
                         "default_policy.json").read_text())
    policy["rules"]["MARKETING_PAUSED_US"]["mode"] = "monitor"
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(policy))
    source = write(tmp_path / "in.jsonl", [REJECTED])
    args = ["check", source, "-o", str(tmp_path / "out.jsonl"), "--policy", str(policy_file)]
    assert main([*args, "--fail-on", "rejected"]) == 0
    assert main([*args, "--fail-on", "monitored"]) == EXIT_FAILED_ON


def test_the_summary_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path / "in.jsonl", [UTILITY, ACCEPTED, REJECTED, "{not json"])
    code = main(["check", source, "-o", str(tmp_path / "out.jsonl"), "--json",
                 "--fail-on", "rejected"])
    summary = json.loads(capsys.readouterr().err)
    assert code == EXIT_FAILED_ON
    assert summary["decisions"] == {"accepted": 1, "rejected": 1, "dead_letter": 1}
    assert summary["rejected_by_code"] == {"MARKETING_PAUSED_US": 1}
    assert summary["countries"]["US"] == {"messages": 1, "rejected": 1}
    assert summary["failed_on"] == ["rejected"]


def test_progress_on_long_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines: list[object] = [UTILITY] + [
        message(message_id=f"m-{n}", template={"name": "notice", "language": "en_US"},
                context={"note": "x" * 200}) for n in range(4000)]
    source = write(tmp_path / "in.jsonl", lines)
    assert os.path.getsize(source) > 1_000_000  # the size from which progress shows
    assert main(["check", source, "-o", str(tmp_path / "out.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "read 50%" in err and "read 100%" in err


def test_policy_validate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    default = Path(__file__).resolve().parents[3] / "processors/core/policy/default_policy.json"
    assert main(["policy", "validate", str(default), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is True and verdict["id"] and "version" in verdict
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "x"}')
    assert main(["policy", "validate", str(broken), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False and verdict["error"]


COMMANDS = sorted(
    name for action in parser()._actions
    if isinstance(action, argparse._SubParsersAction) for name in action.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_names_its_environment(command: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "KAFKA_BOOTSTRAP_SERVERS" in text or "OUTBOUND_GATE_" in text
    for variable in COMMAND_ENV.get(command, ()):
        assert " ".join(variable.split()) in text, (command, variable)

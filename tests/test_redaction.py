"""Redaction rules: the defaults, [tool.sdbctl.redact] switches and additions, and bad rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdbctl.sdb.errors import SdbError
from sdbctl.sdb.redaction import DEFAULT_RULES, load_redactor

SECRETS = {
    "openai_key": "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_" + "a1B2" * 9,
    "google_api_key": "AIza" + "x" * 35,
    "slack_token": "xoxb-1234567890-abcdefghij",
    "bearer_token": "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "email": "jane.doe+test@example.co.uk",
}


def test_the_defaults_catch_each_shape_anywhere_in_a_payload(tmp_path: Path) -> None:
    redactor = load_redactor(tmp_path)  # no configuration: the defaults
    assert redactor.names == list(DEFAULT_RULES)
    for rule, secret in SECRETS.items():
        payload = {"messages": [{"role": "user", "content": f"use {secret} please"}], "n": 1, "ok": True}
        out = redactor.redact(payload)
        assert secret not in str(out), rule
        assert f"[REDACTED:{rule}]" in out["messages"][0]["content"], (rule, out)
        assert out["n"] == 1 and out["ok"] is True and list(out) == ["messages", "n", "ok"]
    assert redactor.text("a plain sentence with sk-short and a@b") == "a plain sentence with sk-short and a@b"


def test_configuration_switches_defaults_and_adds_rules(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.sdbctl.redact]\ndefaults = ["email"]\n[tool.sdbctl.redact.rules]\ncustomer = "CUST-[0-9]{6}"\n'
    )
    redactor = load_redactor(tmp_path)
    assert redactor.names == ["email", "customer"]
    out = redactor.text("CUST-123456 wrote from a@example.org with sk-proj-abcdefghijklmnopqrstuvwxyz")
    assert out == "[REDACTED:customer] wrote from [REDACTED:email] with sk-proj-abcdefghijklmnopqrstuvwxyz"
    (tmp_path / "pyproject.toml").write_text("[tool.sdbctl.redact]\ndefaults = false\n")
    assert load_redactor(tmp_path).names == [] and load_redactor(tmp_path).redact({"a": "a@b.org"}) == {"a": "a@b.org"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('defaults = "yes"', "must be true, false or a list"),
        ('defaults = ["phone"]', "no default redaction rule phone"),
        ('[tool.sdbctl.redact.rules]\nbad = "(unclosed"', "rule 'bad' is not a valid regular expression"),
        ("[tool.sdbctl.redact.rules]\nbad = 3", "must be a regular expression string"),
        ("colour = 1", "unknown redact key(s) colour"),
    ],
)
def test_bad_rules_are_refused_with_the_file_named(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.sdbctl.redact]\n{table}\n")
    with pytest.raises(SdbError, match=r"pyproject\.toml") as caught:
        load_redactor(tmp_path)
    assert message in str(caught.value)


def test_keys_are_redacted_too(tmp_path: Path) -> None:
    out = load_redactor(tmp_path).redact({"jane@example.org": {"sk-proj-abcdefghijklmnopqrstuvwxyz": 1}})
    assert out == {"[REDACTED:email]": {"[REDACTED:openai_key]": 1}}

"""``export`` lines: what ``stratoflow dev`` and ``config from-stack --print`` print, read back."""

from __future__ import annotations

from stratoflow.cli.config import export_line, parse_exports


def test_export_lines_read_back_what_was_written() -> None:
    env = {"STRATOFLOW_API_URL": "http://127.0.0.1:4566", "ODD": "it's a $HOME \"value\" with  spaces",
           "EMPTY": ""}
    lines = ["Stratoflow dev stack", "", *(f"  {export_line(k, v)}" for k, v in env.items()), "ready"]
    assert parse_exports(lines) == env


def test_other_lines_are_ignored() -> None:
    assert parse_exports(["exported 3 runs", "# export A=1", "export", "export B"]) == {}

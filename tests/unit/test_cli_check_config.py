"""`poolwatch check-config`: what it prints for a good file, and every problem of a bad one."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolwatch.cli import ExitCode, main

EXAMPLE = Path(__file__).parents[2] / "config" / "poolwatch.toml"


def write(tmp_path: Path, text: str, name: str = "poolwatch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- check-config -----------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '[poll]\ninterval = "30s"\n')

    assert main(["check-config", str(path)]) == ExitCode.OK

    out, err = capsys.readouterr()
    assert out == (f"{path}: OK (1 connection, 0 autostart rules, 0 threshold rules, 0 hooks)\n")
    assert err == ""


def test_check_config_summarizes_what_the_file_sets_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
        [[connection]]
        name = "kvm01"
        [[connection]]
        name = "kvm02"
        uri = "qemu+ssh://root@kvm02/system"
        [[autostart]]
        type = "netfs"
        hooks = ["pager"]
        [[threshold]]
        warning = "85%"
        [[threshold]]
        type = "netfs"
        warning = "< 20GiB"
        hooks = ["pager", "ops-webhook"]
        [hooks.pager]
        exec = ["/usr/local/bin/page-oncall"]
        [hooks.ops-webhook]
        webhook = "https://alerts.example.com/poolwatch"
        """,
    )

    assert main(["check-config", str(path)]) == ExitCode.OK

    assert capsys.readouterr().out == (
        f"{path}: OK (2 connections, 1 autostart rule, 2 threshold rules, 2 hooks)\n"
    )


def test_check_config_accepts_the_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith(f"{EXAMPLE}: OK (1 connection, ")


def test_check_config_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[poll]\ninterval = "15"\n[web]\nbogus = 1\n')

    assert main(["check-config", str(path)]) == ExitCode.CONFIG_INVALID

    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"invalid configuration in {path} (2 errors):\n"
        '  poll.interval: invalid duration "15" (use e.g. "15s", "5m", "1h30m")\n'
        "  web.bogus: unknown key\n"
    )


def test_check_config_toml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[poll\n")

    assert main(["check-config", str(path)]) == 3

    err = capsys.readouterr().err
    assert "TOML syntax error" in err
    assert "line 1" in err
    assert "Traceback" not in err


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.toml"

    assert main(["check-config", str(path)]) == 3

    assert capsys.readouterr().err == (
        f"invalid configuration in {path} (1 error):\n"
        "  cannot read the file: No such file or directory\n"
    )


def test_check_config_reports_policy_errors_with_key_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[[threshold]]\nwarning = "85%"\nhooks = ["pager"]\n')

    assert main(["check-config", str(path)]) == ExitCode.CONFIG_INVALID

    assert capsys.readouterr().err == (
        f"invalid configuration in {path} (1 error):\n"
        '  threshold[0].hooks[0]: unknown hook "pager" (defined: none)\n'
    )


def test_check_config_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == ExitCode.USAGE
    assert "FILE" in capsys.readouterr().err

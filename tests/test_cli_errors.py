"""Every ``hemafed`` sub-command given bad arguments ends with a message, never a traceback.

The commands are found by walking the mounted Typer apps (so a new sub-app is covered as soon as
it is mounted). Each gets, for its required arguments and options, a path that cannot exist (below a
file) and then a garbage file; the output must be a message (exit code non-zero) without
``Traceback``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from hemafed.cli import SUBAPPS, app, load_subapp

TRACE_MARKS = ("Traceback (most recent call last)", 'File "/', "──── Traceback")


def _leaves(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    if isinstance(command, click.Group):
        out = []
        for name, sub in command.commands.items():
            out += _leaves(sub, [*path, name])
        return out
    return [(path, command)]


def all_commands() -> list[tuple[list[str], click.Command]]:
    import typer

    top = typer.main.get_command(app)
    assert isinstance(top, click.Group)
    found = []
    for name in top.list_commands(click.Context(top)):
        sub = load_subapp(name) if name in SUBAPPS else top.commands[name]
        found += _leaves(sub, [name])
    return found


def bad_argv(path: list[str], command: click.Command, value: str) -> list[str]:
    argv = list(path)
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            argv += [value] * (1 if param.nargs == 1 else 2)
        elif isinstance(param, click.Option) and param.required and not param.is_flag:
            argv += [param.opts[0], value]
    return argv


def run_in_process(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app(argv, prog_name="hemafed")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue() + err.getvalue()


COMMANDS = all_commands()
# These connect to a hub at the given address and wait for it by design (bounded by their own
# --timeout/--run-timeout); an existing file as the address is not a quick failure for them.
WAITS_FOR_HUB = {("hub", "run"), ("site", "serve")}


def test_every_subapp_is_found() -> None:
    names = {path[0] for path, _ in COMMANDS}
    assert set(SUBAPPS) <= names and {"demo", "queries", "schema"} <= names
    assert len(COMMANDS) > 20


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bad", ["missing", "garbage"])
@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_bad_arguments_give_a_message_not_a_traceback(path: list[str], command: click.Command,
                                                      bad: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if bad == "garbage" and tuple(path) in WAITS_FOR_HUB:
        pytest.skip("connects to the given hub address and waits for it by design")
    monkeypatch.chdir(tmp_path)
    garbage = tmp_path / "garbage"
    garbage.write_text("not: [valid\x00 yaml, csv or key\n")
    # "missing": a path below a file, so nothing can exist or be created there
    argv = bad_argv(path, command, str(garbage / "x") if bad == "missing" else str(garbage))
    if argv == path:  # nothing required: an unknown option is the bad argument
        argv.append("--no-such-option")
    code, output = run_in_process(argv)
    assert code != 0, f"hemafed {' '.join(argv)} succeeded on bad input:\n{output}"
    assert output.strip(), f"hemafed {' '.join(argv)} failed silently"
    for mark in TRACE_MARKS:
        assert mark not in output, f"hemafed {' '.join(argv)} printed a traceback:\n{output}"


def _hemafed(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_TELEMETRY_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "hemafed.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    # a study run over a directory that is not a site: a plain error, then the traceback on ask
    spec = Path(__file__).parents[1] / "src/hemafed/study/specs/demo_mds.yaml"
    plain = _hemafed("study", "run", str(spec), "--site", str(tmp_path))
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr + plain.stdout
    assert "federation.json" in plain.stderr and "hemafed site join" in plain.stderr
    debug = _hemafed("--debug", "schema", "--disease", "CML")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "InvalidInput" in debug.stderr


def test_help_imports_no_heavy_package() -> None:
    code = ("import sys, hemafed.cli as c\n"
            "try:\n    c.app(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pandas', 'numpy', 'flwr', 'scipy', 'torch') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "HEAVY []" in out.stdout

"""The `pidaemon` command line itself: shell completion, and starting quickly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shell_code(shell):
    result = subprocess.run([sys.executable, "-m", "pidaemon", "completion", shell],
                            capture_output=True, text=True, check=True)
    assert "pidaemon" in result.stdout and "_ARGCOMPLETE" in result.stdout


@pytest.mark.parametrize("line, expected", [
    ("pidaemon sta", {"status"}),
    ("pidaemon config ", {"check", "show"}),
    ("pidaemon sim --wor", {"--workers"}),
])
def test_the_shell_gets_completions_for_commands_and_options(tmp_path, line, expected):
    answer = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_STDOUT_FILENAME": str(answer)}
    subprocess.run([sys.executable, "-m", "pidaemon"], env=env, capture_output=True, timeout=30)
    offered = {word.strip() for word in answer.read_text().split("\n") if word.strip()}
    assert expected <= offered, offered


def test_help_does_not_import_the_daemon_the_bus_or_yaml():
    """`pidaemon --help` cost ten times a bare `python -c pass`: it imported everything (figures in the README)."""
    code = ("import sys, runpy; sys.argv = ['pidaemon', '--help']\n"
            "try:\n    runpy.run_module('pidaemon', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m in ('pidaemon.daemon', 'pidaemon.bus', 'yaml', 'pluggy', "
            "'paho.mqtt.client', 'asyncio')), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("unbuffered", ["1", ""])   # the write fails in the command, or at the final flush
def test_a_reader_that_goes_away_stops_the_command_quietly(unbuffered):
    """`pidaemon config show ... | head -1`: the pipe closes early; no traceback, exit 128 + SIGPIPE as Unix tools."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        result = subprocess.run([sys.executable, "-m", "pidaemon", "config", "show", "config/worker.yaml"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                                env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_the_version_goes_to_standard_output():
    """Before: `pidaemon --version` wrote to standard error, so `$(pidaemon --version)` was empty."""
    import pidaemon
    result = subprocess.run([sys.executable, "-m", "pidaemon", "--version"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"pidaemon {pidaemon.__version__}\n", "")

"""Every command that README.md and docs/ show is checked against the script it runs: each of its
options must appear in that script's --help, and each pretraining override must be a config key."""

import contextlib
import io
import re
import runpy
import shlex
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Launchers whose own options come before the script.
LAUNCHERS = {"python", "torchrun", "srun"}
CONSOLE_COMMANDS = {
    "clsa-pretrain": "pretrain/main.py",
    "clsa-to-d2": "converters/to_d2.py",
    "clsa-train-net": "tools/train_net.py",
    "clsa-suite": "tools/run_suite.py",
    "clsa-report": "tools/report.py",
}
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")


def shown_commands():
    """(doc, command line) of every suite command in the docs' shell blocks, continuation lines joined."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip()
                if line and not line.startswith("#"):
                    found.append((doc.name, line))
    return found


def script_and_args(line):
    """The suite script a command line runs and the arguments after it, or None for other commands."""
    tokens = shlex.split(line.replace("[", "").replace("]", "").replace("|", " "))
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # environment assignments before the command
        tokens.pop(0)
    for i, token in enumerate(tokens):
        if token in CONSOLE_COMMANDS:
            return CONSOLE_COMMANDS[token], tokens[i + 1 :]
        if token.endswith(".py") and (REPO / token).is_file():
            return token, tokens[i + 1 :]
        if i == 0 and Path(token).name not in LAUNCHERS and not token.startswith(".venv"):
            return None
    return None


@cache
def help_text(script):
    """What `python SCRIPT --help` prints, run in this process (the scripts share its imports)."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [script, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
            runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        sys.argv = argv
    assert exited.value.code in (0, None), f"{script} --help exited with {exited.value.code}"
    return out.getvalue()


COMMANDS = [(doc, line, *parsed) for doc, line in shown_commands() if (parsed := script_and_args(line))]


def test_the_docs_show_commands_of_every_stage():
    scripts = {script for *_, script, _ in COMMANDS}
    for stage in ("pretrain/main.py", "converters/to_d2.py", "tools/run_suite.py", "tools/report.py"):
        assert stage in scripts


def test_every_option_a_shown_command_uses_is_in_its_scripts_help():
    unknown = []
    for doc, line, script, args in COMMANDS:
        for arg in args:
            option = arg.split("=")[0]
            if option.startswith("--") and not re.search(rf"{re.escape(option)}\b", help_text(script)):
                unknown.append(f"{doc}: {option} is not in {script} --help: {line}")
    assert not unknown, "\n".join(unknown)


def test_every_pretraining_override_a_doc_shows_is_a_config_key():
    from pretrain.config import get_cfg

    cfg = get_cfg()
    unknown = []
    for doc, line, script, args in COMMANDS:
        if script != "pretrain/main.py":
            continue
        for key in filter(CONFIG_KEY.match, args):
            node = cfg
            for part in key.split("."):
                node = node.get(part) if hasattr(node, "get") else None
            if node is None:
                unknown.append(f"{doc}: {key} is no pretraining config key: {line}")
    assert not unknown, "\n".join(unknown)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_link_only_to_files_that_exist(doc):
    missing = [
        link
        for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text())
        if not link.startswith("http") and not (doc.parent / link).exists()
    ]
    assert not missing, f"{doc.name} links to missing files: {missing}"

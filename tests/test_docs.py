"""The README and the manual (docs/): every command line they show for the three scripts and the
``gatedrnn`` command names only options that exist and values they accept (parsed by the real
parser, run by nobody), the README stays a front page, and every page is in the site's nav."""

import re
import shlex

import pytest

from gatedrnn.cli.main import _COMMANDS
from gatedrnn.cli.common import _Parser
from helpers import ROOT

SCRIPTS = {"init_experiments.py": "init", "training_01_all.py": "train", "examine_results_01_all.py": "examine"}
PAGES = sorted((ROOT / "docs").glob("*.md"))


def command_lines(text):
    """The command lines of the ```bash blocks (continuations joined, comments dropped)."""
    for block in re.findall(r"```bash\n(.*?)\n```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line.split(" #")[0]):
                if part.strip():
                    yield part.strip()


def invocations(text):
    """(command, arguments) of each line that runs a script or ``gatedrnn``."""
    for line in command_lines(text):
        if "[" in line:  # a synopsis ([--option VALUE]), not a command line
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        for i, word in enumerate(words):
            name = word.rsplit("/", 1)[-1]
            if name in SCRIPTS:
                yield SCRIPTS[name], words[i + 1:]
                break
            if name == "gatedrnn" and i + 1 < len(words) and words[i + 1] in _COMMANDS:
                yield words[i + 1], words[i + 2:]
                break


def parses(command, args):
    summary, add, _ = _COMMANDS[command]
    parser = _Parser(prog=command)
    add(parser)
    # a placeholder (<id>, ...) stands for a value; a trailing & puts the command in the background
    args = ["x" if "<" in a or "..." in a else a for a in args if a != "&"]
    try:
        parser.parse_args(args)
    except SystemExit as e:
        return e.code == 0
    return True


@pytest.mark.parametrize("page", ["README.md", *[f"docs/{p.name}" for p in PAGES]])
def test_every_command_line_names_options_that_exist(page):
    found = list(invocations((ROOT / page).read_text()))
    bad = [f"{c} {' '.join(a)}" for c, a in found if not parses(c, a)]
    assert not bad, bad


def test_the_checker_can_fail():
    assert not parses("train", ["--workers", "2", "--no-such-option"])
    assert not parses("init", ["--input-inits", "zeros"])
    assert parses("train", ["--halving", "3", "--rungs", "4"])
    assert len(list(invocations((ROOT / "README.md").read_text()))) >= 8


def test_the_readme_is_a_front_page_and_the_manual_is_a_site():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in PAGES:
        assert f"docs/{page.name}" in readme or page.name == "index.md"
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(page.name in nav for page in PAGES)
    assert "mkdocs build --strict" in (ROOT / ".ci/run").read_text()

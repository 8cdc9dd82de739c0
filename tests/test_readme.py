"""The README's code blocks run as they stand: each in a fresh folder, twice in a row.

Every ```python block of the root README is a test. An HTML comment just above a block
(invisible on GitHub) can say more about it:

* ``<!-- readme-test: id=NAME -->`` names the block;
* ``<!-- readme-test: after=NAME -->`` starts from what block NAME wrote (a copy of the
  files of its first run) in the fresh folder: a block that serves what an earlier block wrote;
* ``<!-- readme-test: skip=REASON -->`` does not run it (it needs a cloud account or a
  container runtime); it is still checked for syntax and undefined names.

Each block is written to ``snippet.py`` and run with ``python snippet.py`` (stage functions of
a pipeline must be importable from the script, as for a user), then run again: a README
script that fails on its second run (``ModelExistsError``) fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<directive>[^>]*?)\s*-->\s*\n)?```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```",
    re.S | re.M,
)
_RUFF = Path(sys.executable).parent / "ruff"


@dataclass(frozen=True)
class Snippet:
    line: int
    code: str
    name: str | None = None
    after: str | None = None
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"README.md:{self.line}" + (f"[{self.name}]" if self.name else "")


def _snippets(path: Path = README) -> list[Snippet]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        if match.group("lang") != "python":
            continue
        fields: dict[str, str] = {}
        for part in (match.group("directive") or "").split(";"):
            key, sep, value = part.partition("=")
            if sep:
                fields[key.strip()] = value.strip()
        line = text.count("\n", 0, match.start("code")) + 1
        found.append(
            Snippet(line, match.group("code"), fields.get("id"), fields.get("after"), fields.get("skip"))
        )
    return found


SNIPPETS = _snippets()
BY_NAME = {s.name: s for s in SNIPPETS if s.name}


def _run(code: str, folder: Path, name: str = "snippet.py") -> subprocess.CompletedProcess[str]:
    script = folder / name
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, script.name], cwd=folder, capture_output=True, text=True, timeout=280, check=False
    )


def test_the_readme_has_runnable_snippets_for_every_subpackage() -> None:
    runnable = [s for s in SNIPPETS if s.skip is None]
    assert len(runnable) >= 4
    text = "\n".join(s.code for s in SNIPPETS)
    for package in ("hermes.quiver", "hermes.aeriel", "hermes.stillwater", "hermes.cloudbreak"):
        assert f"from {package}" in text
    for snippet in SNIPPETS:
        assert snippet.after is None or snippet.after in BY_NAME, (
            f"{snippet.id}: unknown after={snippet.after}"
        )


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.id)
def test_snippet_is_complete(snippet: Snippet) -> None:
    """No undefined name and no syntax error: the block is a whole script."""
    compile(snippet.code, snippet.id, "exec")
    if not _RUFF.exists():
        pytest.skip("ruff is not installed in this environment")
    proc = subprocess.run(
        [str(_RUFF), "check", "--no-cache", "--isolated", "--select", "F821,F822,F823", "--stdin-filename", "s.py", "-"],
        input=snippet.code, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{snippet.id} uses names it does not define:\n{proc.stdout}"


_BUILT: dict[str, Path] = {}  # block name -> a folder holding what its first run wrote


def _prepare(name: str, folder: Path, scratch: Path) -> None:
    """Put what block ``name`` writes into ``folder``: a copy of its first run (made once)."""
    if name not in _BUILT:
        built = scratch / f"built-{name}"
        built.mkdir()
        proc = _run(BY_NAME[name].code, built, "before.py")
        assert proc.returncode == 0, f"{name} (run first) failed:\n{proc.stderr[-3000:]}"
        _BUILT[name] = built
    shutil.copytree(_BUILT[name], folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("snippet", [s for s in SNIPPETS if s.skip is None], ids=lambda s: s.id)
def test_snippet_runs_in_a_fresh_folder_and_runs_again(
    snippet: Snippet, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if snippet.after is not None:
        _prepare(snippet.after, tmp_path, tmp_path_factory.getbasetemp())
    for attempt in ("first", "second"):
        proc = _run(snippet.code, tmp_path)
        assert proc.returncode == 0, (
            f"{snippet.id}, {attempt} run:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
        assert "Traceback" not in proc.stderr
        assert "torchvision is not installed" not in proc.stderr
        if attempt == "first" and snippet.name is not None and snippet.name not in _BUILT:
            built = tmp_path_factory.mktemp(f"built-{snippet.name}")
            shutil.copytree(tmp_path, built, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py"))
            _BUILT[snippet.name] = built

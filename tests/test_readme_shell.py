"""The README's shell blocks run as written in a fresh shell (`env -i`, only PATH and HOME), after the
one line the README asks for in each new shell (`. .venv/bin/activate`); and the tiny recipe runs from a
fresh shell without it, finding the repository's .venv/bin/rftcli.

To stay fast, what the commands compute is shrunk, never how they are typed: a hub model (and the demo's
small built-in) becomes builtin:tiny-qwen2.5-vl, and each training, sampling and eval command gets flags
appended (later flags win) that keep steps, rows and lengths small. `make demo` and `make test` are
skipped: they are the whole demo and the whole suite (tests/test_recipe.py runs the recipe, shortened).
Each block runs in a folder of its own holding links to the repository's `.venv`, `recipes` and
`examples`, and `my_vqa.jsonl` (with `imgs/red.png`): 40 rows of questions with answers only (no response, no reasoning), the
data the README's GPU section is about.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
ACTIVATE = ". .venv/bin/activate"
TINY = "builtin:tiny-qwen2.5-vl"
SMALL = {  # appended to each command of that stage
    "prepare-data": "--limit 200",
    "sft-coldstart": "--max-steps 2 --batch-size 2 --grad-accum 1 --limit 8",
    "train-grpo": "--max-steps 1 --batch-size 2 --grad-accum 1 -n 2 --max-completion-length 6 --limit 2",
    "rollout": "--limit 2 -n 2 --max-new-tokens 6",
    "eval": "--limit 3 --max-new-tokens 6",
}
SKIPPED = ("make demo", "make test")


def readme_shell_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [m.group(1) for m in re.finditer(r"^```(?:bash|sh)\n(.*?)^```", text, re.M | re.S)]


def shrunk(block: str) -> str:
    """The block's lines (continuations joined), `make demo`/`make test` left out, models and sizes shrunk."""
    lines = []
    for line in block.replace("\\\n", " ").splitlines():
        if line.strip().startswith(SKIPPED):
            continue
        line = re.sub(r"\b(Qwen/\S+|builtin:small-qwen2\.5-vl)", TINY, line)
        stage = re.match(r"\s*rftcli\s+([\w-]+)", line)
        if stage and stage.group(1) in SMALL:
            line = f"{line.partition('  #')[0]} {SMALL[stage.group(1)]}"
        lines.append(line)
    return "\n".join(lines)


def fresh_shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()], "bash", "-e", "-c", script],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


def workdir(base: Path) -> Path:
    base.mkdir(parents=True)
    (base / ".venv").symlink_to(VENV)
    for name in ("recipes", "examples"):
        (base / name).symlink_to(ROOT / name)
    (base / "imgs").mkdir()
    shutil.copy(ROOT / "examples" / "red.png", base / "imgs" / "red.png")
    rows = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(30)]
    rows += [{"id": f"c{i}", "prompt": "Name the color.", "image": "imgs/red.png", "answer": "red"}
             for i in range(10)]
    (base / "my_vqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return base


def test_readme_tells_how_to_use_rftcli_in_a_new_shell():
    readme = (ROOT / "README.md").read_text()
    assert f"`{ACTIVATE}`" in readme
    assert any(b.lstrip().startswith(ACTIVATE) for b in readme_shell_blocks())


def test_shrinking_keeps_the_commands_as_typed():
    block = "rftcli eval -d d.parquet -m Qwen/Qwen2.5-VL-3B-Instruct --label base \\\n  --out out/eval\nmake demo  # x\n"
    assert shrunk(block).split() == f"rftcli eval -d d.parquet -m {TINY} --label base --out out/eval {SMALL['eval']}".split()


@pytest.mark.slow
@pytest.mark.skipif(not (VENV / "bin" / "activate").is_file(), reason="needs the tests to run from a venv")
@pytest.mark.parametrize("index", range(len(readme_shell_blocks())))
def test_readme_shell_block_runs_in_a_fresh_shell(index, tmp_path):
    block = readme_shell_blocks()[index]
    script = shrunk(block)
    if "rftcli" not in script:
        pytest.skip("nothing but make demo / make test")
    if not script.lstrip().startswith(ACTIVATE):
        script = f"{ACTIVATE}\n{script}"  # what the README asks for in each new shell
    cwd = workdir(tmp_path / "w")
    done = fresh_shell(script, cwd)
    assert done.returncode == 0, f"{script}\n---\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    for out in re.findall(r"--out (\S+)", script):
        assert (cwd / out).exists(), out


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "rftcli").is_file() or shutil.which("make") is None,
                    reason="needs the repository's .venv (make demo / make test create it) and GNU make")
def test_tiny_recipe_finds_the_repo_venv_from_a_fresh_shell(tmp_path):
    out = tmp_path / "out"
    done = fresh_shell(f"make -C {ROOT / 'recipes' / 'tiny'} OUT={out} {out / 'data.parquet'}", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{ROOT / '.venv' / 'bin' / 'rftcli'} prepare-data" in done.stdout
    assert (out / "data.parquet").is_file()

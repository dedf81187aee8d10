"""The documentation: README.md and docs/*.md link to files that exist, and show only commands that run.

Links: every relative link and image path (`[text](path)`, `![alt](path)`, outside code) names a file or
folder of the repository, and a `#fragment` into a Markdown page names one of its headings (GitHub's
anchors). Commands: every `rftcli ...` in a fenced block or an inline code span names a real subcommand
and only options that subcommand accepts, each given its value; the command tree is read from the live
Typer app, so a renamed or removed flag fails here while a new one needs no change.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from rftcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
SHELL_OPERATORS = {";", "&&", "||", "|", "&", ">", ">>", "<", ">&", "2>", "|&", "(", ")"}
PLACEHOLDER = re.compile(r"^(\.\.\.|[A-Z][A-Z0-9_]*)$")  # `rftcli COMMAND --help`, `rftcli --debug ...`


def fenced_blocks(text: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced blocks (where links and inline code live)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(prose(text)):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(page: Path, text: str) -> list[str]:
    """One message per link or image path in `text` (the content of `page`) that does not resolve."""
    problems = []
    body = INLINE.sub("", prose(text))
    for target in LINK.findall(body):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, fragment = target.partition("#")
        where = (page.parent / path_part).resolve() if path_part else page
        if not where.exists():
            problems.append(f"{page.name}: link to {target}: {where} does not exist")
            continue
        if fragment and where.suffix == ".md" and fragment not in anchors(where.read_text()):
            problems.append(f"{page.name}: link to {target}: no heading with anchor #{fragment} in {where.name}")
    return problems


def shown_commands(text: str) -> list[list[str]]:
    """The argument lists after each `rftcli` shown in fenced blocks and inline code spans."""
    snippets = []
    for block in fenced_blocks(text):
        snippets += block.replace("\\\n", " ").splitlines()
    snippets += [" ".join(span.split()) for span in INLINE.findall(prose(text))]
    commands = []
    for snippet in snippets:
        if not re.search(r"(^|[\s;&|(])rftcli(\s|$)", snippet):
            continue
        lexer = shlex.shlex(snippet, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token == "rftcli":
                args = []
                for arg in tokens[i + 1:]:
                    if arg in SHELL_OPERATORS:
                        break
                    args.append(arg)
                commands.append(args)
    return commands


def command_problem(args: list[str]) -> str | None:
    """Why `rftcli ARGS` would not parse (unknown subcommand or option, option without its value), or None."""
    group = typer.main.get_command(app)
    shown = "rftcli " + " ".join(args)
    root_options = {opt for p in group.params for opt in [*p.opts, *p.secondary_opts]}
    while args and args[0] in root_options:
        args = args[1:]
    if not args or PLACEHOLDER.match(args[0]):
        return None
    name, args = args[0], [a for a in args[1:] if a != "..."]
    command = group.commands.get(name)
    if command is None:
        return f"{shown}: no subcommand {name!r} (there are {', '.join(sorted(group.commands))})"
    parser = command.make_parser(command.context_class(command, info_name=name))
    try:
        _, leftover, _ = parser.parse_args(args)
    except Exception as error:  # the Click vendored by Typer raises its own UsageError subclasses
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        return f"{shown}: {message}"
    if leftover:
        return f"{shown}: {name} takes no argument {leftover[0]!r}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_and_images_resolve(page):
    assert link_problems(page, page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shown_commands_parse(page):
    commands = shown_commands(page.read_text())
    problems = [p for p in map(command_problem, commands) if p]
    assert problems == []


def test_the_pages_show_commands_and_link_each_other():
    """The checks above see something: README links every docs page and shows every subcommand."""
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name
    shown = {args[0] for page in PAGES for args in shown_commands(page.read_text()) if args}
    assert set(typer.main.get_command(app).commands) <= shown


def test_each_docs_page_starts_with_a_runnable_example():
    for page in PAGES[1:]:
        text = page.read_text()
        first_block = FENCE.search(text)
        assert first_block and first_block.start() < text.find("\n## "), page.name
        assert "rftcli" in first_block.group(2) or "python" in first_block.group(2), page.name


def test_a_bad_link_a_bad_anchor_and_a_bad_command_are_caught(tmp_path):
    page = tmp_path / "page.md"
    text = ("# Title\n\n## Two words\n\n[ok](#two-words) [gone](missing.md) [anchor](page.md#nothing)\n"
            "![img](missing.png) [web](https://example.org) `[not a link](nowhere.md)`\n\n"
            "```bash\nrftcli score --rollouts r.parquet --rewrds accuracy \\\n  --out s.parquet\n"
            "rftcli train-grpo -d d.parquet --out\nrftcli polish --out x\nnice rftcli eval -d d.parquet -m M --out e  # ok\n```\n"
            "Inline: `rftcli merge --adapter a --out m --full`, `rftcli COMMAND --help`, `rftcli --debug ...`.\n")
    page.write_text(text)
    problems = link_problems(page, text)
    assert [p.split(": ")[1] for p in problems] == ["link to missing.md", "link to page.md#nothing",
                                                   "link to missing.png"]
    commands = shown_commands(text)
    assert commands[3] == ["eval", "-d", "d.parquet", "-m", "M", "--out", "e"]
    problems = [command_problem(c) for c in commands]
    assert "No such option: --rewrds" in problems[0]
    assert "--out" in problems[1] and "requires an argument" in problems[1]
    assert "no subcommand 'polish'" in problems[2]
    assert problems[3] is None
    assert "No such option: --full" in problems[4]
    assert problems[5:] == [None, None]

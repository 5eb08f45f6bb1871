"""The docs name only what exists, and every command is documented (issue 22, item 8).

README.md and docs/*.md drifted from the code without anything noticing: a `--study` option no data command has,
`demo` without its `--out`, `fhir-lupus pull SERVER` for a pull that takes `--server`. So the code the docs show
is read here and checked against the real command tree (typer's click commands, walked from ``fhir_lupus.cli``):
- every `fhir-lupus COMMAND ...` names a command, gives it no more positional arguments than it takes, and names
  only options it has (a fenced block line, its indented continuation lines, or an inline code span; a `#` comment
  on it still speaks of that command);
- every other `--option` in code is an option of some command, unless the span names another tool first: the
  project's own scripts (`python bench/bench_bulk.py --subjects`) must mention the option in their source, and
  outside tools (pip, make, mypy ...) are skipped, each with its reason in OTHER_TOOLS;
- every command is documented, every FHIR_LUPUS_* variable the docs name is read in fhir_lupus/, tests/ or
  scripts/ (and every variable an option reads is documented), and every repository path they name exists.
A problem is reported as FILE:LINE, so a failure says what to fix.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from fhir_lupus.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
TOOL = "fhir-lupus"

# Tools whose options are not ours to check, and why (a name the docs use before its own options).
OTHER_TOOLS = {
    "pip": "pip's own options (install flags)",
    "make": "make's own options (the Makefile's targets take none)",
    "mypy": "mypy's options (`make lint` runs `mypy --strict`)",
    "ruff": "ruff's options",
    "pytest": "pytest's options (-m, -p, -k ...)",
    "python": "the interpreter's own flags (-m, -X); the script or module after it sets the scope again",
    "python3": "as python",
    "npm": "npm's options (servers/ set-up)",
    "mvn": "Maven's options (servers/hapi build)",
    "java": "the JVM's options",
    "apt-get": "Debian's package tool (scripts/ensure-chromium)",
    "git": "git's options",
    "curl": "curl's options",
    "chmod": "chmod's modes",
    "spark-submit": "Spark's launcher (docs/spark.md, a cluster's run)",
}
# Repository paths the docs may name although a checkout does not hold them, and why.
NOT_IN_A_CHECKOUT = {"fhir_lupus/_mappings": "setup.py copies mappings/ there when it builds the wheel"}
ROOTS = ("fhir_lupus", "mappings", "tests", "scripts", "bench", "docs", "examples", "servers", ".ci")

_OPTION = re.compile(r"^[\[(]*(--[A-Za-z0-9][\w-]*|-[A-Za-z]+)(?![\w-])")
_SEPARATORS = frozenset({"&&", "||", ";", "|"})
_ENV = re.compile(r"\bFHIR_LUPUS_[A-Z0-9_]*[A-Z0-9]\b")
_PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(re.escape(root) for root in ROOTS)})/[\w./-]*)")


# -- the command tree ---------------------------------------------------------------------------------------------


@dataclass
class Command:
    """One node of the click tree: its options (``--help`` included; ``valued``: those that take a value), how
    many positionals it takes (None: any number), the variables its options read, and its subcommands."""

    options: set[str] = field(default_factory=lambda: {"--help"})
    valued: set[str] = field(default_factory=set)
    positionals: int | None = 0
    envvars: set[str] = field(default_factory=set)
    children: dict[str, Command] = field(default_factory=dict)


def _tree(node: Any) -> Command:
    command = Command()
    for param in node.params:
        if param.param_type_name == "option":
            command.options.update([*param.opts, *param.secondary_opts])
            if not (param.is_flag or param.count):
                command.valued.update(param.opts)
            envvars = param.envvar if isinstance(param.envvar, list | tuple) else [param.envvar]
            command.envvars.update(name for name in envvars if name)
        elif command.positionals is not None:
            command.positionals = None if param.nargs < 0 else command.positionals + param.nargs
    for name, child in (getattr(node, "commands", None) or {}).items():
        command.children[name] = _tree(child)
    return command


ROOT = _tree(typer.main.get_command(app))


def _nodes(command: Command, path: tuple[str, ...] = ()) -> dict[str, Command]:
    found = {" ".join(path): command}
    for name, child in command.children.items():
        found |= _nodes(child, (*path, name))
    return found


NODES = _nodes(ROOT)  # "" is the root, "audit" a group, "audit show" a command
COMMANDS = {path: node for path, node in NODES.items() if not node.children}
EVERY_OPTION = set().union(*(node.options for node in NODES.values()))


# -- reading the docs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Text of one doc: a fenced line with its continuation lines, an inline code span, or prose."""

    line: int  # of the first character
    text: str
    code: bool


def pieces(text: str) -> list[Piece]:
    found: list[Piece] = []
    fenced = False
    block_start = 0  # index in ``found`` of the fenced block's first line
    paragraph: list[tuple[int, str]] = []

    def flush() -> None:
        if paragraph:
            start, body = paragraph[0][0], "\n".join(line for _, line in paragraph)
            prose = body
            for span in re.finditer(r"(`+)(.+?)(?<!`)\1(?!`)", body, re.S):
                found.append(Piece(start + body.count("\n", 0, span.start(2)), span.group(2), code=True))
                prose = prose[: span.start()] + " " * len(span.group(0)) + prose[span.end() :]
            found.append(Piece(start, prose, code=False))
            paragraph.clear()

    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            flush()
            fenced, block_start = not fenced, len(found) + 1
        elif fenced:
            continued = len(found) >= block_start and (line[:1].isspace() or found[-1].text.endswith("\\"))
            if continued and line.strip():
                found[-1] = Piece(found[-1].line, found[-1].text + "\n" + line, code=True)
            else:
                found.append(Piece(number, line, code=True))
        elif line.strip():
            paragraph.append((number, line))
        else:
            flush()
    flush()
    return found


@dataclass
class Check:
    """What one doc names, and what is wrong with it."""

    problems: list[str] = field(default_factory=list)
    documented: set[str] = field(default_factory=set)  # command paths named after `fhir-lupus`


def _resolve(tokens: list[str], at: int, where: str, check: Check) -> tuple[list[str] | None, int]:
    """The commands `fhir-lupus` names from ``tokens[at]`` on (``push|pull|registry submit`` names three), and the
    index after them. None: any command (a placeholder such as `<command>`); [""] the root (an option follows).
    Options of the root before the command (`fhir-lupus -v push`) are skipped, with their values."""
    while at < len(tokens) and (option := _OPTION.match(tokens[at])) and option.group(1) in ROOT.options:
        at += 2 if option.group(1) in ROOT.valued else 1
    if at >= len(tokens) or tokens[at].startswith(("-", "[-", "#")) or tokens[at] in _SEPARATORS:
        return [""], at
    word = tokens[at].strip("[]()`'\",:")
    if word.startswith("<") or word.isupper() or word in {"...", "…"}:
        return None, at + 1
    paths: list[str] = []
    at += 1
    for name in word.split("|"):
        node = ROOT.children.get(name)
        if node is None:
            check.problems.append(f"{where}: `{TOOL} {name}` is no command")
            continue
        if node.children and at < len(tokens):
            for sub in tokens[at].strip("[]()`'\",:").split("|"):
                if sub in node.children:
                    paths.append(f"{name} {sub}")
                else:
                    check.problems.append(f"{where}: `{TOOL} {name} {sub}` is no command")
            at += 1
        else:
            paths.append(name)
    check.documented.update(paths)
    return paths, at


@dataclass
class _Scope:
    """Whose options the next ones are: `fhir-lupus` (``paths``: the commands named, None for any), a key of
    OTHER_TOOLS, one of the project's scripts, or nobody's (None: they must be an option of some command)."""

    tool: str | None = None
    paths: list[str] | None = None
    comment: bool = False  # after a `#`: prose about the command, which may name another one's option

    def check(self, option: str, where: str, check: Check) -> None:
        if self.tool in OTHER_TOOLS:
            return
        if self.tool not in (None, TOOL):  # one of the project's scripts: its source spells the option out
            source = (REPO / str(self.tool)).read_text(encoding="utf-8")
            if f'"{option}"' not in source and not (self.comment and option in EVERY_OPTION):
                check.problems.append(f"{where}: `{option}` is no option of {self.tool}")
        elif self.tool is None or self.paths is None:
            if option not in EVERY_OPTION:
                check.problems.append(f"{where}: `{option}` is no option of any `{TOOL}` command")
        else:
            repeated = re.fullmatch(r"-([A-Za-z])\1+", option)  # -vv: a counted -v
            name = f"-{repeated.group(1)}" if repeated else option
            for path in self.paths:
                if name not in NODES[path].options:
                    check.problems.append(f"{where}: `{option}` is no option of `{' '.join([TOOL, path]).strip()}`")


def _positionals(tokens: list[str]) -> int:
    """How many positional arguments the tokens after a command give it: up to its first option or comment."""
    count = 0
    for token in tokens:
        if token.startswith(("-", "[-", "#", "(")) or token in _SEPARATORS:
            break
        count += token not in {"...", "…"}
    return count


def _check_code(piece: Piece, name: str, check: Check) -> None:
    tokens = [(m.start(), m.group(0)) for m in re.finditer(r"\S+", piece.text)]
    words = [word for _, word in tokens]
    scope = _Scope()
    i = 0
    while i < len(tokens):
        offset, word = tokens[i]
        where = f"{name}:{piece.line + piece.text.count(chr(10), 0, offset)}"
        bare = word.strip("[]()`'\",:;")
        if word in _SEPARATORS and not (word == "|" and words[i + 1 : i + 2] and _OPTION.match(words[i + 1])):
            scope = _Scope()  # a new command; in `[--server URL | --engine E]` the same one goes on
        elif word.startswith("#"):
            scope.comment = True
        elif bare == TOOL or (bare == "fhir_lupus.cli" and words[i - 1 : i] == ["-m"]):
            paths, after = _resolve(words, i + 1, where, check)
            given = _positionals(words[after:])
            for path in paths or []:
                takes = NODES[path].positionals
                if takes is not None and given > takes:
                    check.problems.append(
                        f"{where}: `{TOOL} {path}` takes {takes} positional argument(s), the docs give it {given}"
                    )
            scope = _Scope(TOOL, paths, scope.comment)
            i = after
            continue
        elif Path(bare).name in OTHER_TOOLS:
            scope = _Scope(Path(bare).name, None, scope.comment)
        elif (bare.endswith(".py") or bare.startswith("scripts/")) and (REPO / bare).is_file():
            scope = _Scope(bare, None, scope.comment)
        elif (option := _OPTION.match(word)) and (option.group(1).startswith("--") or scope.tool == TOOL):
            scope.check(option.group(1), where, check)
        i += 1


def check_doc(name: str, text: str) -> Check:
    """Every command, positional count and option one doc names, checked against the command tree."""
    check = Check()
    for piece in pieces(text):
        if piece.code:
            _check_code(piece, name, check)
            continue
        for match in re.finditer(r"(?<![\w-])--[A-Za-z0-9][\w-]*", piece.text):  # prose: the option must exist
            _Scope().check(match.group(0), f"{name}:{piece.line + piece.text.count(chr(10), 0, match.start())}", check)
    return check


@functools.cache
def _doc_checks() -> dict[Path, Check]:
    return {path: check_doc(path.relative_to(REPO).as_posix(), path.read_text(encoding="utf-8")) for path in DOCS}


# -- the tests ----------------------------------------------------------------------------------------------------


def test_every_command_and_option_the_docs_name_exists() -> None:
    problems = [problem for check in _doc_checks().values() for problem in check.problems]
    assert problems == [], "\n".join(problems)


def test_every_command_is_documented() -> None:
    documented = set().union(*(check.documented for check in _doc_checks().values()))
    assert sorted(set(COMMANDS) - documented) == []


def _read_in_code() -> str:
    """The text of fhir_lupus/, tests/ and scripts/ (not this file, which names variables only to check them)."""
    files = [*(REPO / "fhir_lupus").rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "scripts").iterdir()]
    here = Path(__file__).resolve()
    return "\n".join(path.read_text(encoding="utf-8") for path in files if path.is_file() and path.resolve() != here)


def unread_variables(docs: dict[str, str], code: str) -> list[str]:
    """Each FHIR_LUPUS_* variable a doc names that the code never spells: literally, or through an f-string
    template such as ``f"FHIR_LUPUS_{name.upper()}_URL"`` (one variable per server)."""
    templates = [
        re.compile("FHIR_LUPUS_" + "[A-Z0-9_]+".join(re.escape(part) for part in re.split(r"\{[^}]*\}", tail)) + "$")
        for tail in re.findall(r"FHIR_LUPUS_((?:\{[^}]*\}|[A-Z0-9_])*\{[^}]*\}(?:\{[^}]*\}|[A-Z0-9_])*)", code)
    ]
    named = {(doc, var) for doc, text in docs.items() for var in _ENV.findall(text)}
    return sorted(
        f"{doc}: {var}"
        for doc, var in named
        if not re.search(rf"\b{var}\b", code) and not any(template.match(var) for template in templates)
    )


def missing_paths(name: str, text: str) -> list[str]:
    """Each repository path (under one of ROOTS) a doc names that the checkout does not hold."""
    missing = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in _PATH.finditer(line):
            named = match.group(1).rstrip(".,;:)")
            if named not in NOT_IN_A_CHECKOUT and not (REPO / named).exists():
                missing.append(f"{name}:{number}: {named}")
    return missing


def _docs_text() -> dict[str, str]:
    return {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8") for path in DOCS}


def test_every_environment_variable_the_docs_name_is_read() -> None:
    assert unread_variables(_docs_text(), _read_in_code()) == []


def test_every_environment_variable_an_option_reads_is_documented() -> None:
    documented = set(_ENV.findall("\n".join(_docs_text().values())))
    options_read = set().union(*(node.envvars for node in NODES.values()))
    assert sorted(options_read - documented) == []


def test_every_repository_path_the_docs_name_exists() -> None:
    assert [problem for name, text in _docs_text().items() for problem in missing_paths(name, text)] == []


# -- the check sees drift, and only drift ---------------------------------------------------------------------------

DRIFTED = """\
# A doc

```sh
pip install --user fhir_lupus            # pip's own option
make lint    # ruff + mypy --strict
python examples/generate_nct00698191.py --out DIR
python examples/generate_nct00698191.py --seed 1
fhir-lupus demo [--server URL] [--out DIR]   # from a wheel: --server and --data
fhir-lupus --help demo --nope    # an option of the root before the command
fhir-lupus pull --server URL --study NCT1 -o labs.csv
    [--bulk [--bulk-level patient] [--shiny]]
fhir-lupus audit show -n 5 -nn -Z    # -nn: a counted option, repeated
```

Pass `--allow-rejects` or `--no-such-flag`; `fhir-lupus push|pull|registry submit --server URL
--smart-key client.pem --quarantine DIR`. The path of a pull (`fhir-lupus pull SERVER --study NCT...`).
The data directory names its study in `trial.txt`, as `fhir-lupus validate DATA --study NCT` would not.
`fhir-lupus frobnicate` and `fhir-lupus registry send DIR`.
"""


def test_the_check_names_each_drift_at_its_line_and_nothing_else() -> None:
    problems = check_doc("doc.md", DRIFTED).problems
    assert problems == [
        "doc.md:7: `--seed` is no option of examples/generate_nct00698191.py",
        "doc.md:9: `--nope` is no option of `fhir-lupus demo`",
        "doc.md:11: `--shiny` is no option of `fhir-lupus pull`",
        "doc.md:12: `-Z` is no option of `fhir-lupus audit show`",
        "doc.md:15: `--no-such-flag` is no option of any `fhir-lupus` command",
        "doc.md:16: `--quarantine` is no option of `fhir-lupus pull`",
        "doc.md:16: `--quarantine` is no option of `fhir-lupus registry submit`",
        "doc.md:16: `fhir-lupus pull` takes 0 positional argument(s), the docs give it 1",
        "doc.md:17: `--study` is no option of `fhir-lupus validate`",
        "doc.md:18: `fhir-lupus frobnicate` is no command",
        "doc.md:18: `fhir-lupus registry send` is no command",
    ]


def test_the_variable_and_path_checks_see_what_is_not_there() -> None:
    code = 'os.environ.get("FHIR_LUPUS_TOKEN")\nos.environ.get(f"FHIR_LUPUS_{name.upper()}_URL")\n'
    doc = "Set `FHIR_LUPUS_TOKEN`, `FHIR_LUPUS_HAPI_URL` or `$FHIR_LUPUS_TOKN`; FHIR_LUPUS_HAPI_PORT is not read.\n"
    assert unread_variables({"doc.md": doc}, code) == ["doc.md: FHIR_LUPUS_HAPI_PORT", "doc.md: FHIR_LUPUS_TOKN"]
    text = "See `fhir_lupus/cli/_exit.py`, mappings/studies/ and (tests/test_nothing_here.py).\n`fhir_lupus/_mappings`"
    assert missing_paths("doc.md", text) == ["doc.md:1: tests/test_nothing_here.py"]

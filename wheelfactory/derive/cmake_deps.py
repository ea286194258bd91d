"""The git dependencies a CMake project fetches with FetchContent, read without running CMake.

vLLM pins its CMake dependencies (CUTLASS, vllm-flash-attn, FlashMLA, DeepGEMM, ...) in
CMakeLists.txt and cmake/external_projects/*.cmake, each as a FetchContent_Declare or
FetchContent_Populate with GIT_REPOSITORY and GIT_TAG, often through variables
(`set(CUTLASS_REVISION "v4.2.1")` ... `GIT_TAG ${CUTLASS_REVISION}`), behind an override
(`if(DEFINED ENV{FLASH_MLA_SRC_DIR})`) and inside device conditions (ROCm pins next to CUDA ones).

So this is a small evaluator, not a pattern search: it walks the commands from CMakeLists.txt,
follows include() into the tree, keeps `set()` variables, and decides if/elseif/else for a CUDA
build with no override set. A condition it cannot decide (compiler versions, found packages)
takes its branch *and* leaves the later ones open, so a dependency is never missed; only
declarations with a GIT_REPOSITORY are recorded, so the override branches (SOURCE_DIR only)
never add anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError

# What a CUDA build of vLLM has set before its CMake runs; never reassigned by the files.
CUDA_BUILD = {"VLLM_TARGET_DEVICE": "cuda", "VLLM_GPU_LANG": "CUDA"}

# FetchContent/ExternalProject keywords: they end the value list of the keyword before them.
_KEYWORDS = {
    "GIT_REPOSITORY", "GIT_TAG", "GIT_PROGRESS", "GIT_SHALLOW", "GIT_SUBMODULES", "GIT_SUBMODULES_RECURSE",
    "GIT_REMOTE_UPDATE_STRATEGY", "GIT_CONFIG", "GIT_REMOTE_NAME", "SOURCE_DIR", "BINARY_DIR", "SUBBUILD_DIR",
    "SOURCE_SUBDIR", "CONFIGURE_COMMAND", "BUILD_COMMAND", "INSTALL_COMMAND", "TEST_COMMAND", "UPDATE_COMMAND",
    "PATCH_COMMAND", "DOWNLOAD_COMMAND", "URL", "URL_HASH", "URL_MD5", "DOWNLOAD_EXTRACT_TIMESTAMP", "QUIET",
    "SYSTEM", "EXCLUDE_FROM_ALL", "OVERRIDE_FIND_PACKAGE", "FIND_PACKAGE_ARGS", "UPDATE_DISCONNECTED",
}
_FALSE = {"", "0", "OFF", "NO", "FALSE", "N", "IGNORE", "NOTFOUND"}
_TRUE = {"1", "ON", "YES", "TRUE", "Y"}


@dataclass(frozen=True)
class CmakeDep:
    """One git dependency as the CMake files pin it."""

    name: str  # FetchContent's name, e.g. "vllm-flash-attn"
    git: str
    ref: str
    env: str | None  # the environment variable that points CMake at a local tree instead
    subdir: str | None  # SOURCE_SUBDIR: where in the repository the build looks
    submodules: tuple[str, ...] | None  # None: FetchContent's default (all, recursively); () none
    where: str  # file:line of the declaration
    unresolved: bool = False  # a ${VAR} in git or ref the files never set


@dataclass(frozen=True)
class _Arg:
    text: str
    quoted: bool


@dataclass(frozen=True)
class _Command:
    name: str
    args: tuple[_Arg, ...]
    line: int


def parse_commands(text: str, where: str) -> list[_Command]:
    """CMake's command invocations `name(args)`, with comments dropped and quoting kept."""
    commands: list[_Command] = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            i, line = _skip_comment(text, i, line)
        elif c.isalpha() or c == "_":
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i)
            name, start_line = m.group(0), line
            i = m.end()
            while i < n and text[i] in " \t":
                i += 1
            if i >= n or text[i] != "(":
                raise InputError(f"{where}:{line}: cannot read CMake: expected '(' after {name!r}")
            args, i, line = _parse_args(text, i + 1, line, f"{where}:{start_line}")
            commands.append(_Command(name.lower(), tuple(args), start_line))
        else:
            raise InputError(f"{where}:{line}: cannot read CMake: unexpected {c!r}")
    return commands


def _skip_comment(text: str, i: int, line: int) -> tuple[int, int]:
    m = re.compile(r"#\[(=*)\[").match(text, i)
    if m:  # bracket comment #[[ ... ]]
        end = text.find("]" + m.group(1) + "]", m.end())
        end = len(text) if end < 0 else end + len(m.group(1)) + 2
        return end, line + text.count("\n", i, end)
    end = text.find("\n", i)
    return (len(text) if end < 0 else end), line


def _parse_args(text: str, i: int, line: int, where: str) -> tuple[list[_Arg], int, int]:
    """The arguments up to the closing ')'; `where` is file:line of the command, for errors."""
    args: list[_Arg] = []
    depth, n, buf = 0, len(text), ""

    def flush() -> None:
        nonlocal buf
        if buf:
            args.append(_Arg(buf, False))
            buf = ""

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        if c == '"':
            flush()
            j, value = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                    value.append({"n": "\n", "t": "\t"}.get(text[j], text[j]))
                else:
                    value.append(text[j])
                j += 1
            line += text.count("\n", i, j)
            args.append(_Arg("".join(value), True))
            i = j + 1
            continue
        if c == "[" and (m := re.compile(r"\[(=*)\[").match(text, i)):
            flush()
            end = text.find("]" + m.group(1) + "]", m.end())
            if end < 0:
                raise InputError(f"{where}: cannot read CMake: unterminated bracket argument")
            args.append(_Arg(text[m.end():end], True))
            line += text.count("\n", i, end)
            i = end + len(m.group(1)) + 2
            continue
        if c == "#":
            flush()
            i, line = _skip_comment(text, i, line)
            continue
        if c == "(":
            flush()
            depth += 1
            args.append(_Arg("(", False))
        elif c == ")":
            flush()
            if depth == 0:
                return args, i + 1, line
            depth -= 1
            args.append(_Arg(")", False))
        elif c.isspace():
            flush()
        else:
            buf += c
        i += 1
    raise InputError(f"{where}: cannot read CMake: unterminated command (no closing ')')")


class _Evaluator:
    def __init__(self, root: Path):
        self.root = root
        self.vars: dict[str, str] = dict(CUDA_BUILD)
        self.deps: list[CmakeDep] = []
        self.last_env: tuple[str, str] | None = None  # (variable, file) of the last DEFINED ENV{*_SRC_DIR}
        self.seen: set[Path] = set()

    # -- values ---------------------------------------------------------------------------
    def expand(self, s: str) -> str:
        s = re.sub(r"\$ENV\{[^}]*\}", "", s)  # no override is set in the build derive describes
        for _ in range(10):  # innermost ${...} first; nested references resolve outside-in
            new = re.sub(r"\$\{([^${}]*)\}", lambda m: self.vars.get(m.group(1), "\0" + m.group(1) + "\1"), s)
            if new == s:
                break
            s = new
        return s.replace("\0", "${").replace("\1", "}")

    # -- conditions: True, False, or None for "cannot tell" ---------------------------------
    def condition(self, args: list[_Arg], where: str) -> bool | None:
        tokens = list(args)
        for k, a in enumerate(tokens):
            if not a.quoted and a.text == "DEFINED" and k + 1 < len(tokens):
                m = re.fullmatch(r"ENV\{(\w+)\}", tokens[k + 1].text)
                if m and m.group(1).endswith("_SRC_DIR"):
                    self.last_env = (m.group(1), where)
        value, _ = self._or(tokens, 0)
        return value

    def _or(self, t: list[_Arg], i: int) -> tuple[bool | None, int]:
        left, i = self._and(t, i)
        while i < len(t) and not t[i].quoted and t[i].text == "OR":
            right, i = self._and(t, i + 1)
            left = True if (left is True or right is True) else (None if None in (left, right) else False)
        return left, i

    def _and(self, t: list[_Arg], i: int) -> tuple[bool | None, int]:
        left, i = self._not(t, i)
        while i < len(t) and not t[i].quoted and t[i].text == "AND":
            right, i = self._not(t, i + 1)
            left = False if (left is False or right is False) else (None if None in (left, right) else True)
        return left, i

    def _not(self, t: list[_Arg], i: int) -> tuple[bool | None, int]:
        if i < len(t) and not t[i].quoted and t[i].text == "NOT":
            value, i = self._not(t, i + 1)
            return (None if value is None else not value), i
        return self._primary(t, i)

    def _primary(self, t: list[_Arg], i: int) -> tuple[bool | None, int]:
        if i >= len(t):
            return None, i
        a = t[i]
        if not a.quoted and a.text == "(":
            value, i = self._or(t, i + 1)
            return value, i + 1  # the closing ')'
        if not a.quoted and a.text in ("DEFINED", "EXISTS", "IS_DIRECTORY", "COMMAND", "TARGET", "POLICY",
                                        "IS_ABSOLUTE", "TEST") and i + 1 < len(t):
            operand = t[i + 1].text
            if a.text == "DEFINED":
                if operand.startswith("ENV{"):
                    return False, i + 2
                return (True if operand in self.vars else None), i + 2
            if a.text in ("EXISTS", "IS_DIRECTORY"):
                return False, i + 2  # a fresh build directory holds no fetched tree yet
            return None, i + 2
        if i + 2 < len(t) and not t[i + 1].quoted and t[i + 1].text in (
                "STREQUAL", "MATCHES", "EQUAL", "LESS", "GREATER", "LESS_EQUAL", "GREATER_EQUAL",
                "VERSION_LESS", "VERSION_GREATER", "VERSION_EQUAL", "VERSION_LESS_EQUAL",
                "VERSION_GREATER_EQUAL", "IN_LIST"):
            op = t[i + 1].text
            lhs, rhs = self._operand(a), self._operand(t[i + 2])
            if lhs is None or rhs is None:
                return None, i + 3
            if op == "STREQUAL":
                return lhs == rhs, i + 3
            if op == "MATCHES":
                return bool(re.search(rhs, lhs)), i + 3
            return None, i + 3
        return self._truth(a), i + 1

    def _operand(self, a: _Arg) -> str | None:
        text = self.expand(a.text)
        if "${" in text:
            return None
        if a.quoted:
            return text
        return self.vars.get(text, text if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text) else None)

    def _truth(self, a: _Arg) -> bool | None:
        text = self.expand(a.text)
        if "${" in text:
            return None
        if text.upper() in _TRUE:
            return True
        if text.upper() in _FALSE or text.upper().endswith("-NOTFOUND"):
            return False
        if a.quoted:
            return None
        if text in self.vars:
            value = self.vars[text]
            return not (value.upper() in _FALSE or value.upper().endswith("-NOTFOUND"))
        return None  # a variable these files never set: found packages, cache options

    # -- commands -------------------------------------------------------------------------
    def run_file(self, path: Path) -> None:
        if path in self.seen:
            return
        self.seen.add(path)
        rel = path.relative_to(self.root).as_posix()
        self.run(parse_commands(path.read_text(errors="replace"), rel), rel)

    def run(self, commands: list[_Command], rel: str) -> None:
        # Each frame: [parent_active, some_branch_certainly_taken, active]
        stack: list[list[bool]] = []
        skip_depth = 0  # inside function()/macro() bodies, which only run when called
        for cmd in commands:
            where = f"{rel}:{cmd.line}"
            name = cmd.name
            if skip_depth:
                if name in ("function", "macro"):
                    skip_depth += 1
                elif name in ("endfunction", "endmacro"):
                    skip_depth -= 1
                continue
            active = stack[-1][2] if stack else True
            if name == "if":
                value = self.condition(list(cmd.args), rel) if active else False
                stack.append([active, value is True, active and value is not False])
            elif name == "elseif":
                frame = stack[-1]
                if frame[0] and not frame[1]:
                    value = self.condition(list(cmd.args), rel)
                    frame[2] = value is not False
                    frame[1] = value is True
                else:
                    frame[2] = False
            elif name == "else":
                frame = stack[-1]
                frame[2] = frame[0] and not frame[1]
            elif name == "endif":
                stack.pop()
            elif name in ("function", "macro"):
                skip_depth = 1
            elif not active:
                continue
            elif name == "set":
                self._set(cmd)
            elif name == "unset" and cmd.args and cmd.args[0].text not in CUDA_BUILD:
                self.vars.pop(cmd.args[0].text, None)
            elif name == "include" and cmd.args:
                target = self.expand(cmd.args[0].text)
                if target.endswith(".cmake"):
                    path = (self.root / target.removeprefix("./")).resolve()
                    if path.is_file() and self.root in path.parents:
                        self.run_file(path)
            elif name in ("fetchcontent_declare", "fetchcontent_populate"):
                self._declare(cmd, rel, where)

    def _set(self, cmd: _Command) -> None:
        if not cmd.args:
            return
        var = self.expand(cmd.args[0].text)
        if var in CUDA_BUILD:
            return
        values = []
        for a in cmd.args[1:]:
            if not a.quoted and a.text in ("CACHE", "PARENT_SCOPE"):
                break
            values.append(self.expand(a.text))
        if values:
            self.vars[var] = ";".join(values)
        else:
            self.vars.pop(var, None)

    def _declare(self, cmd: _Command, rel: str, where: str) -> None:
        if not cmd.args:
            return
        name = self.expand(cmd.args[0].text)
        fields: dict[str, list[str]] = {}
        key = None
        for a in cmd.args[1:]:
            if not a.quoted and a.text in _KEYWORDS:
                key = a.text
                fields[key] = []
            elif key is not None:
                fields[key].append(self.expand(a.text))
        if "GIT_REPOSITORY" not in fields:
            return  # a local SOURCE_DIR (the override branch) or a one-argument Populate
        if any(d.name == name for d in self.deps):
            return  # FetchContent: the first declaration of a name wins
        git = " ".join(fields["GIT_REPOSITORY"])
        ref = " ".join(fields.get("GIT_TAG", []))
        submodules = None
        if "GIT_SUBMODULES" in fields:
            submodules = tuple(s for v in fields["GIT_SUBMODULES"] for s in v.split(";") if s)
        env = self.last_env[0] if self.last_env and self.last_env[1] == rel else None
        self.last_env = None  # one override per declaration
        subdir = " ".join(fields["SOURCE_SUBDIR"]) if fields.get("SOURCE_SUBDIR") else None
        self.deps.append(CmakeDep(name, git, ref, env, subdir, submodules, where,
                                  unresolved="${" in git + ref or not ref))


def read_cmake_deps(tree: Path) -> list[CmakeDep]:
    """The git dependencies a CUDA build of the CMake project at `tree` fetches, in order."""
    root = tree.resolve()
    top = root / "CMakeLists.txt"
    if not top.is_file():
        raise InputError(f"{tree}: no CMakeLists.txt; is this a vLLM source tree?")
    ev = _Evaluator(root)
    ev.run_file(top)
    return ev.deps

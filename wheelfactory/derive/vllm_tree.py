"""What a vLLM source tree (sdist or git checkout) pins, each value with the file and line it
came from: requirement pins of the CUDA build, the transformers range, where
use_existing_torch.py lives, the requirement edits the factory's vLLM recipe applies, and the
Rust frontend's workspace, lock, toolchain and setup.py switch (vLLM >= 0.33).
"""

from __future__ import annotations

import ast
import posixpath
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..core.errors import BuildError, InputError
from ..sources.cargo import read_lock, toolchain_channel

# The file vLLM's setup.py reads for a CUDA build (get_requirements: "cuda.txt", which names
# "-r common.txt"); it stayed at requirements/cuda.txt when the build requirements moved to
# requirements/build/cuda.txt.
CUDA_REQUIREMENTS = "requirements/cuda.txt"
# The pins use_existing_torch.py removes, re-added by the recipe at the factory's versions, in
# this order (the order of the January data).
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")
# Factory components vLLM pins by their PyPI names; the recipe re-pins them to the release's.
COMPONENT_NAMES = {"flashinfer-python": "flashinfer", "triton": "triton", "nvidia-nccl-cu13": "nccl"}
# Regex characters that need a backslash in an edit's pattern ('.' and '-' do not: the pattern
# is anchored on a whole line, and the January data writes them plain).
_REGEX_SPECIAL = re.compile(r"([\\^$*+?{}\[\]|()])")


@dataclass(frozen=True)
class Pin:
    name: str  # canonical project name
    requirement: Requirement
    line: str  # the line as written
    where: str  # file:line

    @property
    def exact(self) -> str | None:
        specs = list(self.requirement.specifier)
        return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


def read_requirements(tree: Path, rel: str) -> tuple[list[Pin], list[str]]:
    """The requirement lines of one file (not following -r) and its raw lines."""
    path = tree / rel
    if not path.is_file():
        raise InputError(f"{tree}: no {rel}; the vLLM source layout changed, read setup.py's get_requirements")
    lines = path.read_text().splitlines()
    pins = []
    for n, raw in enumerate(lines, 1):
        text = raw.split(" #", 1)[0].strip()
        if not text or text.startswith(("#", "-")):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement as e:
            raise InputError(f"{rel}:{n}: cannot parse requirement {text!r}: {e}") from None
        pins.append(Pin(canonicalize_name(req.name), req, raw, f"{rel}:{n}"))
    return pins, lines


def find_pin(tree: Path, name: str,
             files: tuple[str, ...] = (CUDA_REQUIREMENTS, "requirements/common.txt")) -> Pin | None:
    for rel in files:
        if (tree / rel).is_file():
            for pin in read_requirements(tree, rel)[0]:
                if pin.name == canonicalize_name(name):
                    return pin
    return None


def use_existing_torch(tree: Path) -> str:
    """Where the tree's use_existing_torch.py is (the top level until 0.2x, tools/ since)."""
    for rel in ("use_existing_torch.py", "tools/use_existing_torch.py"):
        if (tree / rel).is_file():
            return rel
    raise InputError(f"{tree}: no use_existing_torch.py (looked in ./ and tools/); the recipe strips vLLM's torch "
                     "pins with it")


def _pattern(line: str) -> str:
    return "^" + _REGEX_SPECIAL.sub(r"\\\1", line) + "$"


def requirement_edits(tree: Path) -> tuple[dict[str, list[list[str]]], list[str], list[str]]:
    """The recipe's edits of requirements/cuda.txt, with a note per edit and the problems found.

    After use_existing_torch.py (default mode: every line mentioning "torch" goes) the recipe
    puts back the torch family at the factory's versions after the `-r` line, and every other
    removed requirement (torchcodec, say) as upstream wrote it; a factory component pinned
    with == (flashinfer-python) is replaced by the release's version.
    """
    pins, lines = read_requirements(tree, CUDA_REQUIREMENTS)
    notes: list[str] = []
    problems: list[str] = []
    edits: list[list[str]] = []
    kept = [ln for ln in lines if "torch" not in ln.lower()]  # what use_existing_torch.py leaves
    for pin in pins:
        component = COMPONENT_NAMES.get(pin.name)
        if component and pin.exact and "torch" not in pin.line.lower():
            edits.append([f"^{pin.requirement.name}==.*$", f"{pin.requirement.name}=={{{component}}}"])
            notes.append(f"{pin.requirement.name}=={{{component}}}  <- {pin.where} ({pin.line.strip()})")
    stripped = [p for p in pins if "torch" in p.line.lower()]
    if stripped:
        anchor = next((ln for ln in kept if ln.startswith("-r ")), None)
        if anchor is None:
            problems.append(f"{CUDA_REQUIREMENTS}: no '-r' line survives use_existing_torch.py to put the torch "
                            "pins after")
        else:
            added = [f"{n}=={{{n}}}" for n in TORCH_FAMILY if any(p.name == n for p in stripped)]
            others = [p for p in stripped if p.name not in TORCH_FAMILY]
            # Braces are doubled: the recipe formats the replacement with the release's versions.
            added += [p.line.split(" #", 1)[0].strip().replace("{", "{{").replace("}", "}}") for p in others]
            edits.append([_pattern(anchor), "\n".join([anchor] + added)])
            for p in stripped:
                notes.append(f"{p.name}: removed by use_existing_torch.py, re-added after '{anchor}'  <- {p.where}")
    for pattern, _ in edits:
        if sum(1 for ln in kept if re.search(pattern, ln)) != 1:
            problems.append(f"{CUDA_REQUIREMENTS}: edit pattern {pattern!r} does not match exactly one line after "
                            "use_existing_torch.py")
    return {CUDA_REQUIREMENTS: edits} if edits else {}, notes, problems


# -- the Rust frontend (vLLM >= 0.33) ------------------------------------------------------------
#
# vLLM's setup.py hands setuptools-rust the RustExtensions that tools/build_rust.py declares
# (`path=` a member manifest of the cargo workspace under rust/); cargo takes the workspace root
# (the nearest Cargo.toml above with a [workspace] table) and its Cargo.lock; rustup takes the
# channel of rust-toolchain.toml where cargo runs (the source root, where setup.py runs). The
# recipe's table records those, and the setup.py edit that leaves the frontend out.

RUST_DIR = "rust"
# Where the RustExtension declarations are looked for: setup.py, and the helpers it loads.
RUST_DECLARING = ("setup.py", "tools/*.py")


@dataclass
class RustFrontend:
    """recipes/data/vllm.toml's `rust` table for a tree (None while a problem stands), each value
    with the file:line it came from, and what could not be derived, with why."""

    table: dict[str, object] | None
    values: list[tuple[str, str, str]]  # (field, value as shown, file:line and what)
    notes: list[str]
    problems: list[tuple[str, str]]  # (field, why)


def _parse(tree: Path, rel: str) -> tuple[str, ast.Module]:
    text = (tree / rel).read_text()
    try:
        return text, ast.parse(text, rel)
    except SyntaxError as e:
        raise InputError(f"{rel}:{e.lineno}: not Python this reader can parse: {e.msg}") from None


def _called(node: ast.Call, name: str) -> bool:
    func = node.func
    return (isinstance(func, ast.Name) and func.id == name) or (isinstance(func, ast.Attribute) and func.attr == name)


def rust_extensions(tree: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """The manifests the tree's RustExtension(...) calls name (setup.py, tools/*.py; comments are
    not code), each with its file:line, and the calls whose path is not a plain string."""
    found, problems = [], []
    files = [rel for pattern in RUST_DECLARING for rel in sorted(p.relative_to(tree).as_posix()
                                                                 for p in tree.glob(pattern) if p.is_file())]
    for rel in files:
        text = (tree / rel).read_text()
        if "RustExtension" not in text:
            continue
        _, module = _parse(tree, rel)
        for node in ast.walk(module):
            if not (isinstance(node, ast.Call) and _called(node, "RustExtension")):
                continue
            path = next((k.value for k in node.keywords if k.arg == "path"), None)
            if path is None and len(node.args) > 1:
                path = node.args[1]
            if path is None:  # setuptools-rust's default
                found.append(("Cargo.toml", f"{rel}:{node.lineno}"))
            elif isinstance(path, ast.Constant) and isinstance(path.value, str):
                found.append((posixpath.normpath(path.value), f"{rel}:{path.lineno}"))
            else:
                problems.append(f"{rel}:{node.lineno}: RustExtension's path is not a plain string "
                                f"({ast.get_source_segment(text, path)})")
    return found, problems


def _line_of(text: str, pattern: str) -> int | None:
    return next((n for n, line in enumerate(text.splitlines(), 1) if re.match(pattern, line)), None)


def workspace_root(tree: Path, manifest: str) -> tuple[str, int | None]:
    """The manifest cargo resolves `manifest` in (the nearest Cargo.toml at or above its directory
    with a [workspace] table, as cargo looks for one) and the line of that table; the manifest
    itself and None when no workspace holds it."""
    start = PurePosixPath(manifest).parent
    for directory in (start, *start.parents):
        rel = (directory / "Cargo.toml").as_posix()
        path = tree / rel
        if not path.is_file():
            continue
        text = path.read_text()
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{rel}: not valid TOML: {e}") from None
        if "workspace" in data:
            return rel, _line_of(text, r"\s*\[workspace\]")
    return manifest, None


def _disable_edit(tree: Path) -> tuple[list[str], str]:
    """The setup.py edit that builds no Rust: its `rust_extensions=...` argument of setup()
    replaced by an empty list; with where it is."""
    text, module = _parse(tree, "setup.py")
    found = [(node, k) for node in ast.walk(module) if isinstance(node, ast.Call) and _called(node, "setup")
             for k in node.keywords if k.arg == "rust_extensions"]
    if not found:
        raise InputError("setup.py passes no rust_extensions= to setup(); there is no argument to empty")
    if len(found) > 1:
        raise InputError(f"setup.py passes rust_extensions= to setup() {len(found)} times (lines "
                         f"{', '.join(str(k.lineno) for _, k in found)}); the edit must name one")
    _, kw = found[0]
    old = ast.get_source_segment(text, kw)
    line = text.splitlines()[kw.end_lineno - 1]
    if line[kw.end_col_offset:].lstrip().startswith(","):
        old += ","
    new = "rust_extensions=[]" + ("," if old.endswith(",") else "")
    if text.count(old) != 1:
        raise InputError(f"setup.py:{kw.lineno}: {old!r} occurs {text.count(old)} times in setup.py; the edit "
                         "replaces text, so it must occur once")
    return [old, new], f"setup.py:{kw.lineno}"


def rust_frontend(tree: Path) -> RustFrontend | None:
    """The `rust` table of a tree with a rust/ directory (None without one): `lock` and
    `manifest` (the workspace of the RustExtensions), `toolchain` (rust-toolchain.toml's channel
    at the source root, when pinned) and `disable` (the setup.py edit for rust_frontend = false)."""
    if not (tree / RUST_DIR).is_dir():
        return None
    out = RustFrontend(None, [], [], [])
    table: dict[str, object] = {}
    try:
        extensions, bad = rust_extensions(tree)
    except InputError as e:
        extensions, bad = [], [str(e)]
    out.problems += [("manifest", b) for b in bad]
    roots = {}
    for manifest, where in extensions:
        if not (tree / manifest).is_file():
            out.problems.append(("manifest", f"{where}: RustExtension path {manifest} is not in the tree"))
            continue
        try:
            roots.setdefault(workspace_root(tree, manifest), []).append((manifest, where))
        except InputError as e:
            out.problems.append(("manifest", str(e)))
    if not extensions and not bad:
        out.problems.append(("manifest", f"{RUST_DIR}/ is there and no RustExtension(...) in "
                                         f"{' or '.join(RUST_DECLARING)} says which Cargo.toml setup.py builds"))
    elif len(roots) > 1:
        out.problems.append(("manifest", "the RustExtensions are in more than one cargo workspace ("
                             + "; ".join(f"{m} at {w}" for members in roots.values() for m, w in members)
                             + "); the recipe vendors one Cargo.lock"))
    elif len(roots) == 1:
        (root, line), members = next(iter(roots.items()))
        named = ", ".join(f"{m} at {w}" for m, w in members)
        how = (f"[workspace] above RustExtension path {named}" if line is not None
               else f"RustExtension path {named}, in no workspace")
        table["manifest"] = root
        out.values.append(("manifest", root, f"{root}:{line or 1} ({how})"))
        lock = posixpath.join(posixpath.dirname(root), "Cargo.lock")
        if not (tree / lock).is_file():
            out.problems.append(("lock", f"no {lock} beside {root}: cargo would resolve the crates at build time, "
                                         "and only a lock's crates are vendored"))
        else:
            try:
                summary = read_lock((tree / lock).read_bytes(), lock)
            except BuildError as e:
                out.problems.append(("lock", str(e)))
            else:
                table["lock"] = lock
                out.values.append(("lock", lock, f"{lock} (the lock of {root}: {summary.describe()})"))
    try:
        channel = toolchain_channel(tree)
    except BuildError as e:
        out.problems.append(("toolchain", str(e)))
    else:
        if channel is None:
            out.notes.append("no rust-toolchain.toml (or rust-toolchain) with a channel at the source root: the "
                             "Rust frontend builds with the host's default toolchain; the table has no `toolchain`")
        else:
            rel = "rust-toolchain.toml" if (tree / "rust-toolchain.toml").is_file() else "rust-toolchain"
            line = _line_of((tree / rel).read_text(), r"\s*channel\s*=") if rel.endswith(".toml") else 1
            table["toolchain"] = channel
            out.values.append(("toolchain", channel, f"{rel}:{line or 1}"))
    try:
        edit, where = _disable_edit(tree)
    except InputError as e:
        out.problems.append(("disable", str(e)))
    else:
        table["disable"] = edit
        out.values.append(("disable", f"{edit[0]!r} -> {edit[1]!r}", f"{where} (setup()'s argument, emptied for "
                                                                       "options.rust_frontend = false)"))
    if not out.problems:
        out.table = {k: table[k] for k in ("lock", "manifest", "toolchain", "disable") if k in table}
    return out

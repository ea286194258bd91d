"""What a vLLM source tree (sdist or git checkout) pins, each value with the file and line it
came from: requirement pins of the CUDA build, the transformers range, where
use_existing_torch.py lives, and the requirement edits the factory's vLLM recipe applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .errors import InputError

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

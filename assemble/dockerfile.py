"""Rendering a runtime Dockerfile from an image spec: text that depends on the release only.

The per-layer requirement files (names, versions, hashes) live in the build context, written
from the lock at build time; the Dockerfile only names the layer directories.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Mapping, Sequence

from wheelfactory.errors import InputError
from wheelfactory.grammar import check_text

from .bases import BaseImage
from .spec import VENV, ImageSpec, jit_root_links

# pip flags of every wheel layer:
#   --no-index --find-links  the layer's own bind-mounted wheels, never an index
#   --require-hashes --no-deps  exactly the locked files (the lock is the resolution)
#   --no-cache-dir  no wheel or HTTP cache left in the layer
#   -B, --no-compile  no .pyc (not even of modules pip itself imports through .pth files):
#                 byte-compiling adds ~30% to pure-Python packages; Python compiles
#                 what a process imports, once per container (docs/IMAGES.md has the numbers)
PIP_INSTALL = (f"{VENV}/bin/python -B -m pip install --no-index --find-links /wheels --require-hashes --no-deps "
               "--no-cache-dir --no-compile --disable-pip-version-check --root-user-action=ignore "
               "-r /wheels/requirements.txt")


def _quote(value: str, where: str = "a LABEL or ENV value") -> str:
    """A Dockerfile LABEL/ENV value in double quotes (variables still expand); a value with a
    control character is refused, as a newline would end the instruction and start another."""
    check_text(value, f"Dockerfile {where}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(key: str) -> str:
    """An ENV or LABEL key, written bare: letters, digits, '.', '_', '-' only."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        raise InputError(f"Dockerfile key {key!r}: only letters, digits, '.', '_' and '-' are written bare")
    return key


def _continued(lines: Sequence[str], indent: str = "    ") -> str:
    return (" \\\n" + indent).join(lines)


def _provision(spec: ImageSpec, base: BaseImage) -> list[str]:
    jit = bool(spec.env.get("CUDA_HOME")) and bool(base.jit_packages)
    packages = list(base.python_packages) + (list(base.dev_packages) if spec.dev_tooling else [])
    packages += [p for p in base.jit_packages if p not in packages] if jit else []
    if not packages:
        return []
    why = "python and build tooling" if spec.dev_tooling else f"python {base.python}: the base image has none"
    if jit:
        why += "; the host C++ compiler and linker that nvcc and FlashInfer's JIT run"
    if base.provision == "apt":
        return [f"# {why}",
                "RUN " + _continued(["apt-get update",
                                     "&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                                     + " ".join(sorted(packages)),
                                     "&& rm -rf /var/lib/apt/lists/*"]), ""]
    raise AssertionError(base.provision)


def _system_libraries(base: BaseImage, system: Sequence[tuple[str, str, Sequence[str]]]) -> list[str]:
    """One RUN installing the system libraries the image's Python packages load (system_libraries.toml)."""
    if not system:
        return []
    if base.family != "debian":
        raise AssertionError(base.family)  # needed_system_packages refuses a family without names
    names = sorted({n for _, _, pkgs in system for n in pkgs})
    out = [f"# system libraries {name} loads: {about}" for name, about, _ in system]
    return out + ["RUN " + _continued(["apt-get update",
                                       "&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                                       + " ".join(names),
                                       "&& rm -rf /var/lib/apt/lists/*"]), ""]


def _venv(spec: ImageSpec, base: BaseImage) -> list[str]:
    version = tuple(int(x) for x in base.python.split("."))
    py = shlex.quote(base.python_executable)
    check = f"import sys; assert sys.version_info[:2] == {version}, sys.version"
    # The venv keeps the stack apart from the distribution's Python packages; it gets its own pip
    # (from ensurepip) so that users can add packages, and no wheel of ours is cached anywhere.
    return ["# the venv every layer installs into; the base's python must be the one the wheels are for",
            f"RUN {py} -c {shlex.quote(check)} && {py} -m venv {VENV}", ""]


def _jit_root(env: Mapping[str, str]) -> list[str]:
    """A RUN completing the JIT toolkit root (lib64/, libcudart.so); fails the build if a link dangles."""
    links = jit_root_links(env)
    if not links:
        return []
    home = env["CUDA_HOME"].rstrip("/")
    steps = [f"{{ [ -e {home}/{link} ] || ln -s {target} {home}/{link}; }} && test -e {home}/{link}"
             for link, target in links]
    return ["# the JIT toolkit root as compilers expect it: FlashInfer's JIT links -L$CUDA_HOME/lib64 -lcudart",
            "RUN " + _continued(steps[:1] + ["&& " + x for x in steps[1:]]), ""]


PREVIEW_NOTE = ("PREVIEW, not buildable: no lock of the release yet. The packages are the release's pins "
                "(components and [pins]), not a locked set; the layer split, the build context and the system "
                "libraries of dependencies outside the pins come with `wheelfactory lock`.")


def render_dockerfile(spec: ImageSpec, base: BaseImage, layers: Sequence[tuple[str, str]],
                      env: Mapping[str, str] | None = None,
                      system: Sequence[tuple[str, str, Sequence[str]]] = (), preview: bool = False) -> str:
    """The Dockerfile of an image: base, python, system libraries, one bind-mounted pip install per
    layer, env, labels.

    `layers` are (name, what it holds) in build order; `env` overrides the spec's environment;
    `system` are (python package, why, system package names) for the packages of the image that
    load system libraries (syslibs.needed_system_packages); `preview` marks a Dockerfile written
    from the release's pins without a lock.
    """
    env = dict(spec.env if env is None else env)
    out = [f"# Generated by the wheelfactory image assembler from release {spec.release}; do not edit."]
    if preview:
        out += ["# " + line for line in textwrap.wrap(PREVIEW_NOTE, 96)]
    out += [f"# Image {spec.ref()} ({spec.variant}). The build context holds layers/<name>/: a layer's",
            "# locked wheels and its requirements.txt with their hashes. Each RUN bind-mounts one of them,",
            "# so no wheel is ever copied into a layer.",
            f"FROM {base.ref}", ""]
    out += _provision(spec, base)
    out += _system_libraries(base, system)
    out += _venv(spec, base)
    for name, about in layers:
        out += [f"# {name}: {about}",
                f"RUN --mount=type=bind,source=layers/{name},target=/wheels \\\n    {PIP_INSTALL}", ""]
    out += _jit_root(env)
    env = {"VIRTUAL_ENV": VENV, "PATH": f"{VENV}/bin:$PATH"} | env
    out.append("ENV " + _continued([f"{_key(k)}={_quote(v, f'ENV {k}')}" for k, v in env.items()]))
    out.append("")
    # Build-time values come last: a new date or revision must not invalidate any cached layer.
    out += [f"ARG {arg}" for arg in sorted(set(spec.arg_labels.values()))]
    labels = {k: v for k, v in spec.labels.items()} | {k: "${" + a + "}" for k, a in spec.arg_labels.items()}
    out.append("LABEL " + _continued([f"{_key(k)}={_quote(v, f'LABEL {k}')}" for k, v in labels.items()]))
    out.append("")
    return "\n".join(out)

"""Rendering a runtime Dockerfile from an image spec: text that depends on the release only.

The per-layer requirement files (names, versions, hashes) live in the build context, written
from the lock at build time; the Dockerfile only names the layer directories.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Mapping, Sequence

from wheelfactory.core.errors import InputError
from wheelfactory.core.grammar import check_text

from .bases import BaseImage
from .devtoolkit import CONTEXT_DIR, DEV_CUDA_HOME, required_paths
from .spec import VENV, VLLM_UID, ImageSpec, jit_root_links

IMAGE_FILES = "/opt/wheelfactory"  # the image's own checks (assemble/imagefiles), copied from the context

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


def _apt(packages: Sequence[str]) -> str:
    """One apt RUN that leaves no package lists, downloaded .debs or apt caches in its layer: a base
    without the docker-clean apt setting of Debian's and Ubuntu's own images (the debootstrapped CI
    base) kept 79 MB of them in a 2 MB install, and 194 MB in the dev image's tooling layer."""
    return "RUN " + _continued(["apt-get update",
                                "&& DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                                + " ".join(sorted(packages)),
                                "&& apt-get clean && rm -rf /var/lib/apt/lists/*"])


def provision_packages(spec: ImageSpec, base: BaseImage) -> list[str]:
    """What the first RUN installs: the base's Python, and the JIT's host compiler when the image has one."""
    jit = bool(spec.jit_home) and bool(base.jit_packages)
    packages = list(base.python_packages)
    return packages + ([p for p in base.jit_packages if p not in packages] if jit else [])


def _provision(spec: ImageSpec, base: BaseImage) -> list[str]:
    packages = provision_packages(spec, base)
    if not packages:
        return []
    why = ([f"python {base.python}: the base image has none"] if base.python_packages else []) + \
        (["the host C++ compiler and linker that nvcc and FlashInfer's JIT run"] if spec.jit_home and base.jit_packages
         else [])
    if base.family == "debian":
        return [f"# {'; '.join(why)}", _apt(packages), ""]
    raise AssertionError(base.family)


def extra_runs(spec: ImageSpec, base: BaseImage) -> list[str]:
    """Names of the RUNs after the wheel layers, in order (the size report names every RUN)."""
    return ((["jit-links"] if jit_root_links(_jit_env(spec)) else [])
            + (["tooling"] if spec.dev_tooling and base.dev_packages else [])
            + (["toolkit"] if spec.dev_tooling else []))


def _dev_tooling(spec: ImageSpec, base: BaseImage) -> list[str]:
    """Compilers and build tools of a -dev image, after the wheel layers: the dev image shares every
    earlier layer with the runtime image."""
    if not (spec.dev_tooling and base.dev_packages):
        return []
    if base.family != "debian":
        raise AssertionError(base.family)
    return ["# build tooling: compilers, CMake, Ninja, the Python headers extensions compile against",
            _apt(base.dev_packages), ""]


def _dev_toolkit(spec: ImageSpec) -> list[str]:
    """The release's CUDA toolkit at DEV_CUDA_HOME, from the build context; the build fails on a missing piece."""
    if not spec.dev_tooling:
        return []
    check = " ".join(required_paths())
    return ["# the release's CUDA toolkit from NVIDIA's wheels, laid out as the factory builds with it; the wheels",
            "# the venv already installed are links into it, so only nvcc, NVVM, CCCL, ... and the libcuda stub add up",
            f"RUN --mount=type=bind,source={CONTEXT_DIR},target=/toolkit \\\n    " + _continued([
                f"mkdir -p {DEV_CUDA_HOME} && cp -a /toolkit/. {DEV_CUDA_HOME}/",
                f"&& for f in {check}; do test -e \"{DEV_CUDA_HOME}/$f\" || "
                "{ echo \"toolkit: missing $f\" >&2; exit 1; }; done"]), ""]


def _user(spec: ImageSpec) -> list[str]:
    """The image's non-root user (uid 1000; the uid-1000 user of an Ubuntu base is replaced)."""
    if not spec.user:
        return []
    name = shlex.quote(spec.user)
    return ["# a non-root user to run as; `docker run --user root` (or -u 0) overrides it",
            "RUN " + _continued([f"if other=$(id -nu {VLLM_UID} 2>/dev/null); then userdel --remove \"$other\"; fi",
                                 f"&& useradd --create-home --uid {VLLM_UID} --user-group --shell /bin/bash {name}"]),
            ""]


def _jit_env(spec: ImageSpec) -> dict[str, str]:
    return {"CUDA_HOME": spec.jit_home} if spec.jit_home else {}


def _system_libraries(base: BaseImage, system: Sequence[tuple[str, str, Sequence[str]]]) -> list[str]:
    """One RUN installing the system libraries the image's Python packages load (system_libraries.toml)."""
    if not system:
        return []
    if base.family != "debian":
        raise AssertionError(base.family)  # needed_system_packages refuses a family without names
    names = sorted({n for _, _, pkgs in system for n in pkgs})
    out = [f"# system libraries {name} loads: {about}" for name, about, _ in system]
    return out + [_apt(names), ""]


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
            f"FROM {base.pinned_ref}", ""]
    # Right after FROM: the size report counts the RUN layers at the image's end as the assembler's,
    # and a COPY among them would shift them. These few files change rarely (a change rebuilds every
    # layer after it).
    out += ["# the image's own checks: the driver gate of the entrypoint, the Triton ahead-of-time compile",
            f"COPY imagefiles/ {IMAGE_FILES}/", ""]
    out += _provision(spec, base)
    out += _system_libraries(base, system)
    # The user before the wheel layers: its RUN writes files with new mtimes each time it runs, so
    # after the transformers layer it would be one more layer that siblings do not share.
    out += _user(spec)
    out += _venv(spec, base)
    for name, about in layers:
        out += [f"# {name}: {about}",
                f"RUN --mount=type=bind,source=layers/{name},target=/wheels \\\n    {PIP_INSTALL}", ""]
    out += _jit_root(_jit_env(spec))
    out += _dev_tooling(spec, base)
    out += _dev_toolkit(spec)
    env = {"VIRTUAL_ENV": VENV, "PATH": f"{VENV}/bin:$PATH"} | env
    out.append("ENV " + _continued([f"{_key(k)}={_quote(v, f'ENV {k}')}" for k, v in env.items()]))
    out.append("")
    if spec.user:
        # numeric, so that an engine can tell it is not root without the image's /etc/passwd
        # No WORKDIR: BuildKit makes a layer of it, after the wheel layers, which the size report would
        # take for the last RUN and siblings would not share; the user's HOME comes from /etc/passwd.
        out += [f"USER {VLLM_UID}:{VLLM_UID}", ""]
    if spec.entrypoint:
        # -I -S: the gate runs on the standard library alone, whatever PYTHON* variables a user sets,
        # without site-packages' .pth hooks; -B: it writes no .pyc into the image's container.
        # `docker run IMAGE` serves (vllm serve); options alone go to vllm serve; any other command
        # runs after the check; --entrypoint replaces the check (README: Images).
        out += ["# check the host's NVIDIA driver against the image's CUDA, then run the command",
                f'ENTRYPOINT ["{VENV}/bin/python", "-I", "-S", "-B", "{IMAGE_FILES}/entrypoint.py"]',
                'CMD ["vllm", "serve"]', ""]
    # Build-time values come last: a new date or revision must not invalidate any cached layer.
    out += [f"ARG {arg}" for arg in sorted(set(spec.arg_labels.values()))]
    labels = {k: v for k, v in spec.labels.items()} | {k: "${" + a + "}" for k, a in spec.arg_labels.items()}
    out.append("LABEL " + _continued([f"{_key(k)}={_quote(v, f'LABEL {k}')}" for k, v in labels.items()]))
    out.append("")
    return "\n".join(out)

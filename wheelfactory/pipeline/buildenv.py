"""The environment a build step's commands run in.

Two parts, kept apart on purpose:
- what the build is *given*: the release's and recipe's env (with ${placeholders} filled in), the
  secrets passed to this component, the CUDA toolkit, jobs, ccache and offline settings;
- what it *inherits* from the factory's own environment: an allowlist (locale, proxies and CA
  bundles, the home and temp directories, compiler-cache settings, what the recipe declares in
  `pass_env`), never the rest. A third-party build script is code the user did not write; it does
  not get their tokens, their PIP_* set-up or whatever else the shell happens to hold.
"""

from __future__ import annotations

import os
import shlex
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from ..core.secretenv import is_secret_name
from ..planning.plan import Step
from ..toolchain.ccache import ccache_env

# Inherited by name. PATH is not here: the factory composes it (venv, toolkit, then the parent's).
PASS_NAMES = frozenset({
    "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR", "LANG", "LANGUAGE",
    # Proxies: a build behind one (pip, git and CMake's FetchContent honour both spellings).
    "http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    # CA bundles of a corporate proxy or a private index.
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "NIX_SSL_CERT_FILE",
    # Where the host's own libraries are (a Python built into a prefix needs its libpython).
    "LD_LIBRARY_PATH",
})
# Inherited by prefix: locale categories and the compiler cache's own settings (size caps,
# remote storage); the factory sets CCACHE_DIR itself.
PASS_PREFIXES = ("LC_", "CCACHE_")

# The factory's pip calls see only the indexes it names: no config file, no version check.
PIP_SETTINGS = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

# Fixed archive timestamps: the same inputs give byte-identical wheels.
SOURCE_DATE_EPOCH = "315532800"


def inherited_environ(environ: Mapping[str, str], pass_env: Iterable[str] = ()) -> dict[str, str]:
    """The parent variables a build inherits: the allowlist, plus the recipe's `pass_env` names.
    A name that looks like a credential is dropped even when listed: secrets reach a build only
    through --secret-env, where they are redacted from every output."""
    wanted = PASS_NAMES | set(pass_env)
    env = {k: v for k, v in environ.items()
           if (k in wanted or k.startswith(PASS_PREFIXES)) and not is_secret_name(k)}
    env["PATH"] = environ.get("PATH", os.defpath)
    return env | PIP_SETTINGS


@dataclass(frozen=True)
class StepPaths:
    """Where one step's build happens, for ${placeholders} and the runtime settings."""

    src: Path
    work: Path
    venv: Path
    site: Path
    cache: Path


def fill_placeholders(step: Step, values: Mapping[str, str]) -> dict[str, str]:
    """The step's declared env with ${name} placeholders filled in; an unknown one is bad input."""
    env = {}
    for k, v in step.env.items():
        try:
            env[k] = string.Template(v).substitute(values)
        except (KeyError, ValueError) as e:
            raise InputError(f"[{step.component}] env {k}={v!r}: unknown placeholder {e}; "
                             f"known: {', '.join('${' + n + '}' for n in values)}") from None
    return env


def step_environment(step: Step, paths: StepPaths, *, cuda_home: str | None, jobs: int, offline: bool,
                     ccache: str | None, trees: Mapping[str, Path], parent_path: str) -> dict[str, str]:
    """Everything the factory sets for a step's commands (on top of the inherited environment).
    Runtime-only settings (jobs, PATH, ccache) never enter the build key."""
    values = {"site": str(paths.site), "src": str(paths.src), "work": str(paths.work),
              "cuda_home": cuda_home or "", "cache": str(paths.cache)}
    values |= {f"source_{name}": str(tree) for name, tree in trees.items()}
    env = fill_placeholders(step, values)
    env |= step.secrets  # the values behind the plan's *** (secretenv.py), for the build only
    path = [str(paths.venv / "bin")] + ([f"{cuda_home}/bin"] if cuda_home else [])
    env |= {
        "PATH": os.pathsep.join(path + [parent_path]),
        "VIRTUAL_ENV": str(paths.venv),
        "MAX_JOBS": str(jobs),
        "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs),
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
    }
    if cuda_home:
        env.setdefault("CUDA_HOME", cuda_home)
        # Every build system's way to find the toolkit, so none falls back to a host copy:
        # CMake's CUDA language (CUDACXX), FindCUDAToolkit (CUDAToolkit_ROOT), older CMake
        # and torch's cpp_extension (CUDA_TOOLKIT_ROOT_DIR, CUDA_HOME).
        env.setdefault("CUDACXX", f"{cuda_home}/bin/nvcc")
        env.setdefault("CUDAToolkit_ROOT", cuda_home)
        env.setdefault("CUDA_TOOLKIT_ROOT_DIR", cuda_home)
    if ccache:
        # Object files survive version bumps and failed runs: a rebuild recompiles only what changed.
        env |= ccache_env(paths.cache) | {
                "CCACHE_BASEDIR": str(paths.work), "CCACHE_NOHASHDIR": "1", "CMAKE_C_COMPILER_LAUNCHER": ccache,
                "CMAKE_CXX_COMPILER_LAUNCHER": ccache, "CMAKE_CUDA_COMPILER_LAUNCHER": ccache}
    if offline:
        env |= {"PIP_NO_INDEX": "1", "HF_HUB_OFFLINE": "1", "FETCHCONTENT_FULLY_DISCONNECTED": "ON",
                "UV_OFFLINE": "1"}
    return env


def env_script(env: Mapping[str, str], secrets: Iterable[str], src: Path) -> str:
    """build_env.sh: re-enter a kept work tree by hand with the step's environment. A secret's
    value is not written: the script takes it from the shell."""
    hidden = set(secrets)
    return "".join(
        f'export {k}="${{{k}:?{k} is a secret of this build; export it first}}"\n' if k in hidden
        else f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())) + f"cd {shlex.quote(str(src))}\n"

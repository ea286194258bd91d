"""The -dev image's CUDA toolkit: the release's build toolkit from NVIDIA's wheels, at /usr/local/cuda.

It is the toolkit the factory compiles every component with (wheelfactory/toolchain/toolkit.py: the pins of
recipes/data/cuda_wheels.toml, laid out as bin/, nvvm/, include/, lib64/ with unversioned links,
lib64/stubs/libcuda.so, lib -> lib64, extras/CUPTI), with one difference: a toolkit wheel that the
release's lock also holds (cudart, NVRTC, cuBLAS, cuSPARSE, ...: torch's own CUDA requirements) is
taken at the locked version and its files are symbolic links into the venv, where the image's cuda
layer installed that very wheel. The toolkit therefore adds only what no runtime wheel has (nvcc,
NVVM, CRT, CCCL, culibos, the profiler API, cuobjdump, the stub), and the headers an extension
compiles against are those of the libraries torch loads at run time.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.lock.closure import Lock
from wheelfactory.planning.release import Release
from wheelfactory.store.wheelmeta import sha256_file
from wheelfactory.toolchain.toolkit import (
    DRIVER_HEADERS,
    FIXED_LINKS,
    MARKER,
    REQUIRED,
    WHEEL_PREFIX,
    ToolkitCache,
    WheelPin,
    WheelToolkit,
    load_toolkit,
    make_driver_stub,
    member_destination,
    unpack_wheel,
    unversioned_links,
)

# Where the dev image's toolkit lives: the path CUDA's own packages use, and torch's cpp_extension's
# default CUDA_HOME.
DEV_CUDA_HOME = "/usr/local/cuda"
# The build context directory holding the toolkit root, copied to DEV_CUDA_HOME by one RUN.
CONTEXT_DIR = "toolkit"


@dataclass(frozen=True)
class DevToolkit:
    """The toolkit pins of a dev image: the release's, with the lock's wheel where the lock has one."""

    toolkit: WheelToolkit
    from_lock: frozenset[str]  # canonical names installed in the venv by the lock: linked, not copied


def dev_toolkit(data_file: Path, release: Release, lock: Lock, own: Iterable[str] = ()) -> DevToolkit:
    """The release's toolkit pins, each replaced by the locked wheel of the same name when there is one,
    except the names of `own`: the compiler wheels (nvcc, NVVM, CRT, CCCL) a runtime image may also pin
    for its JIT. nvcc finds nvvm/ and include/ next to its real path, so a linked nvcc would compile
    with the venv's tree instead of this root: those are unpacked here whatever the lock holds."""
    base = load_toolkit(data_file, release.target.cuda, release.target.platform)
    keep = {canonicalize_name(n) for n in own}
    locked = {canonicalize_name(p.name): p for p in lock.packages if canonicalize_name(p.name) not in keep}
    pins, shared = [], set()
    for pin in base.wheels:
        p = locked.get(pin.name)
        if p is None:
            pins.append(pin)
        else:
            pins.append(WheelPin(pin.name, p.version, p.sha256))
            shared.add(pin.name)
    return DevToolkit(WheelToolkit(base.cuda, base.machine, tuple(pins)), frozenset(shared))


def stub_compiler(machine: str) -> str:
    """The C compiler that makes the libcuda.so stub for `machine`: gcc, or the cross gcc of another machine."""
    return "gcc" if machine == platform.machine() else f"{machine}-linux-gnu-gcc"


def required_paths() -> list[str]:
    """What a complete toolkit root holds (wheelfactory/toolchain/toolkit.py's REQUIRED), checked inside the image."""
    return list(REQUIRED)


def _link_locked_wheel(wheel: Path, root: Path, site: str) -> list[str]:
    """Symbolic links in `root` to the files a locked wheel installed under `site`; the driver headers' texts."""
    headers = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            rel = member_destination(info.filename)
            if rel is None or rel.startswith("dist-info/") or not info.filename.startswith(WHEEL_PREFIX):
                continue
            target = root / rel
            if target.is_symlink() or target.exists():
                continue  # a toolkit-only wheel ships the same file: keep one
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(f"{site}/{info.filename}")
            if rel.startswith("include/") and rel.removeprefix("include/") in DRIVER_HEADERS:
                headers.append(zf.read(info).decode(errors="replace"))
    return headers


def write_toolkit_context(dest: Path, dev: DevToolkit, lock: Lock, wheel_dir: Path, cache: ToolkitCache,
                          site: str, echo: Callable[[str], None] = lambda s: None) -> None:
    """Lay out the dev toolkit root in `dest` (the build context's toolkit/): unpacked toolkit-only wheels,
    links into `site` for the locked ones, the unversioned library links, the fixed links and the stub.
    Kept when `dest` already holds the same identity."""
    marker = dest / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("identity") == dev.toolkit.identity:
                return
        except ValueError:
            pass  # a broken marker: lay it out again
    own = WheelToolkit(dev.toolkit.cuda, dev.toolkit.machine,
                       tuple(p for p in dev.toolkit.wheels if p.name not in dev.from_lock))
    wheels = cache.fetch(own, echo)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".toolkit-", dir=dest.parent))
    try:
        for wheel, pin in zip(wheels, own.wheels, strict=True):
            if sha256_file(wheel) != pin.sha256:
                raise BuildError(f"{wheel}: sha256 differs from the pin {pin.sha256}; remove it and fetch again")
            unpack_wheel(wheel, tmp)
        headers = [(tmp / "include" / h).read_text(errors="replace") for h in DRIVER_HEADERS
                   if (tmp / "include" / h).is_file()]
        for name in sorted(dev.from_lock):
            pkg = next(p for p in lock.packages if canonicalize_name(p.name) == name)
            headers += _link_locked_wheel(wheel_dir / pkg.filename, tmp, site)
        lib64 = tmp / "lib64"
        lib64.mkdir(exist_ok=True)
        for link, target in unversioned_links(p.name for p in lib64.iterdir()).items():
            (lib64 / link).symlink_to(target)
        for link, target in FIXED_LINKS.items():
            (tmp / link).parent.mkdir(parents=True, exist_ok=True)
            (tmp / link).symlink_to(target)
        if not headers:
            raise InputError(f"the CUDA {dev.toolkit.cuda} toolkit of the dev image has no cuda.h (nvidia-cuda-runtime "
                             "in recipes/data/cuda_wheels.toml); the libcuda.so linker stub needs it")
        make_driver_stub(tmp, stub_compiler(dev.toolkit.machine), headers)
        (tmp / MARKER).write_text(json.dumps({
            "cuda": dev.toolkit.cuda, "machine": dev.toolkit.machine, "identity": dev.toolkit.identity,
            "wheels": [{"name": p.name, "version": p.version, "sha256": p.sha256,
                        "installed_by": "the image's venv" if p.name in dev.from_lock else "this root"}
                       for p in dev.toolkit.wheels],
        }, indent=2) + "\n")
        tmp.chmod(0o755)
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

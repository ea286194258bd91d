"""The build context of an image: layers/<name>/ with the layer's locked wheels and requirements.txt.

Wheels are hard-linked from the wheelhouse (copied across file systems). Each layer directory
holds exactly its own wheels, so BuildKit's content-based cache key of a layer's bind mount is the
same for every image whose layer installs the same wheels (-t4 and -t5 share all but one).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from wheelfactory.store.wheelhouse import atomic_write_text

from .layers import Layer

IMAGE_FILES = Path(__file__).resolve().parent / "imagefiles"


def write_image_files(context: Path) -> None:
    """context/imagefiles/: the scripts every image carries (entrypoint, Triton check), byte for byte."""
    dest = context / "imagefiles"
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in IMAGE_FILES.glob("*.py") if p.name != "__init__.py"}
    for old in dest.iterdir():
        if old.name not in wanted:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for name in sorted(wanted):
        atomic_write_text(dest / name, (IMAGE_FILES / name).read_text())
        (dest / name).chmod(0o644)  # BuildKit hashes the mode into the cache key


def requirements_txt(layer: Layer) -> str:
    """pip requirements with the lock's hashes for one layer (empty when the layer has no wheels)."""
    return "".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in layer.packages)


def _link(src: Path, dest: Path) -> None:
    if dest.exists():
        a, b = src.stat(), dest.stat()
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) or (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns):
            return  # the same file, or an earlier copy of it
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dest)


def write_context(context: Path, layers: Sequence[Layer], wheel_dir: Path) -> None:
    """Fill context/layers/<name>/ for every layer and context/imagefiles/, and remove anything left
    from an earlier run."""
    write_image_files(context)
    root = context / "layers"
    root.mkdir(parents=True, exist_ok=True)
    wanted = {layer.name for layer in layers}
    for old in root.iterdir():
        if old.name not in wanted:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    for layer in layers:
        d = root / layer.name
        d.mkdir(exist_ok=True)
        names = {p.filename for p in layer.packages}
        for old in d.iterdir():
            if old.name != "requirements.txt" and old.name not in names:
                old.unlink()
        for p in layer.packages:
            _link(wheel_dir / p.filename, d / p.filename)
        atomic_write_text(d / "requirements.txt", requirements_txt(layer))
        # A fixed mode whatever the umask: BuildKit hashes the mode into the cache key.
        (d / "requirements.txt").chmod(0o644)

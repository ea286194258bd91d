"""Size report of a built image: per layer, wheel bytes installed, overhead, bytes shared with a sibling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wheelfactory.core.errors import BuildError

from .docker import Docker


@dataclass(frozen=True)
class LayerSize:
    name: str
    size: int
    diff_id: str
    installed: int | None = None  # bytes of the wheels it installs; None for non-wheel layers


@dataclass
class SizeReport:
    ref: str
    total: int
    base: int  # the base image's layers
    layers: list[LayerSize] = field(default_factory=list)  # the assembler's layers
    sibling: str | None = None
    shared: int = 0  # bytes of layers the sibling image has too (base included)

    @property
    def installed(self) -> int:
        return sum(x.installed or 0 for x in self.layers)

    @property
    def wheel_layers(self) -> int:
        return sum(x.size for x in self.layers if x.installed is not None)

    @property
    def overhead(self) -> float:
        """How much the wheel layers add over the bytes their wheels install, in %."""
        return 100.0 * (self.wheel_layers - self.installed) / self.installed if self.installed else 0.0

    def lines(self) -> list[str]:
        """The report as printable lines."""
        gb = 1e9
        out = [f"{self.ref}: {self.total / gb:.3f} GB total, base {self.base / gb:.3f} GB",
               f"  {'layer':<16} {'size':>14} {'wheels installed':>18} {'overhead':>9}"]
        for x in self.layers:
            inst = f"{x.installed:>18,}" if x.installed is not None else f"{'-':>18}"
            ovh = f"{100.0 * (x.size - x.installed) / x.installed:>8.3f}%" if x.installed else f"{'-':>9}"
            out.append(f"  {x.name:<16} {x.size:>14,} {inst} {ovh}")
        out.append(f"  wheel layers {self.wheel_layers:,} B for {self.installed:,} B of installed wheels: "
                   f"assembler overhead {self.overhead:+.3f}%")
        if self.sibling:
            out.append(f"  shared with {self.sibling}: {self.shared:,} B ({100.0 * self.shared / self.total:.1f}% "
                       "of this image)")
        else:
            out.append("  no sibling image (same vLLM version, other transformers) to share layers with")
        return out


def measure(docker: Docker, ref: str, names: Sequence[str], installed: Sequence[int | None],
            sibling: str | None = None) -> SizeReport:
    """Sizes of `ref` whose last len(names) layers are the assembler's RUNs, named in order."""
    info = docker.inspect(ref)
    if info is None:
        raise BuildError(f"image {ref} is not in the Docker engine")
    diff_ids = info["RootFS"]["Layers"]
    runs = [size for size, by in docker.history(ref) if by.startswith("RUN ")][-len(names):]
    if len(runs) != len(names) or len(diff_ids) < len(names):
        raise BuildError(f"{ref}: expected {len(names)} assembler layers, the image history has {len(runs)}")
    ours = diff_ids[len(diff_ids) - len(names):]
    layers = [LayerSize(n, s, d, i) for n, s, d, i in zip(names, runs, ours, installed, strict=True)]
    total = int(info["Size"])
    report = SizeReport(ref, total, total - sum(x.size for x in layers), layers)
    sib = docker.inspect(sibling) if sibling else None
    if sib is not None:
        theirs = set(sib["RootFS"]["Layers"])
        base_ids = diff_ids[: len(diff_ids) - len(names)]
        report.sibling = sibling
        report.shared = (report.base if all(d in theirs for d in base_ids) else 0) + \
            sum(x.size for x in layers if x.diff_id in theirs)
    return report

"""The NCCL floor at lock: an NCCL older than the one the locked torch pins is refused, naming symbols.

Fixtures: tiny wheels made here around the ELF stand-ins of tests/data/nccl-symbols (build.sh): a
libnccl with and without the point-to-point API, and a library importing both (in the place of
torch/lib/libtorch_cuda.so).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

from wheelfactory.core.errors import BuildError
from wheelfactory.lock import closure as lockmod
from wheelfactory.lock.nccl_floor import check_nccl_floor, dynamic_symbols, torch_nccl_pin
from wheelfactory.pipeline.factory import Factory

from .test_lock_overrides import FakeUv

FIX = Path(__file__).resolve().parent / "data" / "nccl-symbols"
NCCL_MEMBER = "nvidia/nccl/lib/libnccl.so.2"


def wheel(root: Path, name: str, version: str, requires: tuple[str, ...] = (),
          members: dict[str, Path] | None = None) -> Path:
    """A minimal wheel of name==version with the given files."""
    stem = f"{name.replace('-', '_')}-{version}"
    path = root / f"{stem}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n"
                                                                                  for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        for member, src in (members or {}).items():
            z.write(src, member)
        z.writestr(f"{stem}.dist-info/METADATA", meta)
        z.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{stem}.dist-info/RECORD", "")
    return path


def torch_wheel(root: Path, pin: str | None = "nvidia-nccl-cu13==2.30.7") -> Path:
    return wheel(root, "torch", "2.14.1", (pin,) if pin else (), {"torch/lib/libtorch_cuda.so": FIX / "libuser.so"})


def locked(*wheels: Path) -> list[tuple[str, str, str]]:
    out = []
    for w in wheels:
        name, version = w.name.split("-")[:2]
        out.append((name.replace("_", "-"), version, w.name))
    return out


def test_the_pin_is_read_from_torch_requirements_with_markers() -> None:
    assert torch_nccl_pin(["filelock", 'nvidia-nccl-cu13==2.28.9; platform_system == "Linux"']) == \
        ("nvidia-nccl-cu13", Version("2.28.9"))
    assert torch_nccl_pin(["nvidia_nccl_cu12==2.21.5"]) == ("nvidia-nccl-cu12", Version("2.21.5"))
    assert torch_nccl_pin(["nvidia-nccl-cu13>=2.28"]) is None  # a range is no build-time NCCL
    assert torch_nccl_pin(["numpy", "nvidia-cublas==13.1.0.3"]) is None


def test_dynamic_symbols_split_exported_from_imported() -> None:
    old_exported, _ = dynamic_symbols(FIX / "libnccl-old.so.2")
    new_exported, _ = dynamic_symbols(FIX / "libnccl-new.so.2")
    assert {"ncclAllReduce", "ncclGetVersion"} <= old_exported and "ncclSend" not in old_exported
    assert new_exported - old_exported == {"ncclSend", "ncclRecv"}
    _, user_imports = dynamic_symbols(FIX / "libuser.so")
    assert {"ncclGetVersion", "ncclAllReduce", "ncclSend", "ncclRecv"} <= user_imports


def test_an_older_nccl_is_refused_naming_what_torch_imports_and_it_lacks(tmp_path: Path) -> None:
    torch = torch_wheel(tmp_path)
    nccl = wheel(tmp_path, "nvidia-nccl-cu13", "2.28.3", members={NCCL_MEMBER: FIX / "libnccl-old.so.2"})
    with pytest.raises(BuildError) as err:
        check_nccl_floor("r", locked(torch, nccl), tmp_path)
    msg = str(err.value)
    assert err.value.exit_code == 1
    assert "nvidia-nccl-cu13 2.28.3 (nvidia_nccl_cu13-2.28.3-py3-none-any.whl) is older than the " \
           "nvidia-nccl-cu13 2.30.7 that torch 2.14.1 was built against" in msg
    assert "lacks 2 symbol(s) that torch/lib/libtorch_cuda.so imports: ncclRecv, ncclSend" in msg
    assert "no nvidia-nccl-cu13 2.30.7 wheel in" in msg


def test_the_pinned_nccl_wheel_in_the_wheelhouse_is_compared_too(tmp_path: Path) -> None:
    torch = torch_wheel(tmp_path)
    nccl = wheel(tmp_path, "nvidia-nccl-cu13", "2.28.3", members={NCCL_MEMBER: FIX / "libnccl-old.so.2"})
    wheel(tmp_path, "nvidia-nccl-cu13", "2.30.7", members={NCCL_MEMBER: FIX / "libnccl-new.so.2"})
    with pytest.raises(BuildError, match=r"of the 4 NCCL symbols nvidia_nccl_cu13-2\.30\.7-py3-none-any\.whl "
                                         r"exports it lacks 2: ncclRecv, ncclSend"):
        check_nccl_floor("r", locked(torch, nccl), tmp_path)


def test_an_older_nccl_with_every_symbol_is_still_below_the_floor(tmp_path: Path) -> None:
    torch = torch_wheel(tmp_path)
    nccl = wheel(tmp_path, "nvidia-nccl-cu13", "2.29.2", members={NCCL_MEMBER: FIX / "libnccl-new.so.2"})
    with pytest.raises(BuildError, match="exports all 4 NCCL symbols torch/lib/libtorch_cuda.so imports"):
        check_nccl_floor("r", locked(torch, nccl), tmp_path)


@pytest.mark.parametrize("version", ["2.30.7", "2.30.7.post1", "2.31.0"])
def test_the_pinned_or_a_newer_nccl_passes_without_reading_symbols(tmp_path: Path, version: str) -> None:
    torch = torch_wheel(tmp_path)
    # no libnccl inside: the version alone decides, nothing is extracted
    nccl = wheel(tmp_path, "nvidia-nccl-cu13", version)
    check_nccl_floor("r", locked(torch, nccl), tmp_path)


def test_no_pin_or_no_locked_nccl_is_no_floor(tmp_path: Path) -> None:
    cpu_torch = torch_wheel(tmp_path, pin=None)
    nccl = wheel(tmp_path, "nvidia-nccl-cu13", "2.20.0", members={NCCL_MEMBER: FIX / "libnccl-old.so.2"})
    check_nccl_floor("r", locked(cpu_torch, nccl), tmp_path)
    (tmp_path / "pinned").mkdir()
    check_nccl_floor("r", locked(torch_wheel(tmp_path / "pinned")), tmp_path / "pinned")


def test_lock_refuses_the_older_nccl_and_writes_no_lock(factory: Factory, monkeypatch) -> None:
    wh = factory.wheelhouse
    wh.root.mkdir(parents=True, exist_ok=True)
    vllm = wheel(wh.root, "vllm", "0.15.0", ("torch",))
    torch = torch_wheel(wh.root)
    nccl = wheel(wh.root, "nvidia-nccl-cu13", "2.28.3", members={NCCL_MEMBER: FIX / "libnccl-old.so.2"})
    plan = factory.plan(factory.release("0.15.0-t4"), ["vllm"])
    monkeypatch.setattr(lockmod, "component_wheels", lambda plan, wheelhouse: {"vllm": [vllm]})
    with pytest.raises(BuildError, match=r"libtorch_cuda\.so imports: ncclRecv, ncclSend"):
        lockmod.lock_release(plan, wh, FakeUv([vllm, torch, nccl]), "python3.12", "https://pypi.org/simple",
                             offline=True)
    assert not (wh.locks_dir / "0.15.0-t4.json").exists()

"""The ptxas variables per Triton version, and the Triton AOT check's reading of a cubin."""

from __future__ import annotations

from pathlib import Path

import pytest

from assemble.imagefiles.triton_aot_check import cubin_toolkit_note
from wheelfactory.cuda.triton_ptxas import ptxas_env, ptxas_knobs

CUBINS = Path(__file__).resolve().parent / "data" / "cubins"


@pytest.mark.parametrize(("version", "knobs"), [
    ("3.5.1", ("TRITON_PTXAS_PATH",)),
    ("3.6.0", ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")),
    ("3.6.0rc1", ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")),
    ("3.7.1", ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")),
    ("3.8.0", ("TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH")),
])
def test_knobs_per_triton_version(version: str, knobs: tuple[str, ...]) -> None:
    assert ptxas_knobs(version) == knobs


@pytest.mark.parametrize("version", [None, "", "not-a-version"])
def test_unknown_triton_gets_every_knob(version: str | None) -> None:
    assert set(ptxas_knobs(version)) == {"TRITON_PTXAS_PATH", "TRITON_PTXAS_BLACKWELL_PATH"}


def test_env_points_every_knob_at_one_ptxas() -> None:
    assert ptxas_env("3.8.0", "/tk/bin/ptxas") == {"TRITON_PTXAS_PATH": "/tk/bin/ptxas",
                                                   "TRITON_PTXAS_BLACKWELL_PATH": "/tk/bin/ptxas"}


@pytest.mark.parametrize(("name", "arch"), [("empty-sm_121a-ptxas-13.1.80.cubin", "sm_121a"),
                                            ("empty-sm_121-ptxas-13.1.80.cubin", "sm_121"),
                                            ("empty-sm_90a-ptxas-13.1.80.cubin", "sm_90a")])
def test_cubin_note_names_arch_and_ptxas(name: str, arch: str) -> None:
    assert cubin_toolkit_note((CUBINS / name).read_bytes()) == (arch, "13.1.80")


def test_cubin_note_refuses_what_is_no_cubin() -> None:
    with pytest.raises(ValueError, match="not a 64-bit"):
        cubin_toolkit_note(b"\x7fELF\x01" + bytes(60))


def test_venv_pth_points_triton_at_the_toolkit_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wheelfactory.lock.venv import PTH_NAME, TRITON_CHECK, point_triton_at_toolkit

    assert TRITON_CHECK.is_file()
    assert point_triton_at_toolkit(tmp_path, "3.8.0") is None  # no toolkit wheels: nothing written
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    ptxas = site / "nvidia" / "cu13" / "bin" / "ptxas"
    ptxas.parent.mkdir(parents=True)
    ptxas.write_text("")
    assert point_triton_at_toolkit(tmp_path, "3.8.0") == ptxas
    line = (site / PTH_NAME).read_text()
    assert line.startswith("import ")  # site.py runs only .pth lines that start with import
    monkeypatch.delenv("TRITON_PTXAS_PATH", raising=False)
    monkeypatch.setenv("TRITON_PTXAS_BLACKWELL_PATH", "/mine/ptxas")
    exec(line, {})
    import os
    assert os.environ["TRITON_PTXAS_PATH"] == str(ptxas)
    assert os.environ["TRITON_PTXAS_BLACKWELL_PATH"] == "/mine/ptxas"  # the user's own wins

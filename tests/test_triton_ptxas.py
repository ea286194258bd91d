"""The ptxas variables per Triton version, and the Triton AOT check's reading of a cubin."""

from __future__ import annotations

from pathlib import Path

import pytest

from assemble.imagefiles.triton_aot_check import cubin_toolkit_note
from wheelfactory.triton_ptxas import ptxas_env, ptxas_knobs

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

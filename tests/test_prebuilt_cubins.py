"""A prebuilt cubin package without code for the release's GPUs stays out of the image."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from assemble.prebuilt_cubins import cubin_archs, foreign_only, left_out, wheel_cubin_archs

from .test_assemble_bad_input import setup, write_lock  # noqa: F401  (setup is a fixture)
from .test_assemble_system import out_dir, run_images

SPARK = [(12, 1)]
# member names in the form of flashinfer_cubin-0.6.9 (PyPI): trtllm-gen GEMMs (sm100f), FMHA (Sm100a in
# the kernel name), sm103a, DeepGEMM (no arch in the name), and files that are no cubins
CUBINS = "flashinfer_cubin/cubins/31e75d42/"
PYPI_LIKE = [
    "flashinfer_cubin/__init__.py",
    f"{CUBINS}gemm-4daf11e-1fddea2/Gemm_Bfloat16_E2m1E2m1_Fp32_t128x128x128_s3_c1x1x1_16dp256b_rM_TN_schedS_sm100f.cubin",
    f"{CUBINS}gemm-4daf11e-1fddea2/Gemm_E4m3_E4m3E4m3_Fp32_t128x8x128u2_s8_TN_schedS_sm100f.cubin",
    f"{CUBINS}fmha/trtllm-gen/FmhaSm100aKernel_QkvE4m3OBfloat16H128PagedKvCausalP32VarSeqQ128Kv128.cubin",
    f"{CUBINS}batched_gemm/Bmm_Bfloat16_E2m1E2m1_Fp32_t128x8x512u2_s4_TN_transOut_schedS_sm103a.cubin",
    f"{CUBINS}deep-gemm/kernel.fp8_m_grouped_gemm.007404769193.cubin",
    f"{CUBINS}deep-gemm/checksums.txt",
    f"{CUBINS}fmha/trtllm-gen/include/flashInferMetaInfo.h",
]


def make_wheel(path: Path, names: list[str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for n in names:
            z.writestr(n, b"")
    return path


def test_archs_come_from_the_cubin_names() -> None:
    found = cubin_archs(PYPI_LIKE)
    assert dict(found.archs) == {"sm_100f": 2, "sm_100a": 1, "sm_103a": 1}
    assert found.unnamed == 1 and found.total == 5


def test_a_foreign_only_package_is_left_out_with_the_reason(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "flashinfer_cubin-0.6.9-py3-none-any.whl", PYPI_LIKE)
    why = left_out([("flashinfer-cubin", "0.6.9", wheel), ("torch", "2.14.0", wheel)], SPARK)
    assert list(why) == ["flashinfer-cubin"]
    assert why["flashinfer-cubin"] == (
        "flashinfer-cubin 0.6.9 (flashinfer_cubin-0.6.9-py3-none-any.whl) is left out of the image: its 5 cubins "
        "are for other GPUs (2 sm_100f, 1 sm_100a, 1 sm_103a and 1 with no arch in their names), none for the "
        "release's 12.1; the driver cannot load them there and FlashInfer JIT-compiles its kernels instead "
        "(flashinfer-ai/flashinfer#3294)")
    # the same wheel serves a B200 (10.0) release
    assert left_out([("flashinfer-cubin", "0.6.9", wheel)], [(10, 0)]) == {}


@pytest.mark.parametrize(("arch", "kept"), [("sm120f", True), ("sm121a", True), ("sm_121", True),
                                            ("sm120a", False), ("sm100f", False), ("sm90a", False)])
def test_a_cubin_for_the_spark_keeps_the_package(arch: str, kept: bool) -> None:
    # family code (sm_120f) and 12.1's own load on a GB10; sm_120a (arch-specific to 12.0) does not
    found = cubin_archs([*PYPI_LIKE, f"{CUBINS}fmha/Fmha_{arch}.cubin"])
    assert (foreign_only(found, SPARK) is None) is kept


def test_a_package_without_cubins_is_left_out(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", ["flashinfer_cubin/__init__.py"])
    assert foreign_only(wheel_cubin_archs(wheel), SPARK) == "it holds no cubins (the release's GPUs: 12.1)"


def test_images_leaves_the_foreign_cubin_wheel_out_of_the_image(setup) -> None:  # noqa: F811
    factory, release, docker = setup
    wh = factory.wheelhouse_dir
    write_lock(wh, ["transformers-4.57.6-py3-none-any.whl", "flashinfer_cubin-0.6.9-py3-none-any.whl"])
    make_wheel(wh / "flashinfer_cubin-0.6.9-py3-none-any.whl", PYPI_LIKE)
    result = run_images(factory, docker, "--release", str(release), "--no-build")
    assert result.exit_code == 0, result.output
    assert "tiny: flashinfer-cubin 0.6.9 (flashinfer_cubin-0.6.9-py3-none-any.whl) is left out of the image" \
        in result.output
    requirements = "".join(p.read_text() for p in (out_dir(factory) / "tiny").rglob("requirements.txt"))
    assert "transformers==4.57.6" in requirements and "flashinfer" not in requirements
    assert not (docker.parent / "docker-ran").exists()


def test_images_keeps_a_cubin_wheel_built_for_the_spark(setup) -> None:  # noqa: F811
    factory, release, docker = setup
    wh = factory.wheelhouse_dir
    write_lock(wh, ["transformers-4.57.6-py3-none-any.whl", "flashinfer_cubin-0.6.9-py3-none-any.whl"])
    make_wheel(wh / "flashinfer_cubin-0.6.9-py3-none-any.whl", [*PYPI_LIKE, f"{CUBINS}fmha/Fmha_sm121a.cubin"])
    result = run_images(factory, docker, "--release", str(release), "--no-build")
    assert result.exit_code == 0, result.output
    assert "left out" not in result.output
    requirements = "".join(p.read_text() for p in (out_dir(factory) / "tiny").rglob("requirements.txt"))
    assert "flashinfer-cubin==0.6.9" in requirements


# -- the real PyPI wheel: only its zip directory is fetched (HTTP ranges, ~2.6 MB of 295 MB) ---------

class RangeReader(io.RawIOBase):
    """A remote file read through HTTP range requests: zipfile reads the directory at its end only."""

    def __init__(self, url: str, size: int):
        self.url, self.size, self.pos, self.fetched = url, size, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self.size - self.pos)
        if n <= 0:
            return 0
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{self.pos + n - 1}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            data = r.read()
        b[:len(data)] = data
        self.pos += len(data)
        self.fetched += len(data)
        return len(data)


@pytest.mark.slow
def test_pypi_flashinfer_cubin_0_6_9_has_no_cubin_for_the_spark() -> None:
    try:
        with urllib.request.urlopen("https://pypi.org/pypi/flashinfer-cubin/json", timeout=30) as r:
            [file] = json.load(r)["releases"]["0.6.9"]
    except urllib.error.HTTPError:
        raise  # PyPI answered: a changed answer is a failure, not a skip
    except OSError as e:
        pytest.skip(f"PyPI is not reachable: {e}")
    reader = RangeReader(file["url"], file["size"])
    with zipfile.ZipFile(io.BufferedReader(reader, 1 << 16)) as zf:
        found = wheel_cubin_archs(zf)
    assert reader.fetched < file["size"] // 20
    # measured: 10,560 cubins, sm_100f/sm_103a/sm_100a and DeepGEMM's unnamed ones; nothing for 12.x
    assert found.total > 10_000 and set(found.archs) == {"sm_100f", "sm_103a", "sm_100a"} and found.unnamed > 0
    why = foreign_only(found, SPARK)
    assert why is not None and "none for the release's 12.1" in why
    assert foreign_only(found, [(10, 0)]) is None

"""Auditing wheels' device code: per-object bytes per arch, verdicts against an arch list, the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wheelfactory.cli.app import main
from wheelfactory.core.errors import InputError
from wheelfactory.cuda import audit
from wheelfactory.cuda.audit import JIT_ONLY, NATIVE, NONE, WheelAudit, audit_path, audit_wheel, judge

from .conftest import fatbin_fixture, needs_nvcc

# The device-code fixtures are built with nvcc once per session (conftest.fatbin_fixture).
pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent / "data" / "fatbin"


def make_wheel(tmp_path: Path, members: dict[str, str | bytes], *, name: str = "demo-1.0-py3-none-linux_x86_64.whl",
               provenance: dict | str | None = None) -> Path:
    """A wheel whose members are fixture files (by fixture name) or literal bytes, deflated like pip's."""
    path = tmp_path / name
    dist = "-".join(name.split("-")[:2])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, src in members.items():
            zf.writestr(arcname, src if isinstance(src, bytes) else fatbin_fixture(src).read_bytes())
        zf.writestr(f"{dist}.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
        if provenance is not None:
            text = provenance if isinstance(provenance, str) else json.dumps(provenance)
            zf.writestr(f"{dist}.dist-info/wheelfactory.json", text)
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def audit_of(tmp_path: Path, *fixtures: str) -> WheelAudit:
    return audit_wheel(make_wheel(tmp_path, {f"demo/{f}": f for f in fixtures}))


def verdict(tmp_path: Path, fixture: str, *targets: str) -> audit.ObjectVerdict:
    (v,) = judge(audit_of(tmp_path, fixture), targets).objects
    return v


# -- the audit ------------------------------------------------------------------------------------


def test_audit_lists_bytes_per_arch_per_object(tmp_path):
    a = audit_of(tmp_path, "arch_specific.so", "sass_ptx.so", "host_only.so")
    assert [o.path for o in a.objects] == ["demo/arch_specific.so", "demo/sass_ptx.so"]
    assert a.plain_objects == 1  # host_only.so: an ELF shared object without device code
    by_path = {o.path: o for o in a.objects}
    assert by_path["demo/sass_ptx.so"].sizes == {"sm_80": 3112, "compute_80": 442}
    assert list(by_path["demo/arch_specific.so"].sizes) == ["sm_120a", "sm_121", "sm_121a", "compute_121a"]
    assert a.totals["sm_80"] == 3112 and a.totals["sm_121a"] == 5320
    assert by_path["demo/arch_specific.so"].stored < by_path["demo/arch_specific.so"].total  # compressed


def test_modules_record_the_code_set_of_each_container(tmp_path):
    (o,) = audit_of(tmp_path, "two_modules.so").objects
    assert o.modules == {"sm_80": 1, "sm_121a": 1}
    (o,) = audit_of(tmp_path, "nvcc_shared.so").objects
    assert o.modules == {"sm_80": 1, "sm_80 compute_80": 1}


def test_json_round_trip_keeps_what_judging_needs(tmp_path):
    a = audit_of(tmp_path, "arch_specific.so", "two_modules.so", "uncompressed.so")
    data = json.loads(json.dumps(a.to_json()))
    assert data["format"] == 1 and data["objects"]["demo/uncompressed.so"]["code"] == {"sm_90a": 3576,
                                                                                        "compute_80": 448}
    back = WheelAudit.from_json(a.wheel, data)
    assert back.objects == a.objects
    assert judge(back, ["12.1a"]) == judge(a, ["12.1a"])


def test_unknown_json_format_is_refused():
    with pytest.raises(InputError, match="format 99"):
        WheelAudit.from_json("x.whl", {"format": 99, "objects": {}})


# -- verdicts -------------------------------------------------------------------------------------


def test_native_with_foreign_arch_specific_code(tmp_path):
    v = verdict(tmp_path, "arch_specific.so", "12.1a")
    assert v.status == NATIVE and v.devices == {"12.1": "native"}
    assert v.foreign == ("sm_120a",) and not v.ok  # sm_120a in a wheel for GB10: compiled for the wrong GPU


def test_family_code_runs_on_later_members_of_the_family(tmp_path):
    assert verdict(tmp_path, "family.so", "12.1a").ok  # sm_120f loads on 12.1
    assert verdict(tmp_path, "family.so", "10.3").devices == {"10.3": "native"}  # sm_100f on 10.3
    v = verdict(tmp_path, "family.so", "9.0a")
    assert v.status == NONE and v.problems() == ["no loadable code for 9.0"]


def test_ptx_only_is_jit_only(tmp_path):
    v = verdict(tmp_path, "sass_ptx.so", "12.1a")
    assert v.status == JIT_ONLY and v.devices == {"12.1": "jit"} and v.problems() == ["only PTX (JIT) for 12.1"]
    assert verdict(tmp_path, "sass_ptx.so", "8.6").ok  # sm_80 SASS runs on 8.6


def test_several_devices_take_the_worst(tmp_path):
    v = verdict(tmp_path, "uncompressed.so", "9.0a", "12.1a")  # sm_90a + compute_80
    assert v.devices == {"9.0": "native", "12.1": "jit"} and v.status == JIT_ONLY and v.foreign == ()
    v = verdict(tmp_path, "uncompressed.so", "8.0")
    assert v.devices == {"8.0": "jit"} and v.foreign == ("sm_90a",)


def test_arch_specific_code_loads_only_on_its_own_device(tmp_path):
    v = verdict(tmp_path, "zstd_size.so", "12.0")
    assert v.status == NONE and v.foreign == ("sm_121a", "compute_121a")
    assert verdict(tmp_path, "zstd_size.so", "12.1a").ok


def test_a_container_without_native_code_is_a_gap_not_a_failure(tmp_path):
    v = verdict(tmp_path, "two_modules.so", "12.1a")  # kernel.cu for sm_121a, other.cu for sm_80 only
    assert v.status == NATIVE and v.gaps == {"12.1": 1} and v.ok
    # with both devices targeted, each container serves one of them: normal, and still told
    v = verdict(tmp_path, "two_modules.so", "8.0", "12.1a")
    assert v.ok and v.gaps == {"8.0": 1, "12.1": 1}


def test_lto_ir_is_not_loadable_code(tmp_path):
    w = make_wheel(tmp_path, {"demo/liblto.so": "lto.o"})
    (v,) = judge(audit_wheel(w), ["9.0"]).objects
    assert v.status == NONE and v.foreign == ()


def test_wheel_verdict(tmp_path):
    a = audit_of(tmp_path, "zstd_size.so", "family.so", "arch_specific.so")
    v = judge(a, ["12.1a"])
    assert not v.ok and [o.path for o in v.failures] == ["demo/arch_specific.so"]
    assert judge(audit_of(tmp_path, "zstd_size.so", "family.so"), ["12.1a"]).ok


def test_bad_target_list_is_bad_input(tmp_path):
    a = audit_of(tmp_path, "family.so")
    with pytest.raises(InputError, match="target arch list 'sm_121'"):
        judge(a, ["sm_121"])
    with pytest.raises(InputError, match="target arch list ' ': empty CUDA arch list"):
        judge(a, [" "])


# -- rendering ------------------------------------------------------------------------------------


def test_render_shows_bytes_per_arch_and_the_verdict(tmp_path):
    a = audit_of(tmp_path, "arch_specific.so", "sass_ptx.so")
    text = audit.render(a, judge(a, ["12.1a"]))
    assert "demo/arch_specific.so" in text and "sm_121a" in text and "5.2K" in text
    assert "on 12.1" in text and "2 of 2 object(s) contradict the policy" in text
    assert "demo/sass_ptx.so: only PTX (JIT) for 12.1" in text
    assert "demo/arch_specific.so: foreign arch-specific code sm_120a" in text
    plain = audit.render(a)
    assert "verdict" not in plain and "sm_80" in plain


def test_render_comparison_puts_wheels_side_by_side(tmp_path):
    one = audit_wheel(make_wheel(tmp_path, {"a/x.so": "sass_ptx.so"}, name="pkg-1.0-py3-none-any.whl"))
    two = audit_wheel(make_wheel(tmp_path, {"a/x.so": "zstd_size.so"}, name="pkg-1.0+spark-py3-none-any.whl"))
    text = audit.render_comparison([one, two])
    header, *rows = text.splitlines()[1:]
    assert header.split() == ["arch", "pkg-1.0", "pkg-1.0+spark"]
    assert any(r.split() == ["sm_80", "3.0K", "-"] for r in rows)
    assert any(r.split() == ["sm_121a", "-", "5.2K"] for r in rows)


def test_provenance_is_read_when_present(tmp_path):
    w = make_wheel(tmp_path, {"demo/x.so": "family.so"}, provenance={"component": "demo", "key": "abc"})
    a = audit_wheel(w)
    assert a.provenance == {"component": "demo", "key": "abc"}
    assert 'provenance: {"component": "demo", "key": "abc"}' in audit.render(a)
    assert audit_of(tmp_path, "family.so").provenance is None
    assert "provenance" not in audit.render(audit_of(tmp_path, "family.so"))


def test_human_bytes():
    assert [audit.human_bytes(n) for n in (12, 1536, 5 << 20, 3 << 30)] == ["12B", "1.5K", "5.0M", "3.0G"]


# -- bad input ------------------------------------------------------------------------------------


def test_missing_file_and_non_wheels_are_bad_input(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        audit_wheel(tmp_path / "nope.whl")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a wheel"):
        audit_wheel(tmp_path / "notes.txt")
    (tmp_path / "fake-1.0-py3-none-any.whl").write_text("hello")
    with pytest.raises(InputError, match="not a valid zip archive"):
        audit_wheel(tmp_path / "fake-1.0-py3-none-any.whl")


def test_corrupt_fatbin_in_a_wheel_names_the_member(tmp_path):
    data = bytearray(fatbin_fixture("sass_ptx.so").read_bytes())
    data[data.index(b"\x50\xed\x55\xba")] ^= 0xFF
    w = make_wheel(tmp_path, {"demo/lib/bad.so.1": bytes(data)})
    with pytest.raises(InputError, match=r"demo-1.0-py3-none-linux_x86_64.whl:demo/lib/bad.so.1: section"):
        audit_wheel(w)


# -- shared objects and directories (a JIT cache, a build tree) ----------------------------------


def jit_cache(tmp_path: Path) -> Path:
    """A tree like FlashInfer's jit_cache/<module>/<module>.so, with a soname link and other files."""
    root = tmp_path / "jit_cache"
    for module, fixture in (("norm", "zstd_size.so"), ("decode", "arch_specific.so"), ("host", "host_only.so")):
        (root / module).mkdir(parents=True)
        (root / module / f"{module}.so").write_bytes(fatbin_fixture(fixture).read_bytes())
    (root / "decode" / "build.ninja").write_text("rule nvcc\n")
    (root / "norm" / "libnorm.so.1").symlink_to("norm.so")  # counted once: links are skipped
    return root


def test_a_directory_of_shared_objects_is_audited_like_a_wheel(tmp_path):
    a = audit_path(jit_cache(tmp_path))
    assert a.wheel == "jit_cache"
    assert [o.path for o in a.objects] == ["decode/decode.so", "norm/norm.so"]
    assert a.plain_objects == 1 and a.provenance is None
    v = {o.path: o for o in judge(a, ["12.1a"]).objects}
    assert v["norm/norm.so"].status == NATIVE and v["decode/decode.so"].foreign == ("sm_120a",)


def test_one_shared_object_and_what_is_neither(tmp_path):
    so = tmp_path / "norm.cpython-312-x86_64-linux-gnu.so"
    so.write_bytes(fatbin_fixture("zstd_size.so").read_bytes())
    [obj] = audit_path(so).objects
    assert obj.path == so.name and "sm_121a" in obj.sizes
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no shared objects \(\*\.so, \*\.so\.N\) under this directory"):
        audit_path(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"notes.txt: not a wheel, a shared object \(\*\.so\) or a directory"):
        audit_path(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such file"):
        audit_path(tmp_path / "gone.so")


# -- the command ----------------------------------------------------------------------------------


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point, in this process (no subprocess): exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["wheelfactory", *args])
    with pytest.raises(SystemExit) as done:
        main()
        sys.exit(0)
    out = capsys.readouterr()
    return done.value.code or 0, out.out, out.err


def test_inspect_lists_without_judging(tmp_path, monkeypatch, capsys):
    w = make_wheel(tmp_path, {"demo/a.so": "arch_specific.so"})
    code, out, err = run_main(monkeypatch, capsys, "inspect", str(w))
    assert code == 0 and "demo/a.so" in out and "sm_120a" in out and "verdict" not in out


def test_inspect_exit_1_when_the_policy_is_contradicted(tmp_path, monkeypatch, capsys):
    w = make_wheel(tmp_path, {"demo/a.so": "arch_specific.so"})
    code, out, err = run_main(monkeypatch, capsys, "inspect", str(w), "--arch", "12.1a")
    assert code == 1 and "foreign arch-specific code sm_120a" in out
    assert "contradicts --arch 12.1a" in err and "Traceback" not in err
    good = make_wheel(tmp_path, {"demo/a.so": "zstd_size.so"}, name="good-1.0-py3-none-any.whl")
    assert run_main(monkeypatch, capsys, "inspect", str(good), "--arch", "12.1a")[0] == 0


def test_inspect_several_wheels_and_json(tmp_path, monkeypatch, capsys):
    one = make_wheel(tmp_path, {"a/x.so": "sass_ptx.so"}, name="pkg-1.0-py3-none-any.whl")
    two = make_wheel(tmp_path, {"a/x.so": "zstd_size.so"}, name="pkg-1.0+spark-py3-none-any.whl",
                     provenance={"component": "pkg"})
    code, out, _ = run_main(monkeypatch, capsys, "inspect", str(one), str(two))
    assert code == 0 and "device code side by side" in out and "provenance" in out
    code, out, _ = run_main(monkeypatch, capsys, "inspect", str(one), str(two), "--arch", "9.0a;12.1a", "--json")
    data = json.loads(out)
    assert code == 1 and [w["wheel"] for w in data["wheels"]] == [one.name, two.name]
    assert data["wheels"][1]["provenance"] == {"component": "pkg"}
    assert data["wheels"][0]["verdict"]["objects"]["a/x.so"]["devices"] == {"9.0": "jit", "12.1": "jit"}
    assert data["wheels"][1]["device_code"]["objects"]["a/x.so"]["code"]["sm_121a"] == 5320


def test_inspect_a_jit_cache_directory_against_the_spark(tmp_path, monkeypatch, capsys):
    root = jit_cache(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "inspect", str(root), "--arch", "12.1a")
    assert code == 1 and "decode/decode.so" in out and "norm/norm.so" in out
    assert "jit_cache contradicts --arch 12.1a (1 shared object(s))" in err
    (root / "decode" / "decode.so").unlink()
    assert run_main(monkeypatch, capsys, "inspect", str(root), "--arch", "12.1a")[0] == 0


def test_inspect_bad_input_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "x.txt").write_text("x")
    code, _, err = run_main(monkeypatch, capsys, "inspect", str(tmp_path / "x.txt"))
    assert code == 2 and "x.txt: not a wheel, a shared object (*.so) or a directory of them" in err
    assert "Traceback" not in err
    w = make_wheel(tmp_path, {"demo/a.so": "arch_specific.so"})
    code, _, err = run_main(monkeypatch, capsys, "inspect", str(w), "--arch", "sm_121a")
    assert code == 2 and "target arch list 'sm_121a': bad CUDA arch 'sm_121a'" in err


# -- slow: the real nvcc, and an official wheel from PyPI -----------------------------------------


@pytest.mark.slow
@needs_nvcc
def test_audit_a_library_built_by_nvcc_now(tmp_path):
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    so = tmp_path / "libspark.so"
    subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-cudart", "shared", "-o", str(so),
                    str(DATA / "kernel.cu"), "-gencode=arch=compute_121a,code=sm_121a",
                    "-gencode=arch=compute_120f,code=sm_120f", "-gencode=arch=compute_121a,code=compute_121a"],
                   check=True, capture_output=True)
    a = audit_wheel(make_wheel(tmp_path, {"spark/libspark.so": so.read_bytes()}))
    (o,) = a.objects
    assert {"sm_121a", "sm_120f", "compute_121a"} <= set(o.sizes)
    assert judge(a, ["12.1a"]).ok
    assert judge(a, ["12.0"]).objects[0].foreign == ("sm_121a", "compute_121a")
    if cuobjdump := shutil.which("cuobjdump"):  # where installed: the same entries as NVIDIA's tool
        listing = subprocess.run([cuobjdump, "-lelf", "-lptx", str(so)], capture_output=True, text=True).stdout
        assert listing.count("ELF file") + listing.count("PTX file") == sum(
            len(k.split()) * n for k, n in o.modules.items())


# A modest official wheel with real fatbins of several kinds: SASS for sm_80/86, arch-specific
# sm_90a and sm_100a objects, family-less sm_100 and compute_120 PTX, built by NVIDIA's CUDA 12.x.
OFFICIAL = "torchao-0.15.0-cp310-abi3-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"


def _download_official(cache_dir: Path) -> Path:
    requests = pytest.importorskip("requests")
    path = cache_dir / OFFICIAL
    if path.exists():
        return path
    try:
        index = requests.get("https://pypi.org/simple/torchao/", timeout=60,
                             headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        index.raise_for_status()
        (info,) = [f for f in index.json()["files"] if f["filename"] == OFFICIAL]
        body = requests.get(info["url"], timeout=300)
        body.raise_for_status()
    except requests.RequestException as e:
        pytest.skip(f"PyPI not reachable: {e}")
    assert hashlib.sha256(body.content).hexdigest() == info["hashes"]["sha256"]
    tmp = path.with_suffix(".part")
    tmp.write_bytes(body.content)
    tmp.replace(path)
    return path


@pytest.mark.slow
def test_audit_an_official_wheel_from_pypi(request, tmp_path_factory):
    cache = getattr(request.config, "cache", None)  # pytest's cache dir keeps the download between runs
    wheel = _download_official(Path(cache.mkdir("wheelfactory-audit")) if cache else tmp_path_factory.mktemp("dl"))
    a = audit_wheel(wheel)
    codes = {o.path: set(o.sizes) for o in a.objects}
    assert codes == {
        "torchao/_C.abi3.so": {"sm_80", "sm_86"},
        "torchao/_C_cutlass_90a.abi3.so": {"sm_90a"},
        "torchao/_C_cutlass_100a.abi3.so": {"sm_100a"},
        "torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so": {"sm_100", "compute_120"},
    }
    spark = {v.path: v for v in judge(a, ["12.1a"]).objects}
    assert spark["torchao/_C_cutlass_90a.abi3.so"].foreign == ("sm_90a",)
    assert spark["torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so"].status == JIT_ONLY
    assert spark["torchao/_C.abi3.so"].status == NONE
    hopper = {v.path: v for v in judge(a, ["9.0a"]).objects}
    assert hopper["torchao/_C_cutlass_90a.abi3.so"].ok

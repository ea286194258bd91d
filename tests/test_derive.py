"""`wheelfactory release derive` and `release check`: the CMake reader, the requirement edits, the
derivation with its sources, writing without clobbering, and the shipped 0.33 release.

Fast tests read the stand-in trees in tests/fixtures/vllm-standin-*/ (not vLLM; made-up pins;
vllm-standin-rust is an overlay adding a Rust frontend) through a stand-in upstream. Slow tests
read the real vLLM sdists and torch METADATA from PyPI.
"""

from __future__ import annotations

import email.parser
import hashlib
import io
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from wheelfactory.cli import app as cli_module
from wheelfactory.cli import releases as releases_cli
from wheelfactory.core.errors import BuildError, FactoryError, InputError
from wheelfactory.derive.cmake_deps import parse_commands, read_cmake_deps
from wheelfactory.derive.derivation import (
    Derivation,
    Request,
    check_release,
    derive,
    entry_span,
    plan_writes,
    render_entry,
    vllm_entry,
)
from wheelfactory.derive.upstream import LiveUpstream, Unreachable
from wheelfactory.derive.vllm_tree import requirement_edits, use_existing_torch
from wheelfactory.pipeline.factory import Factory
from wheelfactory.sources.pypi_index import Index, read_wheel_metadata

from .conftest import FIXTURES, RECIPES, SPARK
from .test_recipe_hooks import load, make_ctx  # noqa: F401  (make_ctx is a fixture)

OLD = FIXTURES / "vllm-standin-old"
NEW = FIXTURES / "vllm-standin-new"
RUST = FIXTURES / "vllm-standin-rust"  # an overlay on NEW: setup.py, tools/build_rust.py, rust/

TORCH_METADATA = """Metadata-Version: 2.1
Name: torch
Version: 9.4.0
Requires-Dist: filelock
Requires-Dist: cuda-toolkit[cublas,cudart]==13.1.0; platform_system == "Linux"
Requires-Dist: nvidia-nccl-cu13==2.77.1; platform_system == "Linux"
Requires-Dist: triton~=3.30.0; platform_system == "Linux"
Requires-Dist: optree>=0.13.0; extra == "optree"
"""


class StandinUpstream:
    """Upstream served from the fixtures and from memory; no network."""

    def __init__(self, tree: Path, triton_tree: Path | None = None):
        self.tree = tree
        self.triton = triton_tree
        self.index = {"transformers": ["4.99.0", "5.1.0", "5.2.0", "5.3.1", "5.3.2rc1", "5.4.0"],
                      "triton": ["3.29.0", "3.30.0", "3.30.2", "3.31.0"], "ray": ["2.1.0", "2.7.0"]}

    def vllm_tree(self, version, ref, git=None):
        return self.tree, "vllm-standin"

    def describe(self, version, ref):
        return "fixture"

    def triton_tree(self, version):
        if self.triton is None:
            raise Unreachable("stand-in: no git here")
        return self.triton, f"triton@v{version}"

    def versions(self, project):
        return self.index[project]

    def wheel_metadata(self, project, version, python, machine):
        return email.parser.Parser().parsestr(TORCH_METADATA), "torch-9.4.0-cp312-cp312-manylinux_2_28_aarch64.whl"

    def has_wheel(self, project, version, python, machine):
        return f"{project}-{version}-cp312-cp312-manylinux_2_28_aarch64.whl"


# -- the CMake reader ---------------------------------------------------------------------

def test_cmake_reader_old_layout_follows_variables_overrides_and_includes():
    deps = {d.name: d for d in read_cmake_deps(OLD)}
    assert list(deps) == ["cutlass", "kernels_py", "mla", "vllm-attn"]
    assert (deps["cutlass"].git, deps["cutlass"].ref, deps["cutlass"].env) == \
        ("https://github.com/nvidia/cutlass.git", "v9.8.7", "STANDIN_CUTLASS_SRC_DIR")
    assert deps["cutlass"].where == "CMakeLists.txt:18"
    assert (deps["kernels_py"].ref, deps["kernels_py"].env, deps["kernels_py"].subdir) == \
        ("v1.2.3", "KERNELS_PY_SRC_DIR", "python/kernels_py/kernels_py")
    assert (deps["mla"].ref, deps["mla"].env, deps["mla"].submodules) == \
        ("1111111111111111111111111111111111111111", "MLA_SRC_DIR", None)
    assert deps["vllm-attn"].env == "STANDIN_ATTN_SRC_DIR"


def test_cmake_reader_new_layout_takes_the_cuda_branch_and_explicit_submodules():
    deps = {d.name: d for d in read_cmake_deps(NEW)}
    # rocm_only.cmake is included for HIP only; ghost sits in a function nobody calls, and in a comment
    assert list(deps) == ["kernels_py", "gemm", "kda", "plain", "loose"]
    assert (deps["kernels_py"].git, deps["kernels_py"].ref) == ("https://example.invalid/compiler.git", "v1.2.4")
    assert (deps["gemm"].git, deps["gemm"].ref, deps["gemm"].env) == \
        ("https://example.invalid/GEMM.git", "4444444444444444444444444444444444444444", "GEMM_SRC_DIR")
    assert deps["gemm"].submodules == ("third-party/cutlass", "third-party/jit")
    assert deps["kda"].submodules == ()
    assert deps["plain"].env is None
    assert deps["loose"].unresolved is True


def test_cmake_parse_error_names_file_and_line():
    with pytest.raises(InputError, match=r"broken.cmake:3: cannot read CMake: unterminated command"):
        parse_commands("set(A 1)\n\nset(B\n", "broken.cmake")


# -- vLLM's requirements --------------------------------------------------------------------

def test_requirement_edits_old_layout():
    edits, _, problems = requirement_edits(OLD)
    assert problems == []
    assert edits == {"requirements/cuda.txt": [
        ["^flashinfer-python==.*$", "flashinfer-python=={flashinfer}"],
        ["^-r common.txt$", "-r common.txt\ntorch=={torch}\ntorchvision=={torchvision}\ntorchaudio=={torchaudio}"],
    ]}
    assert use_existing_torch(OLD) == "use_existing_torch.py"


def test_requirement_edits_put_back_what_use_existing_torch_removes():
    edits, _, problems = requirement_edits(NEW)
    assert problems == []
    assert edits["requirements/cuda.txt"][1][1] == ("-r common.txt\ntorch=={torch}\ntorchvision=={torchvision}\n"
                                                     "torchaudio=={torchaudio}\ntorchcodec >= 0.7")
    assert use_existing_torch(NEW) == "tools/use_existing_torch.py"


def test_requirement_edits_report_a_missing_anchor(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "cuda.txt").write_text("torch==1.0\nflashinfer-python==0.1\n")
    _, _, problems = requirement_edits(tmp_path)
    assert problems == ["requirements/cuda.txt: no '-r' line survives use_existing_torch.py to put the torch pins "
                        "after"]


def test_vllm_prepare_runs_use_existing_torch_from_tools(make_ctx):  # noqa: F811
    ctx = make_ctx("vllm")
    (ctx.src / "tools").mkdir()
    (ctx.src / "tools" / "use_existing_torch.py").write_text("")
    (ctx.src / "requirements").mkdir()
    (ctx.src / "requirements" / "cuda.txt").write_text("-r common.txt\nflashinfer-python==0.1\n")
    load("vllm").prepare(ctx)
    argv, _ = ctx.runner.calls[0]
    assert argv[-1] == "tools/use_existing_torch.py"


# -- the derivation --------------------------------------------------------------------------

def test_vllm_entry_applies_the_submodule_policy():
    d = Derivation()
    entry = vllm_entry(OLD, "vllm-standin", d)
    # cutlass: FetchContent would fetch submodules, data/derive.toml says the build needs none
    assert entry["deps"]["cutlass"] == {"git": "https://github.com/nvidia/cutlass.git", "ref": "v9.8.7",
                                        "env": "STANDIN_CUTLASS_SRC_DIR"}
    assert entry["deps"]["mla"]["submodules"] is True
    assert entry["deps"]["attn"]["env"] == "STANDIN_ATTN_SRC_DIR"  # 'vllm-attn' -> 'attn'
    assert entry["deps"]["kernels_py"]["subdir"] == "python/kernels_py/kernels_py"


def test_vllm_entry_lists_what_it_cannot_use():
    d = Derivation()
    entry = vllm_entry(NEW, "vllm-standin", d)
    assert set(entry["deps"]) == {"kernels_py", "gemm", "kda"}
    assert "submodules" not in entry["deps"]["kda"]  # GIT_SUBMODULES ""
    missing = dict(d.missing)
    assert "no `if(DEFINED ENV{..._SRC_DIR})` override" in missing["vllm dep plain"]
    assert "${LOOSE_TAG_FROM_ELSEWHERE}" in missing["vllm dep loose"]


def test_derive_prints_every_value_with_its_source():
    d = derive(StandinUpstream(NEW), RECIPES, Request("9.9.9", 5, cuda="13.1.0"))
    values = {k: (v, s) for k, v, s in d.values}
    assert values["torch"] == ("9.4.0", "vllm-standin/requirements/cuda.txt:5")
    assert values["torchvision"] == ("0.94.0", "vllm-standin/requirements/cuda.txt:7")
    assert values["flashinfer"] == ("0.9.4.post1", "vllm-standin/requirements/cuda.txt:9")
    assert values["transformers"][0] == "5.3.1"  # newest 5.x inside >=5.2.0,<5.4.0, prereleases skipped
    assert values["nccl"][0] == "2.77.1-1"
    assert values["triton"][0] == "3.30.2"  # newest inside torch's ~=3.30.0
    assert values["torch's CUDA"][0] == "13.1.0"
    assert "torch==9.4.0" in d.report()
    assert "<- vllm-standin/requirements/cuda.txt:5" in d.report()


def test_derive_refuses_a_transformers_major_vllm_excludes():
    with pytest.raises(InputError, match=r"--transformers 4: .*requirements/common.txt:2.*allowed majors: 5"):
        derive(StandinUpstream(NEW), RECIPES, Request("9.9.9", 4, cuda="13.1.0"))


def test_derive_adopts_triton_when_its_llvm_pin_cannot_be_read():
    d = derive(StandinUpstream(NEW), RECIPES, Request("9.9.9", 5, cuda="13.1.0"))
    release = tomllib.loads(d.releases["9.9.9-t5"])
    assert release["components"]["triton"] == {"version": "3.30.2", "adopt": "triton==3.30.2"}
    assert "triton.toml" not in d.data
    assert ("triton 3.30.2 llvm_hash", "stand-in: no git here") in d.missing
    assert release["target"]["cuda"] == "13.1.0"
    assert release["pins"]["nvidia-cuda-nvcc"] == "13.1.80"  # from cuda_wheels.toml ["13.1"].jit


def test_derive_reads_triton_toolchain_from_its_source(tmp_path):
    (tmp_path / "cmake").mkdir()
    (tmp_path / "cmake" / "llvm-hash.txt").write_text("ab" * 20 + "\n")
    (tmp_path / "setup.py").write_text('def get_json_package_info():\n'
                                       '    url = "https://github.com/nlohmann/json/releases/download/v3.99.1/'
                                       'include.zip"\n')
    d = derive(StandinUpstream(NEW, tmp_path), RECIPES, Request("9.9.9", 5, cuda="13.1.0"))
    assert d.data["triton.toml"] == {"3.30.2": {"llvm_hash": "ab" * 20, "json": "3.99.1"}}
    assert "adopt" not in tomllib.loads(d.releases["9.9.9-t5"])["components"]["triton"]


def test_derive_says_when_the_release_cuda_has_no_wheel_pins():
    d = derive(StandinUpstream(NEW), RECIPES, Request("9.9.9", 5, cuda="12.77.0"))
    assert 'cuda_wheels.toml ["12.77"]' in dict(d.missing)


# -- the Rust frontend table ------------------------------------------------------------------

def _rust_tree(tmp_path: Path, base: Path = NEW) -> Path:
    """A stand-in tree with the Rust frontend overlay: a 0.33-shaped source tree."""
    tree = tmp_path / "vllm-rust"
    shutil.copytree(base, tree)
    shutil.copytree(RUST, tree, dirs_exist_ok=True)
    return tree


STANDIN_RUST = {"lock": "rust/Cargo.lock", "manifest": "rust/Cargo.toml", "toolchain": "1.77",
                "disable": ["rust_extensions=rust_extensions,", "rust_extensions=[],"]}


def test_derive_writes_the_rust_table_with_every_source(tmp_path):
    d = derive(StandinUpstream(_rust_tree(tmp_path)), RECIPES, Request("9.9.9", 5, cuda="13.1.0"))
    assert d.data["vllm.toml"]["9.9.9"]["rust"] == STANDIN_RUST
    assert not [k for k, _ in d.missing if k.startswith("vllm rust")]
    lock_sha = hashlib.sha256((RUST / "rust" / "Cargo.lock").read_bytes()).hexdigest()
    sources = {k: (v, s) for k, v, s in d.values if k.startswith("vllm rust")}
    assert sources == {
        # the workspace above the RustExtension's member manifest (the commented-out one is no code)
        "vllm rust manifest": ("rust/Cargo.toml", "vllm-standin/rust/Cargo.toml:1 ([workspace] above RustExtension "
                                                  "path rust/src/cli/Cargo.toml at tools/build_rust.py:9)"),
        "vllm rust lock": ("rust/Cargo.lock", "vllm-standin/rust/Cargo.lock (the lock of rust/Cargo.toml: 1 crates "
                                              f"and 1 git dependency (Cargo.lock sha256 {lock_sha[:12]}))"),
        "vllm rust toolchain": ("1.77", "vllm-standin/rust-toolchain.toml:3"),
        # the argument of setup(), not the comment above it
        "vllm rust disable": ("'rust_extensions=rust_extensions,' -> 'rust_extensions=[],'",
                              "vllm-standin/setup.py:25 (setup()'s argument, emptied for options.rust_frontend = "
                              "false)"),
    }
    assert "vllm rust toolchain: 1.77" in d.report() and "<- vllm-standin/rust-toolchain.toml:3" in d.report()


def test_the_rust_table_has_the_fields_the_recipe_reads():
    """The shipped 0.33.0 table (read by recipes/vllm.py) and a derived one have the same fields, in
    the same order, so a derived entry renders as the shipped one is written."""
    shipped = tomllib.loads((RECIPES / "data" / "vllm.toml").read_text())["0.33.0"]["rust"]
    assert list(shipped) == list(STANDIN_RUST)
    entry = {"deps": {"a": {"git": "g", "ref": "r", "env": "A_SRC_DIR"}}, "rust": STANDIN_RUST}
    text = render_entry("vllm.toml", "9.9.9", entry)
    assert '["9.9.9".rust]\nlock = "rust/Cargo.lock"\n' in text
    assert tomllib.loads(text) == {"9.9.9": entry}


def test_the_disable_edit_matches_setup_py_once_and_empties_the_argument(tmp_path):
    tree = _rust_tree(tmp_path)
    d = Derivation()
    old, new = vllm_entry(tree, "vllm-standin", d)["rust"]["disable"]
    text = (tree / "setup.py").read_text()
    assert text.count(old) == 1
    assert "    rust_extensions=[],\n    install_requires" in text.replace(old, new)


def test_a_tree_without_rust_gets_no_table():
    d = derive(StandinUpstream(NEW), RECIPES, Request("9.9.9", 5, cuda="13.1.0"))
    assert "rust" not in d.data["vllm.toml"]["9.9.9"]
    assert not [k for k, _, _ in d.values if k.startswith("vllm rust")]
    assert not [k for k, _ in d.missing if k.startswith("vllm rust")]


def _break(tree: Path, rel: str, old: str | None, new: str = "") -> None:
    path = tree / rel
    if old is None:
        path.unlink()
    else:
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize("rel, old, new, field, why", [
    ("rust/Cargo.lock", None, "", "lock", "no rust/Cargo.lock beside rust/Cargo.toml"),
    ("rust/Cargo.lock", 'checksum = "' + "3" * 64 + '"\n', "", "lock", r"without a checksum \(itoa 1.0.99\)"),
    ("tools/build_rust.py", "        RustExtension(\n            target=\"standin.standin-rs\"",
     "        dict(\n            target=\"standin.standin-rs\"", "manifest",
     r"no RustExtension\(...\) in setup.py or tools/\*.py says which Cargo.toml"),
    ("tools/build_rust.py", 'path="rust/src/cli/Cargo.toml"', 'path=os.path.join("rust", "Cargo.toml")', "manifest",
     r"tools/build_rust.py:7: RustExtension's path is not a plain string \(os.path.join"),
    ("tools/build_rust.py", 'path="rust/src/cli/Cargo.toml"', 'path="rust/src/gone/Cargo.toml"', "manifest",
     "RustExtension path rust/src/gone/Cargo.toml is not in the tree"),
    ("setup.py", "    rust_extensions=rust_extensions,\n", "", "disable",
     "setup.py passes no rust_extensions= to setup()"),
    ("setup.py", "# The argument", "# rust_extensions=rust_extensions, The argument", "disable",
     r"setup.py:25: 'rust_extensions=rust_extensions,' occurs 2 times in setup.py"),
    ("rust-toolchain.toml", "[toolchain]", "[toolchain", "toolchain", "rust-toolchain.toml: not valid TOML"),
])
def test_what_cannot_be_derived_is_listed_and_no_partial_table_written(tmp_path, rel, old, new, field, why):
    tree = _rust_tree(tmp_path)
    _break(tree, rel, old, new)
    d = derive(StandinUpstream(tree), RECIPES, Request("9.9.9", 5, cuda="13.1.0"))
    assert "rust" not in d.data["vllm.toml"]["9.9.9"]
    missing = dict(d.missing)
    assert re.search(why, missing[f"vllm rust {field}"]), missing[f"vllm rust {field}"]
    assert f"NOT DERIVED vllm rust {field}: " in d.report()


def test_a_tree_without_a_toolchain_pin_gets_a_table_without_toolchain(tmp_path):
    tree = _rust_tree(tmp_path)
    (tree / "rust-toolchain.toml").unlink()
    d = derive(StandinUpstream(tree), RECIPES, Request("9.9.9", 5, cuda="13.1.0"))
    assert d.data["vllm.toml"]["9.9.9"]["rust"] == {k: v for k, v in STANDIN_RUST.items() if k != "toolchain"}
    assert any("no rust-toolchain.toml" in n for n in d.notes)


def test_a_package_outside_any_workspace_is_its_own_manifest(tmp_path):
    tree = _rust_tree(tmp_path)
    _break(tree, "rust/Cargo.toml", None)
    (tree / "rust" / "src" / "cli" / "Cargo.lock").write_bytes((tree / "rust" / "Cargo.lock").read_bytes())
    d = Derivation()
    rust = vllm_entry(tree, "vllm-standin", d)["rust"]
    assert (rust["manifest"], rust["lock"]) == ("rust/src/cli/Cargo.toml", "rust/src/cli/Cargo.lock")
    assert "in no workspace" in {k: s for k, _, s in d.values}["vllm rust manifest"]


# -- writing -------------------------------------------------------------------------------

def _recipes_copy(tmp_path: Path) -> Path:
    root = tmp_path / "recipes"
    shutil.copytree(RECIPES, root)
    return root


def test_writes_append_new_entries_and_refuse_to_replace_hand_edits(tmp_path):
    root = _recipes_copy(tmp_path)
    d = Derivation(data={"vllm.toml": {"9.9.9": {"deps": {"x": {"git": "g", "ref": "r", "env": "X_SRC_DIR"}}}}})
    before = (root / "data" / "vllm.toml").read_text()
    (w,) = plan_writes(d, root, root / "releases", force=False)
    assert w.status == "new"
    assert w.new.startswith(before.rstrip("\n"))  # every existing entry kept as it was
    w.path.write_text(w.new)
    assert tomllib.loads(w.new)["9.9.9"]["deps"]["x"]["ref"] == "r"
    # the same derivation again: nothing to do
    assert plan_writes(d, root, root / "releases", force=False)[0].status == "same"
    # a hand edit of that entry is not replaced without force
    w.path.write_text(w.new.replace('ref = "r"', 'ref = "hand-edited"'))
    (blocked,) = plan_writes(d, root, root / "releases", force=False)
    assert blocked.status == "differs"
    assert '-ref = "hand-edited"' in blocked.diff() and '+ref = "r"' in blocked.diff()
    (forced,) = plan_writes(d, root, root / "releases", force=True)
    assert forced.status == "differs-forced"
    assert tomllib.loads(forced.new)["0.14.1"] == tomllib.loads(before)["0.14.1"]


def test_entry_span_covers_one_version_only():
    text = '["1.0".deps.a]\nx = 1\n["1.0".requirements]\ny = 2\n\n["2.0".deps.a]\nx = 3\n'
    assert entry_span(text, "1.0") == (0, 4)
    assert entry_span(text, "2.0") == (5, 7)
    assert entry_span(text, "3.0") is None


def test_rendered_vllm_entry_is_what_the_recipe_reads():
    entry = {"deps": {"a": {"git": "g", "ref": "r", "env": "A_SRC_DIR", "submodules": True}},
             "requirements": {"requirements/cuda.txt": [["^x==.*$", "x=={x}"], ["^-r c.txt$", "-r c.txt\ny=={y}"]]}}
    assert tomllib.loads(render_entry("vllm.toml", "1.0", entry)) == {"1.0": entry}


# -- CLI -----------------------------------------------------------------------------------

@pytest.fixture
def cli_on_copy(tmp_path, monkeypatch):
    root = _recipes_copy(tmp_path)
    monkeypatch.setattr(releases_cli, "_upstream", lambda factory, vllm_git, triton_git: StandinUpstream(NEW))

    def run(*args):
        return CliRunner().invoke(cli_module.cli, ["--recipes-dir", str(root), "--cache-dir", str(tmp_path / "c"),
                                                   *args], standalone_mode=False, catch_exceptions=True)
    return root, run


def test_cli_derive_writes_release_and_data(cli_on_copy):
    root, run = cli_on_copy
    result = run("release", "derive", "--vllm", "9.9.9", "--cuda", "13.1.0")
    assert result.exception is None, result.output
    assert "torch==9.4.0" in result.output and "<- vllm-standin/requirements/cuda.txt:5" in result.output
    assert "NOT DERIVED triton 3.30.2 llvm_hash: stand-in: no git here" in result.output
    shipped = tomllib.loads((root / "data" / "vllm.toml").read_text())
    assert shipped["9.9.9"]["deps"]["gemm"]["submodules"] is True
    released = (root / "releases" / "9.9.9-t5.toml").read_text()
    assert 'version = "9.4.0"' in released
    # the derived release plans: every dependency reaches vLLM's environment through its variable
    f = Factory(root, root.parent / "wh", root.parent / "c", host_probe=lambda: SPARK)
    env = f.plan(f.release("9.9.9-t5")).step("vllm").env
    assert {k for k in env if k.endswith("_SRC_DIR")} == {"KERNELS_PY_SRC_DIR", "GEMM_SRC_DIR", "KDA_SRC_DIR"}


def test_cli_derive_dry_run_writes_nothing(cli_on_copy):
    root, run = cli_on_copy
    before = (root / "data" / "vllm.toml").read_text()
    result = run("release", "derive", "--vllm", "9.9.9", "--cuda", "13.1.0", "--dry-run")
    assert result.exception is None, result.output
    assert "+[\"9.9.9\".deps.gemm]" in result.output
    assert (root / "data" / "vllm.toml").read_text() == before
    assert not (root / "releases" / "9.9.9-t5.toml").exists()


def test_cli_check_exit_codes(cli_on_copy, monkeypatch):
    root, run = cli_on_copy
    monkeypatch.setattr(releases_cli, "_upstream", lambda factory, vllm_git, triton_git: StandinUpstream(OLD))
    assert run("release", "derive", "--vllm", "9.9.9", "--transformers", "4", "--cuda", "13.1.0").exception is None
    clean = run("release", "check", "9.9.9-t4")
    assert clean.exception is None, clean.output
    assert "ok      vllm.toml [\"9.9.9\"] matches" in clean.output
    data = root / "data" / "vllm.toml"
    data.write_text(data.read_text().replace('ref = "v1.2.3"', 'ref = "v1.2.2"'))
    drift = run("release", "check", "9.9.9-t4")
    assert isinstance(drift.exception, FactoryError) and drift.exception.exit_code == 1
    assert "DRIFT   vllm.toml [\"9.9.9\"]" in drift.output and "'ref': 'v1.2.2'" in drift.output


@pytest.fixture
def rust_cli_on_copy(cli_on_copy, tmp_path, monkeypatch):
    root, run = cli_on_copy
    tree = _rust_tree(tmp_path, OLD)  # every CMake dependency of the old stand-in is usable: check is clean
    monkeypatch.setattr(releases_cli, "_upstream", lambda factory, vllm_git, triton_git: StandinUpstream(tree))
    return root, run, tree


def test_cli_derive_and_check_the_rust_table(rust_cli_on_copy):
    root, run, tree = rust_cli_on_copy
    result = run("release", "derive", "--vllm", "9.9.9", "--transformers", "4", "--cuda", "13.1.0")
    assert result.exception is None, result.output
    assert "vllm rust lock: rust/Cargo.lock" in result.output and "<- vllm-standin/rust/Cargo.lock" in result.output
    data = root / "data" / "vllm.toml"
    assert tomllib.loads(data.read_text())["9.9.9"]["rust"] == STANDIN_RUST
    assert '["9.9.9".rust]\nlock = "rust/Cargo.lock"' in data.read_text()
    clean = run("release", "check", "9.9.9-t4")
    assert "ok      vllm.toml [\"9.9.9\"] matches vllm-standin" in clean.output
    assert "the Rust frontend table" in clean.output
    # drift in one field: exit 1, the field named
    data.write_text(data.read_text().replace('toolchain = "1.77"', 'toolchain = "1.76"'))
    drift = run("release", "check", "9.9.9-t4")
    assert isinstance(drift.exception, FactoryError) and drift.exception.exit_code == 1
    assert "DRIFT   vllm.toml [\"9.9.9\"] vs vllm-standin: rust.toolchain: shipped '1.76' | upstream '1.77'" \
        in drift.output
    # a shipped entry without the table, where upstream has one
    data.write_text(re.sub(r'\["9\.9\.9"\.rust\]\n(?:.+\n)+', "", data.read_text()))
    assert "rust" not in tomllib.loads(data.read_text())["9.9.9"]
    missing = run("release", "check", "9.9.9-t4")
    assert isinstance(missing.exception, FactoryError)
    assert "rust: no table shipped | upstream {'lock': 'rust/Cargo.lock'" in missing.output
    # and derive does not replace it without --force
    blocked = run("release", "derive", "--vllm", "9.9.9", "--transformers", "4", "--cuda", "13.1.0",
                  "--data-only")
    assert isinstance(blocked.exception, FactoryError) and "pass --force" in str(blocked.exception)
    assert '+["9.9.9".rust]' in blocked.output


def test_check_reports_a_rust_table_upstream_no_longer_supports(rust_cli_on_copy):
    root, run, tree = rust_cli_on_copy
    assert run("release", "derive", "--vllm", "9.9.9", "--transformers", "4", "--cuda", "13.1.0").exception is None
    _break(tree, "setup.py", "    rust_extensions=rust_extensions,\n", "")
    drift = run("release", "check", "9.9.9-t4")
    assert isinstance(drift.exception, FactoryError) and drift.exception.exit_code == 1
    assert "rust: shipped {'lock'" in drift.output
    assert "vllm rust disable: setup.py passes no rust_extensions= to setup()" in drift.output


def test_check_counts_an_unusable_dependency_as_drift(cli_on_copy):
    root, run = cli_on_copy
    assert run("release", "derive", "--vllm", "9.9.9", "--cuda", "13.1.0").exception is None
    result = run("release", "check", "9.9.9-t5")
    assert isinstance(result.exception, FactoryError)
    assert "vllm dep plain: cmake/external_projects/nooverride.cmake:2: no `if(DEFINED ENV" in result.output


# -- reading METADATA out of a remote wheel --------------------------------------------------

def _wheel_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg/__init__.py", "x = 1\n" * 5000)
        z.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\nVersion: 1.0\nRequires-Dist: dep==2\n")
        z.writestr("pkg-1.0.dist-info/RECORD", "")
    return buf.getvalue()


class _RangeServer:
    def __init__(self, data: bytes, honour_range: bool = True):
        self.data, self.honour, self.calls = data, honour_range, 0

    def __call__(self, url, headers=None):
        self.calls += 1
        r = requests.Response()
        rng = (headers or {}).get("Range")
        if not rng or not self.honour:
            r.status_code, r._content = 200, self.data
            return r
        spec = rng.removeprefix("bytes=")
        total = len(self.data)
        start, end = (total - int(spec[1:]), total - 1) if spec.startswith("-") else map(int, spec.split("-"))
        start = max(start, 0)
        r.status_code, r._content = 206, self.data[start:end + 1]
        r.headers["Content-Range"] = f"bytes {start}-{min(end, total - 1)}/{total}"
        return r


def test_wheel_metadata_by_range_requests():
    server = _RangeServer(_wheel_bytes())
    text = read_wheel_metadata("https://example.invalid/pkg-1.0-py3-none-any.whl", server)
    assert "Requires-Dist: dep==2" in text


def test_wheel_metadata_refuses_a_server_without_ranges():
    with pytest.raises(BuildError, match="ignores range requests"):
        read_wheel_metadata("https://example.invalid/w.whl", _RangeServer(_wheel_bytes(), honour_range=False))


def test_index_prefers_the_pep658_file():
    served = []

    def get(url, headers=None):
        served.append(url)
        r = requests.Response()
        r.status_code, r._content = 200, b"Name: x\nVersion: 1\nRequires-Dist: y==3\n"
        return r
    meta = Index("https://example.invalid/simple", get).metadata({"url": "https://f/x-1-py3-none-any.whl",
                                                                  "core-metadata": True})
    assert served == ["https://f/x-1-py3-none-any.whl.metadata"]
    assert meta.get_all("Requires-Dist") == ["y==3"]


# -- the shipped data -----------------------------------------------------------------------

def test_shipped_0_33_release_plans_with_every_cmake_dependency(factory):
    plan = factory.plan(factory.release("0.33.0-t5"))
    versions = {s.component: s.version for s in plan.steps}
    assert versions == {"nccl": "2.30.7-1", "torch": "2.14.0", "torchvision": "0.29.0", "torchaudio": "2.11.0",
                        "triton": "3.8.0", "flashinfer": "0.7.2.post1", "vllm": "0.33.0"}
    assert plan.pins["transformers"].startswith("5.")
    env = plan.step("vllm").env
    # the ten override variables of vLLM 0.33.0's CMakeLists.txt and cmake/external_projects/*.cmake
    assert {k for k in env if k.endswith("_SRC_DIR")} == {
        "VLLM_CUTLASS_SRC_DIR", "TRITON_KERNELS_SRC_DIR", "DEEPGEMM_SRC_DIR", "DEEPSELECT_SRC_DIR",
        "FMHA_SM100_SRC_DIR", "FLASH_MLA_SRC_DIR", "FLASH_KDA_SRC_DIR", "QUTLASS_SRC_DIR", "TML_FA4_SRC_DIR",
        "VLLM_FLASH_ATTN_SRC_DIR"}


def test_readme_example_release_plans(factory, tmp_path):
    text = (RECIPES.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
    releases = [b for b in blocks if b.startswith("extends = ")]  # the complete example release(s)
    assert len(releases) == 1, f"{len(releases)} example releases in README.md"
    example = releases[0]
    (tmp_path / "example.toml").write_text(example)
    plan = factory.plan(factory.release(str(tmp_path / "example.toml")))
    assert plan.step("vllm").version == "0.16.0"


# -- slow: real PyPI -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    return LiveUpstream(tmp_path_factory.mktemp("derive-cache"), "https://pypi.org/simple",
                        "https://github.invalid/vllm.git", "https://github.invalid/triton.git")


@pytest.mark.slow
@pytest.mark.parametrize("release", ["0.13.0-t4", "0.14.1-t4", "0.33.0-t5"])
def test_real_sdists_reproduce_the_shipped_vllm_data(live, factory, release):
    result = check_release(live, RECIPES, factory.release(release))
    assert result.drift == []
    assert any(line.startswith("vllm.toml [") for line in result.checked)


@pytest.mark.slow
def test_real_0_33_derivation_matches_the_shipped_release(live, factory):
    d = derive(live, RECIPES, Request("0.33.0", 5, cuda="13.1.0"))
    derived = tomllib.loads(d.releases["0.33.0-t5"])
    shipped = tomllib.loads((RECIPES / "releases" / "0.33.0-t5.toml").read_text())
    assert derived["components"] == shipped["components"]
    assert derived["target"] == shipped["target"]
    values = {k: v for k, v, _ in d.values}
    assert values["nvidia-nccl-cu13"] == "2.30.7"  # torch 2.14.0's METADATA, read by range requests
    # the Rust frontend table, exactly as shipped, each value from the sdist's files
    shipped_data = tomllib.loads((RECIPES / "data" / "vllm.toml").read_text())["0.33.0"]
    assert d.data["vllm.toml"]["0.33.0"]["rust"] == shipped_data["rust"]
    assert list(d.data["vllm.toml"]["0.33.0"]["rust"]) == list(shipped_data["rust"])
    sources = {k: s for k, _, s in d.values if k.startswith("vllm rust")}
    assert sources["vllm rust manifest"].startswith("vllm-0.33.0/rust/Cargo.toml:1 ([workspace] above RustExtension "
                                                    "path rust/src/cmd/Cargo.toml at tools/build_rust.py:")
    assert "606 crates and 3 git dependencies" in sources["vllm rust lock"]
    assert sources["vllm rust toolchain"] == "vllm-0.33.0/rust-toolchain.toml:2"
    assert sources["vllm rust disable"].startswith("vllm-0.33.0/setup.py:")
    with pytest.raises(InputError, match="transformers >= 5.16.1, < 5.21.0"):
        derive(live, RECIPES, Request("0.33.0", 4, cuda="13.1.0"))


@pytest.mark.slow
def test_real_use_existing_torch_leaves_lines_the_edits_match(live, tmp_path):
    tree, _ = live.vllm_tree("0.33.0", None)
    work = tmp_path / "v"
    shutil.copytree(tree / "requirements", work / "requirements")
    shutil.copytree(tree / "tools", work / "tools")
    shutil.copy(tree / "pyproject.toml", work / "pyproject.toml")
    subprocess.run(["python3", "tools/use_existing_torch.py"], cwd=work, check=True, capture_output=True)
    edits, _, _ = requirement_edits(tree)
    text = (work / "requirements" / "cuda.txt").read_text()
    for pattern, _ in edits["requirements/cuda.txt"]:
        assert len(re.findall(pattern, text, re.M)) == 1, pattern


@pytest.mark.slow
def test_git_sources_are_read_when_reachable(tmp_path):
    """The path for vLLM tags/commits and Triton's llvm-hash.txt, against local repositories."""
    def repo(path: Path, files: dict[str, str], tag: str) -> str:
        for rel, text in files.items():
            (path / rel).parent.mkdir(parents=True, exist_ok=True)
            (path / rel).write_text(text)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(path)]
        subprocess.run(["git", "init", "-q", str(path)], check=True)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", "x"], check=True)
        subprocess.run(git + ["tag", tag], check=True)
        return path.as_uri()

    vllm_files = {str(p.relative_to(NEW)): p.read_text() for p in NEW.rglob("*") if p.is_file()}
    vllm_url = repo(tmp_path / "vllm", vllm_files, "v9.9.9")
    triton_url = repo(tmp_path / "triton", {"cmake/llvm-hash.txt": "cd" * 20 + "\n",
                                            "python/setup.py": 'URL = "https://github.com/nlohmann/json/releases/'
                                                               'download/v3.98.0/include.zip"\n'}, "v3.30.2")
    up = LiveUpstream(tmp_path / "cache", "https://pypi.invalid/simple", vllm_url, triton_url)
    tree, label = up.vllm_tree("9.9.9", "v9.9.9")
    assert label == "vllm@v9.9.9"
    assert {d.name for d in read_cmake_deps(tree)} == {"kernels_py", "gemm", "kda", "plain", "loose"}
    ttree, _ = up.triton_tree("3.30.2")
    d = Derivation()
    from wheelfactory.derive.derivation import triton_toolchain
    assert triton_toolchain(ttree, "t", d, "3.30.2") == {"llvm_hash": "cd" * 20, "json": "3.98.0"}
    with pytest.raises(Unreachable, match="cannot read"):
        up.triton_tree("0.0.1")

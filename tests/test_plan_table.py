"""CLI conventions of the tools users know: global options on either side of the subcommand, every
environment variable in --help, header rows and columns that fit in `plan` and `list`, factory
wheels apart from dependency wheels, sizes in their unit; and what `plan` says per step: the
patches it applies and a device code never checked for the release's arch."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from wheelfactory.cli.app import cli
from wheelfactory.cli.show import table
from wheelfactory.cuda import checked
from wheelfactory.store.wheelhouse import Wheelhouse

from .conftest import CI_RELEASES, invoke

VLLM_CONFIGURE = Path(__file__).parent / "data" / "vllm-configure"


def test_table_columns_fit_their_widest_value_and_have_a_header():
    lines = table(("#", "component", "version"), [("1.", "flashinfer", "0.7.2.post1"), ("10.", "vllm", "0.33.0")],
                  right=(0,))
    assert lines == [("  #  component   version"), (" 1.  flashinfer  0.7.2.post1"), ("10.  vllm        0.33.0")]


def test_plan_has_a_header_and_a_version_column_as_wide_as_0_7_2_post1(tmp_path):
    r = invoke("--cache-dir", str(tmp_path), "plan", "-r", "0.33.0-t5-fast")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if "component" in line)
    assert header.split() == ["#", "action", "mode", "component", "version", "key", "source"]
    fi = next(line for line in lines if " flashinfer " in line)
    nccl = next(line for line in lines if " nccl " in line)
    # the key column starts at the same place on every row: nothing overflows into it
    assert fi.index(fi.split()[5]) == nccl.index(nccl.split()[5]) == header.index("key")
    assert "0.7.2.post1  " in fi


def test_plan_lists_the_patches_of_each_step(tmp_path):
    r = invoke("--cache-dir", str(tmp_path), "plan", "-r", "0.33.0-t5")
    assert "      patches (source): 0001-marlin-ops-sm120-native.patch, 0002-hadacore-c2x-sm120-native.patch" in \
        r.stdout.splitlines()
    assert any(line.startswith("      patches (flash_attn): flash-attn-0001") for line in r.stdout.splitlines())
    assert "NOT CHECKED" not in r.stdout  # vLLM 0.33.0's configure was judged for 12.1a


def test_plan_flags_a_vllm_version_whose_device_code_was_never_checked(tmp_path):
    r = invoke("--cache-dir", str(tmp_path), "plan", "-r", "0.15.0-t4")
    flagged = [line for line in r.stdout.splitlines() if "NOT CHECKED" in line]
    assert len(flagged) == 1 and flagged[0].startswith("      device code NOT CHECKED for 12.1a: vllm 0.15.0's")
    assert "wheelfactory build --release 0.15.0-t4 vllm --until configure" in flagged[0]
    steps = json.loads(invoke("--cache-dir", str(tmp_path), "plan", "-r", "0.15.0-t4", "--json").stdout)["steps"]
    assert {s["component"]: s["unchecked_archs"] for s in steps}["vllm"] == ["12.1a"]
    assert all(s["unchecked_archs"] == [] for s in steps if s["component"] != "vllm")


def test_no_flag_without_device_code_or_for_a_checked_arch():
    assert checked.unchecked_archs("vllm", "0.15.0", {"kernels": False}, ["12.1a"]) == ()
    assert checked.unchecked_archs("vllm", "0.14.1", {}, ["9.0a", "12.1a"]) == ()
    assert checked.unchecked_archs("vllm", "0.33.0", {}, ["9.0a", "12.1a"]) == ("9.0a",)
    assert checked.unchecked_archs("torch", "2.14.0", {}, ["12.1a"]) == ()  # not tracked


def test_every_checked_version_has_its_configure_run_in_the_test_data():
    for component in checked.checked_components():
        table_ = checked._table()[component]
        for arch, versions in table_.items():
            if not isinstance(versions, list):
                continue
            for version in versions:
                runs = [d.name for d in VLLM_CONFIGURE.iterdir() if d.name.startswith(f"{version}-")
                        and arch in d.name.removeprefix(f"{version}-").split("_")]
                assert runs, f"{component} {version} is recorded as checked for {arch} with no run in {VLLM_CONFIGURE}"


def _fake_wheelhouse(root: Path) -> None:
    wh = Wheelhouse(root)
    root.mkdir(parents=True)
    entries = {
        "flashinfer_python-0.7.2.post1-py3-none-any.whl": {"component": "flashinfer", "version": "0.7.2.post1",
                                                            "origin": "built", "size": 5_300_000},
        "nvidia_nccl_cu13-2.29.2-py3-none-linux_x86_64.whl": {"component": "nccl", "version": "2.29.2",
                                                              "origin": "built", "size": 41_000},
        "idna-3.10-py3-none-any.whl": {"component": None, "version": "3.10", "origin": "pypi", "size": 70_400,
                                      "dist": "idna"},
    }
    (root / "manifest.json").write_text(json.dumps({"wheels": {
        f: e | {"sha256": "0" * 64, "dist": e.get("dist") or f.split("-")[0]} for f, e in entries.items()}}))
    assert len(wh.manifest()) == 3


def test_list_shows_factory_wheels_apart_from_dependencies_with_sizes_in_their_unit(tmp_path):
    _fake_wheelhouse(tmp_path / "wh")
    r = invoke("list", "--wheelhouse", str(tmp_path / "wh"))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    start = out.index(next(line for line in out if line.startswith("wheelhouse ")))
    assert out[start].endswith(": 2 factory wheel(s) (5.3 MB), 1 dependency wheel(s) from the index (70.4 kB)")
    assert out[start + 1].split() == ["component", "version", "origin", "size", "file"]
    assert out[start + 2].split()[:5] == ["flashinfer", "0.7.2.post1", "built", "5.3", "MB"]
    assert out[start + 3].split()[:5] == ["nccl", "2.29.2", "built", "41.0", "kB"]  # not "0.0 MB"
    assert out[start + 4].startswith("dependency wheels")
    assert out[start + 5].split() == ["name", "version", "size", "file"]
    assert out[start + 6].split() == ["idna", "3.10", "70.4", "kB", "idna-3.10-py3-none-any.whl"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_on_either_side_of_the_subcommand(tmp_path, where):
    _fake_wheelhouse(tmp_path / "wh")
    opts = ["--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c")]
    r = invoke(*opts, "list") if where == "before" else invoke("list", *opts)
    assert r.returncode == 0, r.stderr
    assert f"wheelhouse {tmp_path / 'wh'}: 2 factory wheel(s)" in r.stdout


def test_global_options_after_a_nested_subcommand_and_after_plan(tmp_path):
    r = invoke("cache", "list", "--cache-dir", str(tmp_path / "c2"))
    assert r.returncode == 0 and r.stdout.startswith(f"cache {tmp_path / 'c2'}:"), r.stderr
    # the reported case: `plan --cache-dir X` was "no such option ... did you mean --source-dir?"
    r = invoke("plan", "-r", str(CI_RELEASES / "ci.toml"), "--cache-dir", str(tmp_path / "c3"))
    assert r.returncode == 0, r.stderr


def test_an_insecure_index_after_the_subcommand_is_judged_with_the_flag_wherever_it_is(tmp_path):
    r = invoke("plan", "--index-url", "http://mirror.local/simple", "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 2 and "plain http" in r.stderr
    for args in (["plan", "--index-url", "http://mirror.local/simple", "--allow-insecure-index"],
                 ["--allow-insecure-index", "plan", "--index-url", "http://mirror.local/simple"],
                 ["--index-url", "http://mirror.local/simple", "plan", "--allow-insecure-index"]):
        r = invoke("--cache-dir", str(tmp_path), *args, "-r", str(CI_RELEASES / "ci.toml"))
        assert r.returncode == 0, (args, r.stderr)


def test_a_misspelt_global_option_after_the_subcommand_gets_the_right_hint():
    r = invoke("plan", "--cache-dri", "/tmp/x")
    assert r.returncode == 2 and "Did you mean" in r.stderr and "'--cache-dir'" in r.stderr


def _commands(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_every_option_with_an_environment_variable_shows_it_in_help():
    seen = 0
    for path, command in _commands(cli):
        help_text = " ".join(invoke(*path, "--help").stdout.split())
        for p in command.params:
            if isinstance(p, click.Option) and p.envvar and not p.hidden:
                seen += 1
                assert f"env var: {p.envvar}" in help_text, f"{' '.join(path)} {p.opts[0]}"
    assert seen >= 12  # the group's 5, --release on each command that takes it, --jobs, --offline, images' ...


def test_only_declared_environment_variables_set_options(tmp_path):
    # no WHEELFACTORY_<COMMAND>_<OPTION> for every option: WHEELFACTORY_PLAN_JSON does not turn on --json
    r = invoke("--cache-dir", str(tmp_path), "plan", "-r", str(CI_RELEASES / "ci.toml"),
               env={"WHEELFACTORY_PLAN_JSON": "1"})
    assert r.returncode == 0 and not r.stdout.startswith("{")


def test_the_default_release_is_the_newest_whose_vllm_device_code_was_checked(factory):
    from packaging.version import Version

    from wheelfactory.pipeline.factory import DEFAULT_RELEASE
    from wheelfactory.planning.release import list_releases

    def vllm_checked(name: str) -> Version | None:
        release = factory.release(name)
        spec = release.components.get("vllm")
        if spec is None or spec.adopt:
            return None
        unchecked = checked.unchecked_archs("vllm", spec.version, spec.options, release.target.cuda_arch_list)
        return None if unchecked else Version(spec.version)

    candidates = {name: v for name in list_releases(factory.recipes_dirs) if (v := vllm_checked(name))}
    newest = max(candidates.values())
    assert candidates[DEFAULT_RELEASE] == newest == Version("0.33.0")
    # of the releases on that vLLM, the one that builds every component from source (no adopted torch)
    assert not any(s.adopt for s in factory.release(DEFAULT_RELEASE).components.values()
                   if s.name in ("torch", "torchvision", "torchaudio"))
    # and its plan runs no unchecked vLLM configure
    assert all(not s.unchecked_archs for s in factory.plan(factory.release(DEFAULT_RELEASE)).steps)

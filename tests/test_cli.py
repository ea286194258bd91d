"""The command line: help everywhere, exit codes, messages instead of tracebacks."""

from __future__ import annotations

import json

import pytest

from .conftest import CI_RELEASES, invoke, run_cli

COMMANDS = ["list", "plan", "fetch", "build", "adopt", "lock", "venv", "inspect", "doctor", "serve"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help(cmd):
    r = invoke(cmd, "--help")
    assert r.returncode == 0 and "Usage:" in r.stdout


def test_plan_json_default_release(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path), "plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["release"] == "0.33.0-t5"
    assert [s["component"] for s in plan["steps"]][0] == "nccl"


def test_bad_release_exits_2_with_a_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[target]\npython = "3.12"\ncuda = "13.1.0"\ncuda_arch_list = ["12.1a"]\nplatform = "linux_x86_64"\n'
                   '[components.nccl]\nversion = "2.29.2-1"\n[components.vlm]\nversion = "1"\n')
    r = invoke("plan", "-r", str(bad))
    assert r.returncode == 2
    assert "unknown component 'vlm' (did you mean 'vllm'?)" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_release_name_exits_2():
    r = invoke("plan", "-r", "0.99.0-t4")
    assert r.returncode == 2 and "unknown release" in r.stderr and "Traceback" not in r.stderr


def test_env_variables_set_options(tmp_path):
    r = invoke("plan", env={"WHEELFACTORY_RELEASE": "pytorch-2.10.0-cu131", "WHEELFACTORY_WHEELHOUSE": str(tmp_path)})
    assert r.returncode == 0 and "release pytorch-2.10.0-cu131" in r.stdout


def test_list_shows_recipes_releases_and_wheelhouse(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path), "list")
    assert r.returncode == 0
    for word in ("nccl", "vllm", "0.15.0-t5", "pytorch-2.10.0-cu131",
                 "0 factory wheel(s) (0 B), 0 dependency wheel(s)"):
        assert word in r.stdout


def test_lock_before_build_names_the_command(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "lock",
                "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 2 and "run `wheelfactory build --release ci` first" in r.stderr


def test_venv_before_lock_names_the_command(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "venv", str(tmp_path / "v"), "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 2 and "wheelfactory lock --release ci" in r.stderr


def test_missing_python_for_target_is_bad_input(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "build", "nccl",
                "--no-host-check", env={"PATH": "/usr/bin:/bin"})
    # python3.12 is not on this PATH: a clear message, nothing built (with the host check, its summary
    # says it: tests/test_check_order.py)
    assert r.returncode == 2 and "python3.12" in r.stderr


def test_adopt_command_publishes_the_wheel_as_the_component(tmp_path):
    from wheelfactory.store.wheelpack import pack_tree

    tree = tmp_path / "tree"
    (tree / "torch").mkdir(parents=True)
    (tree / "torch" / "__init__.py").write_text("__version__ = '2.13.0'\n")
    # ci.toml's torch is 2.13.0; a local label names a build of that version (adopt.py's rule)
    wheel = pack_tree(tree, "torch", "2.13.0+test", "py3-none-any", tmp_path / "dist",
                      summary="stand-in torch for a test")
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "adopt", "torch", str(wheel),
                "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "wh" / "manifest.json").read_text())["wheels"]
    entry = manifest[wheel.name]
    assert entry["component"] == "torch" and entry["origin"] == "adopted" and entry["from"] == str(wheel)
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "plan", "-r", str(CI_RELEASES / "ci.toml"), "torch",
                "--adopt", f"torch={wheel}")
    assert " cached " in r.stdout


def test_adopting_a_wheel_of_another_name_is_refused(tmp_path):
    from wheelfactory.store.wheelpack import pack_tree

    tree = tmp_path / "tree"
    (tree / "nottorch").mkdir(parents=True)
    wheel = pack_tree(tree, "nottorch", "1.0", "py3-none-any", tmp_path / "dist", summary="x")
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "adopt", "torch", str(wheel),
                "-r", str(CI_RELEASES / "ci.toml"))
    assert r.returncode == 2, r.stderr
    assert f"--adopt torch={wheel}: {wheel.name} is a wheel of 'nottorch'; torch adopts one of: torch" in r.stderr
    assert not (tmp_path / "wh" / "manifest.json").exists()


def test_rebuild_of_an_unknown_component_is_bad_input(tmp_path):
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "c"), "build", "--offline",
                "-r", str(CI_RELEASES / "ci.toml"), "nccl", "--rebuild", "ncc")
    assert r.returncode == 2 and "--rebuild 'ncc': unknown component (did you mean 'nccl'?)" in r.stderr


@pytest.mark.slow  # probes this host's Docker and nvcc
def test_doctor_exits_2_on_a_python_that_does_not_exist(tmp_path):
    r = run_cli("--cache-dir", str(tmp_path / "c"), "doctor", "-r", str(CI_RELEASES / "ci.toml"),
                "--python", str(tmp_path / "no-python"))
    assert r.returncode == 2, r.stderr
    assert f"FAIL  python  --python {tmp_path / 'no-python'}: no such file" in r.stdout
    assert "Traceback" not in r.stderr

"""Secrets given to a build (--secret-env, or an --env whose name looks secret) reach the build's
processes and nothing else: not the plan, the key, the manifest, the log or build_env.sh; and the
parent environment's own tokens are not handed to build scripts."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from tests.test_executor import OK_BODY, setup
from wheelfactory.cli.app import cli
from wheelfactory.core.errors import BuildError, InputError
from wheelfactory.core.secretenv import is_secret_name, parse_secret_env
from wheelfactory.run.runner import Runner, clean_environ

CANARY = "canary-5f3a9c1e77"


@pytest.mark.parametrize("name", ["HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "GITHUB_TOKEN",
                                  "PYPI_PASSWORD", "WANDB_API_KEY", "npm_token"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "CUDA_HOME", "MAX_JOBS", "NCCL_KEYS_FILE", "GIT_CONFIG_KEY_0",
                                  "TORCH_CUDA_ARCH_LIST"])
def test_ordinary_names(name):
    assert not is_secret_name(name)


def test_secret_env_reads_the_value_from_the_environment_only():
    assert parse_secret_env(["a:MY_TOKEN"], {"MY_TOKEN": CANARY}) == {"a": {"MY_TOKEN": CANARY}}
    with pytest.raises(InputError, match=r"^--secret-env a:MY_TOKEN: \$MY_TOKEN is not set in this environment; "
                                         "export it first$"):
        parse_secret_env(["a:MY_TOKEN"], {})
    with pytest.raises(InputError, match=r"^--secret-env 'a:MY_TOKEN=x': expected COMPONENT:NAME"):
        parse_secret_env(["a:MY_TOKEN=x"], {"MY_TOKEN": CANARY})


def test_parent_secrets_are_not_in_the_build_environment(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setenv("CUDA_HOME", "/opt/cuda")
    env = clean_environ()
    assert "HF_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["CUDA_HOME"] == "/opt/cuda"


@pytest.mark.slow  # runs sh through the Runner
def test_runner_hides_secret_values_in_log_and_error(tmp_path):
    r = Runner("c", tmp_path / "log", base_env={"PATH": "/usr/bin:/bin"})
    r.hide([CANARY])
    with pytest.raises(BuildError, match="command failed with exit code 4") as e:
        r.run(["sh", "-c", f"echo got $T; echo {CANARY}; exit 4"], env={"T": CANARY})
    log = (tmp_path / "log").read_text()
    assert CANARY not in log and CANARY not in str(e.value)
    assert "[c] env T=***\n" in log and "[c] got ***\n" in log


def _plan_json(f, *args):
    return json.dumps(f.plan(f.release("r"), ("a",), *args).to_json())


def test_plan_shows_a_secret_as_stars_and_its_value_does_not_enter_the_key(tmp_path, monkeypatch):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    one = f.plan(f.release("r"), ("a",), ["a:API_TOKEN=" + CANARY])
    two = f.plan(f.release("r"), ("a",), ["a:API_TOKEN=another-value"])
    none = f.plan(f.release("r"), ("a",))
    assert one.steps[0].env["API_TOKEN"] == "***" and one.steps[0].secrets == {"API_TOKEN": CANARY}
    assert one.steps[0].key == two.steps[0].key != none.steps[0].key  # the name enters the key, not the value
    assert CANARY not in json.dumps(one.to_json()) and CANARY not in repr(one)
    # --secret-env: the same, the value from the environment
    monkeypatch.setenv("MY_SECRET_THING", CANARY)
    f.secret_env = ("a:MY_SECRET_THING",)
    p = f.plan(f.release("r"), ("a",))
    assert p.steps[0].env["MY_SECRET_THING"] == "***" and CANARY not in json.dumps(p.to_json())


def test_cli_plan_and_plan_json_never_print_the_secret(tmp_path, monkeypatch):
    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    monkeypatch.setenv("HF_TOKEN", CANARY)
    base = ["--recipes-dir", str(f.recipes_dir), "--wheelhouse", str(f.wheelhouse_dir), "--cache-dir",
            str(f.cache_dir)]
    for extra in ([], ["--json"]):
        res = CliRunner().invoke(cli, [*base, "plan", "--release", "r", "a", "--secret-env", "a:HF_TOKEN",
                                       "--env", f"a:DB_PASSWORD={CANARY}", "--system-cuda", *extra],
                                 obj=None, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        assert CANARY not in res.output and "HF_TOKEN" in res.output and "***" in res.output


SECRET_BODY = ("import os\n"
               "    ctx.run(['sh', '-c', 'echo build sees $MY_TOKEN; echo parent ${HF_TOKEN:-unset}'])\n"
               "    (ctx.work / 'seen').write_text(ctx.env['MY_TOKEN'])\n"
               "    ctx.runner.note('recipe says ' + ctx.env['MY_TOKEN'])\n"
               f"    {OK_BODY}")


@pytest.mark.slow  # runs a build: venv, pip, sh
def test_a_build_gets_the_secret_and_nothing_stores_it(tmp_path, monkeypatch):
    f, _ = setup(tmp_path, {"a": (SECRET_BODY, ())})
    monkeypatch.setenv("MY_TOKEN", CANARY)
    monkeypatch.setenv("HF_TOKEN", "parent-" + CANARY)
    f.secret_env = ("a:MY_TOKEN",)
    plan = f.plan(f.release("r"), ("a",))
    f.executor(plan, echo=lambda m: None, python=shutil.which("python3"), keep_work=True).build()
    work = next(p for p in (f.cache_dir / "work").glob("a-*") if p.is_dir())  # not the key's lock file
    assert (work / "seen").read_text() == CANARY  # the build had it
    log = next((f.cache_dir / "logs").glob("a-*.log")).read_text()
    assert "[a] build sees ***\n" in log and "[a] parent unset\n" in log and "[a] recipe says ***\n" in log
    assert ('export MY_TOKEN="${MY_TOKEN:?MY_TOKEN is a secret of this build; export it first}"\n'
            in (work / "build_env.sh").read_text())
    stored = [p for root in (f.wheelhouse.root, f.cache_dir) for p in root.rglob("*")
              if p.is_file() and p.name != "seen" and CANARY.encode() in p.read_bytes()]
    assert stored == []  # manifest, index, log, build_env.sh, the wheel's provenance: none holds it
    assert "MY_TOKEN" in f.wheelhouse.manifest_path.read_text()


# -- lock files and the messages of a process waiting on one -------------------------------------

def test_a_lock_records_command_and_targets_never_option_values(tmp_path, monkeypatch):
    """The canary of a secret-looking --env (and of a URL's password) reaches no lock file (the
    wheelhouse's, a per-key work lock, any other file_lock) and no output, a waiting process's
    message and the --wait refusal included."""
    import threading

    from wheelfactory.core.errors import LockedError
    from wheelfactory.core.interrupt import file_lock
    from wheelfactory.pipeline.factory import Factory

    from .conftest import invoke

    f, _ = setup(tmp_path, {"a": (OK_BODY, ())})
    seen: dict[str, str] = {}

    class HoldingExecutor:
        """Takes the locks a build takes and, while holding them, has a second process-like waiter ask."""

        def __init__(self, factory):
            self.factory = factory

        def build(self):
            wh = self.factory.wheelhouse
            with wh.lock(), file_lock(self.factory.cache_dir / "work" / "a-0123456789ab.lock"):
                seen["wheelhouse"] = (wh.root / ".lock").read_text()
                seen["work"] = (self.factory.cache_dir / "work" / "a-0123456789ab.lock").read_text()
                said: list[str] = []

                def wait() -> None:
                    try:
                        with wh.lock(timeout=0.6, on_wait=said.append):
                            pass
                    except LockedError as e:
                        said.append(str(e))
                t = threading.Thread(target=wait)
                t.start()
                t.join()
                seen["waiter"] = "\n".join(said)
            return []

    monkeypatch.setattr(Factory, "executor", lambda self, *a, **k: HoldingExecutor(self))
    r = invoke("--recipes-dir", str(f.recipes_dir), "--wheelhouse", str(f.wheelhouse_dir), "--cache-dir",
               str(f.cache_dir), "build", "--release", "r", "--no-host-check", "--system-cuda",
               "--env", f"a:API_TOKEN={CANARY}", "--env", f"a:URL=https://u:{CANARY}@h/x", "a")
    assert r.returncode == 0, r.stderr
    assert seen["wheelhouse"].startswith(f"pid {os.getpid()} (wheelfactory build a) since ")
    assert seen["work"] == seen["wheelhouse"]
    assert "held by pid" in seen["waiter"] and "(wheelfactory build a)" in seen["waiter"]
    assert "gave up after" in seen["waiter"]
    stored = [p for p in tmp_path.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert stored == [] and CANARY not in r.stdout + r.stderr + "".join(seen.values())


def test_the_shown_command_keeps_positional_words_without_secrets():
    import click

    from wheelfactory.core.secretenv import shown_command

    @click.group()
    def main():
        pass

    @main.command()
    @click.argument("component")
    @click.argument("wheel")
    @click.option("--env")
    def adopt(component, wheel, env):
        return shown_command()

    got = main.main(["adopt", "--env", CANARY, "torch", f"https://user:{CANARY}@h.example/t.whl?token={CANARY}"],
                    standalone_mode=False)
    assert got == "wheelfactory adopt torch https://h.example/t.whl"
    assert shown_command() == "wheelfactory"  # outside a command: the program only

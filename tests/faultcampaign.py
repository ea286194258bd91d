"""The fault-injection campaign: real `wheelfactory` processes on the cheapest real build there is,
killed, run side by side, fed corrupted wheelhouses and bad input, with a canary secret that must
never be stored or printed. tests/test_faults.py runs it at CI size; bench/faults.py at full size.

The stand-in components (fault0, fault1, ...) are recipes of a --recipes-dir: each checks that it
got the canary secret (by its sha256), prints it (the log must show ***), sleeps a little and
packs a wheel with a deterministic payload (PAYLOAD_MB, so that the publish window -- copy, hash,
rename, manifest, index -- lasts long enough to be hit on purpose). A build takes a few seconds:
a venv, the build requirements from the cache's pydeps/, the hook, repair, publish.

Every check is made through the command line, as a user would: `wheelfactory verify` exit 0 and
a next `build` that succeeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wheelfactory.store.wheelmeta import sha256_file

REPO = Path(__file__).resolve().parent.parent
CANARY_VAR = "WF_FAULT_CANARY_TOKEN"
PARENT_SECRET_VAR = "HF_TOKEN"  # exported in the parent, never passed: builds must not see it either

RECIPE = '''"""Fault-injection stand-in: a wheel with a payload, built in seconds."""
import hashlib
import random

from wheelfactory.planning.recipe import Recipe
from wheelfactory.store.wheelpack import pack_tree

RECIPE = Recipe(name={name!r}, summary="fault-injection stand-in", source=None, outputs=({name!r},))


def build(ctx):
    if hashlib.sha256(ctx.env.get({var!r}, "").encode()).hexdigest() != {digest!r}:
        raise RuntimeError("the build did not get its secret")
    ctx.run(["sh", "-c", "echo build sees ${var}; echo parent has ${{{parent}:-nothing}}; sleep {sleep}; "
                         "while [ -e {hold} ]; do sleep 0.05; done"])
    tree = ctx.work / "t"
    (tree / {name!r}).mkdir(parents=True, exist_ok=True)  # a resumed step runs build again in place
    (tree / {name!r} / "__init__.py").write_text("")
    seed = ctx.env.get("ROUND", "0") + {name!r}
    (tree / {name!r} / "payload.bin").write_bytes(random.Random(seed).randbytes({payload}))
    return [pack_tree(tree, ctx.step.component, "1.0", "py3-none-any", ctx.dist, summary="fault stand-in")]
'''


@dataclass
class Run:
    args: list[str]
    rc: int
    out: str
    err: str
    seconds: float


def _default_sigint() -> None:
    """A shell starts background commands with SIGINT ignored, and Python keeps an ignored SIGINT
    ignored: the factory must get Ctrl-C's default disposition back to be interrupted by it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Lab:
    """A recipes directory of stand-ins, a wheelhouse and a cache, and every output collected."""

    root: Path
    components: int = 4
    payload_mb: float = 8.0
    sleep_s: float = 0.5
    canary: str = "canary-7d1e0c4b92f5a3"
    outputs: list[str] = field(default_factory=list)
    runs: int = 0

    def __post_init__(self) -> None:
        self.hold = self.root / "hold"  # while it exists, every stand-in build waits in its hook
        self.recipes = self.root / "recipes"
        self.wheelhouse = self.root / "wheelhouse"
        self.cache = self.root / "cache"
        src = self.root / "src"
        (self.recipes / "releases").mkdir(parents=True, exist_ok=True)
        src.mkdir(exist_ok=True)
        (src / "README").write_text("fault-injection stand-in source\n")
        digest = hashlib.sha256(self.canary.encode()).hexdigest()
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        release = (f"[target]\npython = '{python}'\ncuda = '13.0'\ncuda_arch_list = ['9.0']\n"
                   f"platform = 'linux_{platform.machine()}'\nsystem_cuda = true\n")
        for name in self.names:
            (self.recipes / f"{name}.py").write_text(RECIPE.format(
                name=name, var=CANARY_VAR, digest=digest, parent=PARENT_SECRET_VAR, sleep=self.sleep_s,
                hold=self.hold,
                payload=int(self.payload_mb * 1e6)))
            release += f"[components.{name}]\nversion = '1.0'\nsource = {{ path = '{src}' }}\n"
        (self.recipes / "releases" / "r.toml").write_text(release)

    @property
    def names(self) -> list[str]:
        return [f"fault{i}" for i in range(self.components)]

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ) | {CANARY_VAR: self.canary, PARENT_SECRET_VAR: f"parent-{self.canary}",
                                   "WHEELFACTORY_HEARTBEAT_S": "3600", "PYTHONPATH": str(REPO)}

    def base(self, wheelhouse: Path | None = None, cache: Path | None = None) -> list[str]:
        return ["--recipes-dir", str(self.recipes), "--wheelhouse", str(wheelhouse or self.wheelhouse),
                "--cache-dir", str(cache or self.cache)]

    def build_args(self, component: str, round_: str, *extra: str, offline: bool = True) -> list[str]:
        secrets = [a for n in self.names for a in ("--secret-env", f"{n}:{CANARY_VAR}")]
        # The canary also rides on the command line, as a secret-looking --env value: no lock file
        # (which once recorded sys.argv) and no "waiting for the lock" message may hold it.
        return ["build", "--release", "r", "--no-host-check", *(["--offline"] if offline else []), *secrets,
                "--env", f"{component}:ROUND={round_}", "--env", f"{component}:API_TOKEN={self.canary}", *extra,
                component]

    def cli(self, *args: str, wheelhouse: Path | None = None, cache: Path | None = None,
            timeout: float = 600) -> Run:
        full = [*self.base(wheelhouse, cache), *args]
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "wheelfactory", *full], env=self.env, cwd=REPO,
                           capture_output=True, text=True, timeout=timeout)
        return self._record(Run(full, r.returncode, r.stdout, r.stderr, time.monotonic() - t))

    def start(self, *args: str, wheelhouse: Path | None = None, cache: Path | None = None) -> subprocess.Popen:
        """A wheelfactory process in a session of its own (its pid is its process group's id)."""
        self.runs += 1
        return subprocess.Popen([sys.executable, "-m", "wheelfactory", *self.base(wheelhouse, cache), *args],
                                env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, preexec_fn=_default_sigint)

    def finish(self, proc: subprocess.Popen, timeout: float = 600) -> Run:
        out, err = proc.communicate(timeout=timeout)
        return self._record(Run([str(a) for a in proc.args], proc.returncode, out, err, 0.0), counted=False)

    def _record(self, run: Run, counted: bool = True) -> Run:
        self.runs += counted
        self.outputs += [run.out, run.err]
        return run

    # -- what the wheelhouse holds ------------------------------------------------------------

    def manifest(self, wheelhouse: Path | None = None) -> dict[str, dict]:
        path = (wheelhouse or self.wheelhouse) / "manifest.json"
        return json.loads(path.read_text())["wheels"] if path.exists() else {}

    def held_hashes(self, wheelhouse: Path | None = None, memo: dict | None = None) -> set[str]:
        """sha256 of every wheel in the wheelhouse and its attic (nothing published is ever deleted)."""
        memo = {} if memo is None else memo
        root = wheelhouse or self.wheelhouse
        found = set()
        for p in [*root.glob("*.whl"), *(root / "attic").glob("*.whl")]:
            st = p.stat()
            k = (str(p), st.st_size, st.st_mtime_ns)
            if k not in memo:
                memo[k] = sha256_file(p)
            found.add(memo[k])
        return found

    def leaks(self) -> list[str]:
        """Every file under the lab (wheelhouses, cache, logs, work trees) and every output that
        holds the canary."""
        needle = self.canary.encode()
        hits = [str(p) for p in sorted(self.root.rglob("*")) if p.is_file() and not p.is_symlink()
                and needle in p.read_bytes()]
        hits += [f"output {i}" for i, text in enumerate(self.outputs) if self.canary in text]
        return hits

    def orphans(self) -> list[int]:
        """Processes still running from this lab's directories (a SIGKILLed factory's commands)."""
        mine = []
        needle = str(self.root).encode()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                if needle in (d / "cmdline").read_bytes():
                    mine.append(int(d.name))
            except OSError:
                continue
        return mine

    def reap_orphans(self) -> int:
        """Kill (by pid) what a SIGKILLed factory left running; returns how many there were."""
        pids = self.orphans()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)


# -- kills ----------------------------------------------------------------------------------------

@dataclass
class KillResult:
    n: int
    signal: str
    point: str  # "random" or "publish"
    where: str  # what the factory was doing when the signal came
    rc: int
    verify_after_kill: Run
    rebuild: Run
    verify_after_rebuild: Run
    lost: set[str]
    unlisted: list[str]
    orphans: int
    killed: Run | None = None  # the killed run itself (its stderr says how far it got)

    @property
    def in_publish_by_sigkill(self) -> bool:
        return self.signal == "SIGKILL-pid" and self.where.startswith("publish")

    @property
    def recovered(self) -> bool:
        """The next build succeeded, nothing published before is gone, no wheel outside the manifest."""
        return self.rebuild.rc == 0 and not self.lost and not self.unlisted

    @property
    def ok(self) -> bool:
        # A SIGKILL inside the publish window cannot be deferred: the wheelhouse is repaired by the
        # next publish (Wheelhouse.recover), so verify right after it may fail; verify after the
        # next build may not.
        first = self.verify_after_kill.rc == 0 or self.in_publish_by_sigkill
        return self.recovered and first and self.verify_after_rebuild.rc == 0

    def line(self) -> str:
        return (f"kill {self.n:>2}: {self.signal:<13} {self.point:<7} at {self.where:<22} rc {self.rc:>4}; "
                f"verify {self.verify_after_kill.rc}, build {self.rebuild.rc}, verify {self.verify_after_rebuild.rc}"
                f"{'' if not self.lost else f', LOST {len(self.lost)}'}"
                f"{'' if not self.unlisted else f', unlisted {self.unlisted}'}"
                f"{f', {self.orphans} orphan(s) left after the next build' if self.orphans else ''}")


def _where(lab: Lab, component: str) -> str:
    if list(lab.wheelhouse.glob(".incoming-*")):
        return "publish"
    logs = sorted((lab.cache / "logs").glob(f"{component}-*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "start-up"
    phases = [line.split("phase ", 1)[1].split()[0] for line in logs[-1].read_text(errors="replace").splitlines()
              if "] phase " in line and line.endswith(" done")]
    order = ["fetch", "prepare", "configure", "build", "repair", "publish"]
    return f"{order[order.index(phases[-1]) + 1]} phase" if phases else "fetch/prepare phase"


def kill_once(lab: Lab, n: int, rng: random.Random, sig: str, point: str, build_seconds: float,
              memo: dict) -> KillResult:
    """Start a build of a new key, kill it (SIGINT to its group, or SIGKILL to its pid only) at a
    random point or inside the publish window, then check: verify, a next build, verify again,
    every wheel published before still held, no wheel outside the manifest."""
    component = lab.names[0]
    before = {e["sha256"] for e in lab.manifest().values()}
    args = lab.build_args(component, f"k{n}")
    proc = lab.start(*args)
    if point == "publish":
        deadline = time.monotonic() + 120
        while proc.poll() is None and not list(lab.wheelhouse.glob(".incoming-*")) and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.06))
    else:
        time.sleep(rng.uniform(0.05, build_seconds))
    where = _where(lab, component) if proc.poll() is None else "already finished"
    try:
        if sig == "SIGINT-group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        where = "already finished"
    killed = lab.finish(proc)
    rc = killed.rc
    if rc == 0 and where != "already finished" and "cached, in " in killed.err:
        where = "exit (work done)"  # the signal came after the summary line: nothing left to stop
    v1 = lab.cli("verify")
    rebuild = lab.cli(*args)
    v2 = lab.cli("verify")
    after = lab.held_hashes(memo=memo)
    manifest = lab.manifest()
    unlisted = sorted(p.name for p in lab.wheelhouse.glob("*.whl") if p.name not in manifest)
    return KillResult(n, sig, point, where, rc, v1, rebuild, v2, before - after, unlisted, lab.reap_orphans(),
                      killed)


def kill_campaign(lab: Lab, kills: int, seed: int, build_seconds: float,
                  echo: Callable[[str], None] = lambda line: None) -> list[KillResult]:
    """`kills` kills, alternating the two signal modes; every third at the publish window."""
    rng = random.Random(seed)
    memo: dict = {}
    results = []
    for n in range(kills):
        sig = ("SIGINT-group", "SIGKILL-pid")[n % 2]
        point = "publish" if n % 3 == 2 else "random"
        results.append(kill_once(lab, n, rng, sig, point, build_seconds, memo))
        echo(results[-1].line())
    return results


# -- concurrency ----------------------------------------------------------------------------------

@dataclass
class ConcurrencyResult:
    builders: list[Run]
    verify: list[Run]
    same_key_identical: bool | None = None
    gc: Run | None = None

    @property
    def ok(self) -> bool:
        return all(r.rc == 0 for r in self.builders + self.verify) and (self.gc is None or self.gc.rc == 0)


def concurrent_different_keys(lab: Lab, n: int, round_: str = "c") -> ConcurrencyResult:
    """n builders of different components (different keys) into one wheelhouse and one cache."""
    procs = [lab.start(*lab.build_args(lab.names[i % len(lab.names)], f"{round_}{i // len(lab.names)}"))
             for i in range(n)]
    runs = [lab.finish(p) for p in procs]
    return ConcurrencyResult(runs, [lab.cli("verify")])


def concurrent_same_key(lab: Lab, n: int = 2, round_: str = "s") -> ConcurrencyResult:
    """n builders of one key into n wheelhouses sharing one cache: the per-key lock takes turns;
    every wheelhouse gets the wheel (byte-identical: the build is reproducible)."""
    houses = [lab.root / f"wheelhouse-same-{i}" for i in range(n)]
    procs = [lab.start(*lab.build_args(lab.names[1], round_), wheelhouse=h) for h in houses]
    runs = [lab.finish(p) for p in procs]
    verifies = [lab.cli("verify", wheelhouse=h) for h in houses]
    hashes = [{e["sha256"] for e in lab.manifest(h).values()} for h in houses]
    return ConcurrencyResult(runs, verifies, same_key_identical=all(x == hashes[0] and x for x in hashes))


def gc_during_a_build(lab: Lab, round_: str = "g") -> ConcurrencyResult:
    """`cache gc` while a build runs: its work tree is skipped (busy), the build succeeds."""
    component = lab.names[-1]
    lab.hold.touch()  # the build waits in its hook until gc has run
    try:
        proc = lab.start(*lab.build_args(component, round_))
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if any((d / "dist").exists() for d in (lab.cache / "work").glob(f"{component}-*") if d.is_dir()):
                break
            time.sleep(0.01)
        gc = lab.cli("cache", "gc")
    finally:
        lab.hold.unlink(missing_ok=True)
    build = lab.finish(proc)
    return ConcurrencyResult([build], [lab.cli("verify")], gc=gc)


# -- corruption -----------------------------------------------------------------------------------

CORRUPTIONS = ("flipped byte", "flipped byte, size and mtime kept", "truncated", "swapped wheel", "deleted wheel",
               "manifest entry edited")


@dataclass
class CorruptionResult:
    kind: str
    wheel: str
    verify: Run
    build: Run
    fixed_by_plain_build: bool
    build_verify: Run | None
    verify_after: Run

    @property
    def caught(self) -> bool:
        return self.verify.rc == 1 and self.wheel in self.verify.err

    @property
    def ok(self) -> bool:
        return self.caught and self.build.rc == 0 and self.verify_after.rc == 0 and (
            self.build_verify is None or self.build_verify.rc == 0)


def corrupt(lab: Lab, kind: str, victim: str, other: str) -> None:
    path = lab.wheelhouse / victim
    if kind.startswith("flipped byte"):
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        if kind.endswith("kept"):
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif kind == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif kind == "swapped wheel":
        path.write_bytes((lab.wheelhouse / other).read_bytes())
    elif kind == "deleted wheel":
        path.unlink()
    elif kind == "manifest entry edited":
        m = lab.wheelhouse / "manifest.json"
        body = json.loads(m.read_text())
        body["wheels"][victim]["sha256"] = "0" * 64
        m.write_text(json.dumps(body, indent=2))
    else:
        raise ValueError(kind)


def corruption_once(lab: Lab, kind: str) -> CorruptionResult:
    """Corrupt fault1's published wheel (it must have been built with round "c0"), then: verify
    must fail naming it; a plain build, and `build --verify` if verify still fails, must rebuild it;
    verify must pass."""
    component, other = lab.names[1], lab.names[2]
    by_component = {e["component"]: name for name, e in lab.manifest().items()}
    victim = by_component[component]
    corrupt(lab, kind, victim, by_component[other])
    v = lab.cli("verify")
    args = lab.build_args(component, "c0")
    b = lab.cli(*args)
    fixed = lab.cli("verify").rc == 0
    bv = None if fixed else lab.cli(*args, "--verify")
    return CorruptionResult(kind, victim, v, b, fixed, bv, lab.cli("verify"))


# -- bad input ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BadInput:
    name: str
    code: int
    message: str  # a fragment the error message must hold
    make: Callable[[Lab, Path], list[str]]  # prepares files under a fresh directory, returns the CLI args


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _with_manifest(body: bytes) -> Callable[[Lab, Path], list[str]]:
    def make(lab: Lab, d: Path) -> list[str]:
        _write(d / "wh" / "manifest.json", body)
        return ["--wheelhouse", str(d / "wh"), *lab.build_args(lab.names[0], "bad")]
    return make


def _release(body: str) -> Callable[[Lab, Path], list[str]]:
    def make(lab: Lab, d: Path) -> list[str]:
        return ["plan", "--release", str(_write(d / "rel.toml", body))]
    return make


def _child(table: str, body: str) -> Callable[[Lab, Path], list[str]]:
    """`plan` of a release extending the lab's with one table: `[table]` then `body`."""
    return _release(f"extends = 'r'\n[{table}]\n{body}")


def _build(*extra: str, target: bool = True, host_check: bool = False) -> Callable[[Lab, Path], list[str]]:
    def make(lab: Lab, d: Path) -> list[str]:
        args = lab.build_args(lab.names[0], "bad", *extra)
        if host_check:
            args.remove("--no-host-check")
        return args if target else args[:-1]
    return make


def _extends_chain(depth: int) -> Callable[[Lab, Path], list[str]]:
    """A release at the end of an `extends` chain `depth` files long."""
    def make(lab: Lab, d: Path) -> list[str]:
        _write(d / "c0.toml", "extends = 'r'\n")
        for i in range(1, depth):
            _write(d / f"c{i}.toml", f"extends = 'c{i - 1}'\n")
        return ["plan", "--release", str(d / f"c{depth - 1}.toml")]
    return make


def _git_option_source(lab: Lab, d: Path) -> list[str]:
    """A git source whose URL is a git option that would create a canary file (issue 20, item 1)."""
    body = f"extends = 'r'\n[components.fault0]\nsource = {{ git = '--upload-pack=touch {d}/PWNED;', ref = 'v1' }}\n"
    return ["fetch", "--release", str(_write(d / "rel.toml", body)), "fault0"]


def _images(body: str, *extra: str) -> Callable[[Lab, Path], list[str]]:
    """`images --no-build` of a release extending the lab's with an [image] table."""
    def make(lab: Lab, d: Path) -> list[str]:
        image = "[image]\nkind = 'vllm'\nrepository = 'fault/vllm'\nbase = 'local/debian-py:bookworm'\ntag = 't'\n"
        release = _write(d / "img.toml", "extends = 'r'\n" + image + body)
        return ["images", "--release", str(release), "--no-build", "--output-dir", str(d / "out"), *extra]
    return make


LONG_NAME = "n" * 300  # longer than any file system's NAME_MAX

BAD_INPUTS = (
    BadInput("unknown release name", 2, "nope", lambda lab, d: ["plan", "--release", "nope"]),
    BadInput("release file that does not exist", 2, "does not exist",
             lambda lab, d: ["plan", "--release", str(d / "missing.toml")]),
    BadInput("release file not UTF-8", 2, "not UTF-8",
             lambda lab, d: ["plan", "--release", str(_write(d / "r.toml", b"[target]\npython = '3.\xff'\n"))]),
    BadInput("release file not TOML", 2, "rel.toml", _release("[target\n")),
    BadInput("release with an unknown component", 2, "nosuch",
             _child("components.nosuch", "version = '1.0'\n")),
    BadInput("release extends an unknown release", 2, "nope", _release("extends = 'nope'\n")),
    BadInput("unknown target component", 2, "nosuch", lambda lab, d: ["plan", "--release", "r", "nosuch"]),
    BadInput("--env without KEY=VALUE", 2, "expected COMPONENT:KEY=VALUE", _build("--env", "fault0")),
    BadInput("--secret-env of an unset variable", 2, "is not set in this environment",
             _build("--secret-env", "fault0:WF_FAULT_UNSET_TOKEN")),
    BadInput("--secret-env with a value", 2, "expected COMPONENT:NAME", _build("--secret-env", "fault0:X=y")),
    BadInput("--adopt without =", 2, "expected COMPONENT=WHEEL|REQUIREMENT", _build("--adopt", "fault0")),
    BadInput("--adopt of a wheel that does not fit", 2, "fault0",
             lambda lab, d: _build("--adopt", f"fault0={_other_wheel(d)}")(lab, d)),
    BadInput("--source-dir without =", 2, "expected COMPONENT=PATH", _build("--source-dir", "fault0")),
    BadInput("--jobs far above the CPU count", 2, "more than 4 x the", _build("--jobs", "1000000")),
    BadInput("--jobs 0", 2, "--jobs", _build("--jobs", "0")),
    BadInput("--until without targets", 2, "needs the components to stop", _build("--until", "configure",
                                                                                  target=False)),
    BadInput("--python that does not exist", 2, "python", _build("--python", "/nonexistent/python3",
                                                                            host_check=True)),
    BadInput("plain http --index-url", 2, "--allow-insecure-index",
             lambda lab, d: ["--index-url", "http://example.invalid/simple", "plan", "--release", "r"]),
    BadInput("--wheelhouse that is a file", 2, "is a file, not a directory",
             lambda lab, d: ["--wheelhouse", str(_write(d / "wh", "")), *lab.build_args(lab.names[0], "bad")]),
    BadInput("manifest not JSON", 2, "corrupt manifest", _with_manifest(b"{not json")),
    BadInput("manifest not the factory's", 2, "not a wheelfactory manifest", _with_manifest(b"[]")),
    BadInput("manifest entry lacking keys", 2, "lacks version, sha256, size",
             _with_manifest(b'{"wheels": {"a.whl": {"dist": "a"}}}')),
    BadInput("manifest not UTF-8", 2, "corrupt manifest", _with_manifest(b'{"wheels": "\xff"}')),
    BadInput("lock file not JSON (venv)", 2, "corrupt lock file",
             lambda lab, d: ["--wheelhouse", str(_write(d / "wh" / "locks" / "r.json", "{x").parent.parent),
                             "venv", str(d / "v"), "--release", "r"]),
    BadInput("venv path that is a file", 2, "is a file, not a directory",
             lambda lab, d: ["venv", str(_write(d / "v", "")), "--release", "r"]),
    BadInput("unknown command", 2, "No such command", lambda lab, d: ["bulid"]),
    BadInput("unknown option", 2, "No such option", lambda lab, d: ["build", "--frobnicate"]),
    BadInput("cache gc --release that does not exist", 2, "nope",
             lambda lab, d: ["cache", "gc", "--dry-run", "--release", "nope"]),
    # Values that reach command lines are data (issue 20, items 1, 3, 5 and the input grammars of 7-9).
    BadInput("git source that is a git option", 2, "starts with '-' (git would read it as an option)",
             _git_option_source),
    BadInput("git ref that is a git option", 2, "bad git ref '--output=x'",
             _child("components.fault0", "source = { git = 'https://example.invalid/r.git', ref = '--output=x' }\n")),
    BadInput("pin name that is an index option", 2, "is not a package name",
             _child("pins", "'--extra-index-url http://127.0.0.1:9/simple #' = '1.0'\n")),
    BadInput("pin name with a space", 2, "'foo bar' is not a package name",
             _child("pins", "'foo bar' = '1.0'\n")),
    BadInput("empty pin name", 2, "'' is not a package name", _child("pins", "'' = '1.0'\n")),
    BadInput("--index-url http with a leading space", 2, "--allow-insecure-index",
             lambda lab, d: ["--index-url", " http://example.invalid/simple", "plan", "--release", "r"]),
    BadInput("--adopt of a plain-http URL", 2, "is fetched over plain http",
             _build("--adopt", "fault0=http://example.invalid/fault0-1.0-py3-none-any.whl")),
    BadInput("image tag with a newline and a RUN", 2, "contains control character(s) \\n",
             _child("image", "tag = \"x\\nRUN touch /pwned\"\n")),
    BadInput("--registry outside the OCI grammar", 2, "--registry: bad registry", _images("", "--registry",
                                                                                          "bad registry!!")),
    BadInput("--label-namespace with a newline", 2, "--label-namespace: bad label namespace",
             _images("", "--label-namespace", "dev.x\nRUN touch /pwned")),
    BadInput("version in full-width digits", 2, "full-width digits",
             _child("components.fault0", "version = '\uff11.0'\n")),
    BadInput("version of 5000 digits", 2, "a version has at most 128",
             _child("components.fault0", "version = '" + "1" * 5000 + "'\n")),
    BadInput("version with whitespace", 2, "without spaces",
             _child("components.fault0", "version = '1.0 '\n")),
    BadInput("env key with '='", 2, "is not an environment variable name",
             _child("components.fault0.env", "'A=B' = 'x'\n")),
    BadInput("empty env key", 2, "'' is not an environment variable name",
             _child("components.fault0.env", "'' = 'x'\n")),
    BadInput("NUL in an env value", 2, "\\x00",
             _child("components.fault0.env", "X = \"a\\u0000b\"\n")),
    BadInput("unknown [target] platform", 2, "'win_amd64' is not a platform",
             _child("target", "platform = 'win_amd64'\n")),
    BadInput("unknown CUDA arch", 2, "'99.0' is no CUDA architecture",
             _child("target", "cuda_arch_list = ['99.0']\n")),
    BadInput("empty source path", 2, "source.path: empty",
             _child("components.fault0", "source = { path = '' }\n")),
    BadInput("extends chain 1500 deep", 2, "more than 32 releases long", _extends_chain(1500)),
    BadInput("TOML nested 5000 deep", 2, "nested thousands deep", _release("a = " + "[" * 5000 + "]" * 5000 + "\n")),
    BadInput("--release file name too long", 2, "too long for the file system",
             lambda lab, d: ["plan", "--release", str(d / f"{LONG_NAME}.toml")]),
    BadInput("--wheelhouse name too long", 2, "too long for the file system",
             lambda lab, d: ["--wheelhouse", str(d / LONG_NAME), "plan", "--release", "r"]),
    # Names are not paths: a manifest or lock entry naming a file outside the wheelhouse.
    BadInput("manifest entry outside the wheelhouse", 2, "'../victim-1.0-py3-none-any.whl' is not a plain file name",
             _with_manifest(b'{"wheels": {"../victim-1.0-py3-none-any.whl": {"dist": "victim", "version": "1.0", '
                            b'"sha256": "0", "size": 1}}}')),
    BadInput("lock entry outside the wheelhouse (venv)", 2, "corrupt lock: entry '../../etc/passwd'",
             lambda lab, d: ["--wheelhouse", str(_write(d / "wh" / "locks" / "r.json", json.dumps(
                 {"format": 1, "release": "r", "python": "3.12", "platform": "linux_x86_64", "top_level": [],
                  "packages": [{"name": "x", "version": "1", "filename": "../../etc/passwd", "sha256": "0",
                                "component": None, "origin": "pypi"}]})).parent.parent),
                             "venv", str(d / "v"), "--release", "r"]),
    BadInput("--wait nan", 2, "nan is not a number of seconds", _build("--wait", "nan")),
    BadInput("--wait inf", 2, "inf is not a number of seconds", _build("--wait", "inf")),
    BadInput("--cache-dir that is a file", 2, "is a file, not a directory",
             lambda lab, d: ["--cache-dir", str(_write(d / "cachefile", "")), "plan", "--release", "r"]),
    BadInput("--cache-dir that is a file, after the command", 2, "is a file, not a directory",
             lambda lab, d: ["plan", "--release", "r", "--cache-dir", str(_write(d / "cachefile", ""))]),
    BadInput("cache list on a wheelhouse that is a file", 2, "is a file, not a directory",
             lambda lab, d: ["--wheelhouse", str(_write(d / "wh", "")), "cache", "list"]),
    BadInput("cache gc on a wheelhouse that is a file", 2, "is a file, not a directory",
             lambda lab, d: ["--wheelhouse", str(_write(d / "wh", "")), "cache", "gc", "--dry-run",
                             "--keep-sources"]),
    BadInput("recipe module with a syntax error", 2, "not valid Python",
             lambda lab, d: ["--recipes-dir", str(_write(d / "recipes" / "bad.py", "def x(:\n").parent), "list"]),
    BadInput("recipe module raising on import", 2, "raised RuntimeError on import",
             lambda lab, d: ["--recipes-dir", str(_write(d / "recipes" / "bad.py", "raise RuntimeError('x')\n").parent),
                             "list"]),
    BadInput("inspect of a zip without .dist-info", 2, "not a wheel",
             lambda lab, d: ["inspect", str(_zip(d / "dist" / "demo-1.0-py3-none-any.whl", {"demo/__init__.py": ""}))]),
    BadInput("adopted local file that is no wheel", 2, "nothing was built",
             lambda lab, d: _build("--adopt", f"fault0={_write(d / 'dist' / 'fault0-1.0-py3-none-any.whl', 'no zip')}")(
                 lab, d)),
    BadInput("options on an adopted component", 2, "is adopted", _release(
        "extends = '0.15.0-t4'\n[components.flashinfer]\nadopt = 'flashinfer-python==0.6.2'\n"
        "options = { cubin = true }\n")),
    BadInput("--source-dir that is a file", 2, "is a file, not a directory",
             lambda lab, d: _build("--source-dir", f"fault0={_write(d / 'passwd', 'root:x:0:0')}")(lab, d)),
)


def _zip(path: Path, members: dict[str, str]) -> Path:
    """A zip archive of `members` (name -> text) at path."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def _other_wheel(d: Path) -> Path:
    """A valid wheel of another distribution than the component's."""
    sys.path.insert(0, str(REPO))
    from wheelfactory.store.wheelpack import pack_tree

    tree = d / "tree"
    (tree / "other").mkdir(parents=True)
    (tree / "other" / "__init__.py").write_text("")
    return pack_tree(tree, "other", "1.0", "py3-none-any", d / "dist", summary="not the component")


@dataclass
class BadInputResult:
    case: BadInput
    run: Run
    published: list[str]

    @property
    def ok(self) -> bool:
        text = self.run.err + self.run.out
        return (self.run.rc == self.case.code and self.case.message in text and "Traceback" not in text
                and not self.published)

    def first_line(self) -> str:
        lines = [ln for ln in self.run.err.splitlines() if ln.strip()]
        return next((ln for ln in lines if ln.startswith(("error:", "Error:"))), lines[-1] if lines else "")


def bad_input_once(lab: Lab, case: BadInput, d: Path) -> BadInputResult:
    d.mkdir(parents=True, exist_ok=True)
    args = case.make(lab, d)
    run = lab.cli(*args, wheelhouse=d / "default-wh", cache=d / "cache")
    # An explicit --wheelhouse in args comes after the lab's and wins (click takes the last).
    published = [str(p) for p in d.rglob("*.whl") if "dist" not in p.parts]
    return BadInputResult(case, run, published)


def measure_build(lab: Lab) -> float:
    """One full build (online: fills pydeps/ for the offline builds after it); its seconds."""
    t = time.monotonic()
    r = lab.cli(*lab.build_args(lab.names[0], "warm", offline=False))
    if r.rc != 0:
        raise RuntimeError(f"the warm-up build failed:\n{r.err[-3000:]}")
    return time.monotonic() - t


# -- SIGKILL at exact points of the publish window --------------------------------------------------

# The factory, run in-process with one wheelhouse operation wrapped to SIGKILL the process right
# after (or, for the index swap, in the middle of) it: what a power cut or the OOM killer leaves.
_KILL_AT = r'''
import os, signal, sys
from pathlib import Path
import wheelfactory.store.wheelhouse as w
point = sys.argv[1]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if point == "old wheel moved to attic":
    orig_attic = w.Wheelhouse._to_attic
    def to_attic(self, name, *args, **kwargs):  # whatever else _to_attic takes (same_as)
        dest = orig_attic(self, name, *args, **kwargs)
        if dest is not None:
            die()
        return dest
    w.Wheelhouse._to_attic = to_attic
elif point == "new wheel moved in":
    orig_replace = os.replace
    def replace(src, dst):
        orig_replace(src, dst)
        if ".incoming-" in str(src) and str(dst).endswith(".whl"):
            die()
    w.os.replace = replace
elif point == "manifest written":
    orig_write = w.Wheelhouse._write_manifest
    w.Wheelhouse._write_manifest = lambda self, wheels: (orig_write(self, wheels), die())
elif point == "index swap":
    orig_replace = os.replace
    def replace(src, dst):
        orig_replace(src, dst)
        if str(src).endswith("/simple") and ".simple-old-" in str(dst):
            die()  # the old index moved aside, the new one not yet in place
    w.os.replace = replace
else:
    raise SystemExit(f"unknown point {point!r}")
from wheelfactory.cli.app import main
sys.argv = ["wheelfactory", *sys.argv[2:]]
main()
'''
PUBLISH_POINTS = ("old wheel moved to attic", "new wheel moved in", "manifest written", "index swap")


@dataclass
class PointResult:
    point: str
    rc: int
    verify_after_kill: Run
    rebuild: Run
    verify_after_rebuild: Run
    lost: set[str]

    @property
    def ok(self) -> bool:
        return self.rc == -signal.SIGKILL and self.rebuild.rc == 0 and self.verify_after_rebuild.rc == 0 \
            and not self.lost

    def line(self) -> str:
        return (f"SIGKILL after {self.point:<25} rc {self.rc}; verify {self.verify_after_kill.rc}, "
                f"build {self.rebuild.rc} ({'cached' if '0 built' in self.rebuild.err else 'built'}), "
                f"verify {self.verify_after_rebuild.rc}{f', LOST {len(self.lost)}' if self.lost else ''}")


def kill_at_point(lab: Lab, point: str, round_: str) -> PointResult:
    """A build of a new key of fault0 (whose older wheel fills the slot) SIGKILLed at `point`;
    then verify, the same build again, verify, and every wheel published before still held."""
    before = {e["sha256"] for e in lab.manifest().values()}
    args = lab.build_args(lab.names[0], round_)
    r = subprocess.run([sys.executable, "-c", _KILL_AT, point, *lab.base(), *args], env=lab.env, cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    lab._record(Run(args, r.returncode, r.stdout, r.stderr, 0.0))
    v1 = lab.cli("verify")
    rebuild = lab.cli(*args)
    v2 = lab.cli("verify")
    lab.reap_orphans()
    return PointResult(point, r.returncode, v1, rebuild, v2, before - lab.held_hashes())

"""The fault-injection campaign at full size (tests/test_faults.py runs it at CI size).

Real `wheelfactory` processes on a stand-in recipe that builds in seconds (tests/faultcampaign.py):
  - N kills at random points (seeded), alternating SIGINT to the process group and SIGKILL to the
    pid only, every third one aimed at the publish window; each followed by verify, the same build
    again, verify again, and a check that every wheel published before is still held;
  - SIGKILL at each exact point of the publish window (attic move, wheel move, manifest, index swap);
  - C concurrent builders of different keys into one wheelhouse, the same key into two
    wheelhouses, and `cache gc` while a build runs;
  - every corruption kind, caught by verify and rebuilt by build;
  - the bad-input table (exit 2, a message, nothing built);
  - a canary secret (--secret-env, and a parent HF_TOKEN) grepped for in every file and output.
Prints one line per fault, then a summary table and the same figures as JSON.

    python bench/faults.py [--kills 40] [--concurrency 8] [--seed 1] [--payload-mb 8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faultcampaign import (  # noqa: E402 -- after the path above
    BAD_INPUTS,
    CORRUPTIONS,
    PUBLISH_POINTS,
    Lab,
    bad_input_once,
    concurrent_different_keys,
    concurrent_same_key,
    corruption_once,
    gc_during_a_build,
    kill_at_point,
    kill_campaign,
    measure_build,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=40, help="random kills (default 40)")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent builders of different keys (default 8)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the kill points (default 1)")
    ap.add_argument("--payload-mb", type=float, default=8.0, help="payload per wheel: widens the publish window")
    ap.add_argument("--workdir", type=Path, help="keep the lab here (default: a temporary directory, removed)")
    args = ap.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="wf-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    lab = Lab(root, components=max(4, min(args.concurrency, 16)), payload_mb=args.payload_mb)
    started = time.monotonic()
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        build_s = measure_build(lab)
        say(f"warm-up build {build_s:.1f}s; {lab.components} stand-in components, {args.payload_mb} MB payload")

        kills = kill_campaign(lab, args.kills, args.seed, build_s, echo=say)
        for r in kills:
            if not r.ok:
                say(f"kill {r.n} details:\n{r.verify_after_kill.err[-800:]}\n{r.rebuild.err[-2500:]}\n"
                    f"{r.verify_after_rebuild.err[-800:]}")
        points = []
        for i, point in enumerate(PUBLISH_POINTS):
            points.append(kill_at_point(lab, point, f"p{i}"))
            say(points[-1].line())

        conc = concurrent_different_keys(lab, args.concurrency)
        say(f"{args.concurrency} concurrent builders, one wheelhouse: exits {[r.rc for r in conc.builders]}, "
            f"verify {conc.verify[0].rc}")
        same = concurrent_same_key(lab, 2)
        say(f"one key into two wheelhouses: exits {[r.rc for r in same.builders]}, verify "
            f"{[r.rc for r in same.verify]}, byte-identical {same.same_key_identical}")
        gc = gc_during_a_build(lab)
        skipped = "in use by a running build" in (gc.gc.err if gc.gc else "")
        say(f"cache gc during a build: gc {gc.gc.rc if gc.gc else '-'}, build {gc.builders[0].rc}, "
            f"verify {gc.verify[0].rc}; skipped the busy work tree: {skipped}")

        lab.cli(*lab.build_args(lab.names[1], "c0"))
        lab.cli(*lab.build_args(lab.names[2], "c0"))
        corruptions = []
        for kind in CORRUPTIONS:
            corruptions.append(corruption_once(lab, kind))
            c = corruptions[-1]
            say(f"corruption {kind!r}: verify {c.verify.rc} (caught {c.caught}), build {c.build.rc}, "
                f"{'fixed by plain build' if c.fixed_by_plain_build else f'build --verify {c.build_verify.rc}'}, "
                f"verify {c.verify_after.rc}")

        bad = [bad_input_once(lab, case, root / "bad" / f"{i:02d}") for i, case in enumerate(BAD_INPUTS)]
        for b in bad:
            say(f"bad input {b.case.name!r}: exit {b.run.rc}{'' if b.ok else '  <-- UNEXPECTED'}")
        leaks = lab.leaks()
        orphans = lab.reap_orphans()
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)

    survived = sum(r.ok for r in kills) + sum(p.ok for p in points)
    lost = sum(len(r.lost) for r in kills) + sum(len(p.lost) for p in points)
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "seed": args.seed,
        "kills": len(kills) + len(points),
        "kills_sigint_group": sum(r.signal == "SIGINT-group" for r in kills),
        "kills_sigkill_pid": sum(r.signal == "SIGKILL-pid" for r in kills) + len(points),
        "kills_in_publish_window": sum(r.where.startswith("publish") for r in kills) + len(points),
        "interruptions_survived": survived,
        "orphans_left_after_the_next_build": sum(r.orphans for r in kills),
        "verify_failed_right_after_kill": sum(r.verify_after_kill.rc != 0 for r in kills)
        + sum(p.verify_after_kill.rc != 0 for p in points),
        "concurrent_runs": len(conc.builders) + len(same.builders) + len(gc.builders),
        "concurrent_runs_ok": sum(r.rc == 0 for r in conc.builders + same.builders + gc.builders),
        "corruptions": len(corruptions),
        "corruptions_caught": sum(c.caught for c in corruptions),
        "corruptions_rebuilt": sum(c.ok for c in corruptions),
        "bad_inputs": len(bad),
        "bad_inputs_as_documented": sum(b.ok for b in bad),
        "wheelfactory_runs": lab.runs,
        "secrets_leaked": len(leaks),
        "published_wheels_lost": lost,
        "orphans_reaped_at_end": orphans,
        "seconds": round(time.monotonic() - started, 1),
    }
    rows = [
        ("interruptions survived", f"{survived}/{figures['kills']} ({figures['kills_sigint_group']} SIGINT to the "
         f"group, {figures['kills_sigkill_pid']} SIGKILL to the pid; {figures['kills_in_publish_window']} in the "
         f"publish window; {figures['orphans_left_after_the_next_build']} orphaned command(s) left after the "
         "next build)"),
        ("concurrent runs", f"{figures['concurrent_runs_ok']}/{figures['concurrent_runs']} succeeded"),
        ("corruptions caught", f"{figures['corruptions_caught']}/{len(corruptions)} by verify, "
         f"{figures['corruptions_rebuilt']} rebuilt"),
        ("bad inputs tried", f"{figures['bad_inputs_as_documented']}/{len(bad)} exit 2 with a message, nothing built"),
        ("secrets leaked", f"{len(leaks)} file(s) or output(s)"),
        ("nothing lost", "yes" if lost == 0 else f"NO: {lost} published wheel(s) gone"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n| " + "what".ljust(width) + " | result |\n|" + "-" * (width + 2) + "|---|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    print(json.dumps(figures, indent=2))
    if leaks:
        print("LEAKS:", *leaks, sep="\n  ")


if __name__ == "__main__":
    main()

"""`inspect`, `verify` and `serve`: reading wheels, checking the wheelhouse, serving it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..core.errors import BuildError, InputError
from ..pipeline.factory import Factory
from .options import (
    say,
    say_lock_holder,
)


@click.command()
@click.argument("wheels", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="WHEEL|SO|DIR...")
@click.option("--arch", "archs", multiple=True, metavar="ARCH",
              help="Judge against this target arch list, e.g. --arch 12.1a or --arch '9.0a;12.1a' (repeatable): "
                   "exit 1 if a shared object has no native code for a target or arch-specific code for another GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the audit (and verdict) as JSON.")
def inspect(wheels: tuple[Path, ...], archs: tuple[str, ...], as_json: bool) -> None:
    """Show the CUDA device code of every shared object in each wheel (bytes per arch) and, with
    --arch, whether each loads natively on the target GPUs. A shared object, or a directory of them
    (a JIT cache, a build tree), is read the same way. Several are shown side by side."""
    # Imported here: only this command reads fatbins, and the other commands start faster without.
    from ..cuda import audit as wheel_audit

    if archs:
        wheel_audit.target_devices(archs)  # a bad --arch is reported before any wheel is read
    audits = [wheel_audit.audit_path(w) for w in wheels]
    verdicts = [wheel_audit.judge(a, archs) if archs else None for a in audits]
    if as_json:
        click.echo(json.dumps({"wheels": [
            {"wheel": a.wheel, "provenance": a.provenance, "device_code": a.to_json(),
             "verdict": v.to_json() if v else None} for a, v in zip(audits, verdicts, strict=True)]}, indent=2))
    else:
        click.echo("\n\n".join(wheel_audit.render(a, v) for a, v in zip(audits, verdicts, strict=True)))
        if len(audits) > 1:
            click.echo("\n" + wheel_audit.render_comparison(audits))
    bad = [(a, v) for a, v in zip(audits, verdicts, strict=True) if v is not None and not v.ok]
    if bad:
        raise wheel_audit.PolicyError("; ".join(f"{a.wheel} contradicts --arch {';'.join(v.targets)} "
                                                f"({len(v.failures)} shared object(s))" for a, v in bad))


@click.command()
@click.pass_obj
def verify(factory: Factory) -> None:
    """Check the whole wheelhouse: every manifest file present with its sha256 (hashed in full), no
    wheel missing from the manifest, simple/ linking exactly the manifest's wheels, and every lock's
    hashes those of wheels it holds. Exit 1 listing each problem, 0 when clean."""
    from ..store.verify import verify_wheelhouse

    if not factory.wheelhouse.root.is_dir():
        raise InputError(f"no wheelhouse at {factory.wheelhouse.root} (set --wheelhouse)")
    # Under the write lock: a publish in progress would otherwise look like a mismatch.
    with factory.wheelhouse.lock(on_wait=say_lock_holder):
        problems = verify_wheelhouse(factory.wheelhouse)
    if problems:
        raise BuildError(f"{factory.wheelhouse.root}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    say(f"{factory.wheelhouse.root}: {len(factory.wheelhouse.manifest())} wheel(s), manifest, index and locks "
          "consistent")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface, for the other machines of a cluster).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="Do not log each request.")
@click.pass_obj
def serve(factory: Factory, host: str, port: int, quiet: bool) -> None:
    """Serve the wheelhouse read-only over HTTP: the PEP 503 index with PEP 658 metadata, the wheels
    and the locks, until interrupted."""
    from ..store.serve import make_server

    server = make_server(factory.wheelhouse.root, host, port, quiet)
    url = f"http://{host}:{server.server_address[1]}"
    say(f"serving {factory.wheelhouse.root} at {url}/simple/ (read-only; Ctrl-C stops)\n"
          f"  the locked set: pip install --no-deps --require-hashes --index-url {url}/simple/ "
          f"-r {url}/locks/<release>.txt")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("stopped serving")
    finally:
        server.server_close()

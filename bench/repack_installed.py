"""Repack a distribution installed in another interpreter (and, for torch, what it requires) as
wheels: `python bench/repack_installed.py PYTHON DIST OUT`. Writes OUT/main.txt with the path of
DIST's own wheel. The library behind `wheelfactory adopt --from-python`, for scripts that adopt
several components before one build (bench/gpu-vllm.sh)."""

import sys
import time
from pathlib import Path

from wheelfactory.pipeline.installed import repack_installed
from wheelfactory.run.runner import Runner

python, dist, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
started = time.monotonic()
wheels = repack_installed(python, dist, out, Runner("adopt", out / "adopt.log"), with_requires=dist == "torch")
size = sum(w.stat().st_size for w in wheels)
print(f"{dist}: {len(wheels)} wheel(s), {size / 2**30:.2f} GiB, {time.monotonic() - started:.0f} s; {wheels[0].name}")
(out / "main.txt").write_text(str(wheels[0]))

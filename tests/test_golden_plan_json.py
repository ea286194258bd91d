"""Golden file: the shape of `plan --json` (the stable contract) changes only on purpose.

tests/golden/plan-json-shape.json holds the keys and value types, recursively, of `wheelfactory plan
--json` for release 0.14.1-t5 with triton adopted (so that overrides, patches, an adopted step and a
built step all appear), and the plan's format_version. Values are not pinned (test_golden.py pins
what enters the keys); tables whose keys are data (a step's env, options, patches, extra_sources;
pins; overrides) are pinned as a map of the type of their values ({"<map>": ...}).

To change the shape on purpose (a key added, removed or of another type):
    1. bump PLAN_FORMAT_VERSION in wheelfactory/planning/plan.py, so readers of the JSON can tell;
    2. WHEELFACTORY_UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden_plan_json.py
    3. read `git diff tests/golden/plan-json-shape.json` before committing it.
The regeneration refuses a changed shape under an unchanged format_version.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from typing import Any

import pytest

from .conftest import REPO, invoke

GOLDEN = REPO / "tests" / "golden" / "plan-json-shape.json"
RELEASE = "0.14.1-t5"
ADOPT = "triton=triton==3.5.1"
# Tables keyed by data, not by the contract: shown as {"<map>": shape of every value}.
MAPS = {("steps", "env"), ("steps", "options"), ("steps", "patches"), ("steps", "extra_sources"),
        ("pins",), ("overrides",)}
MAP = "<map>"
REGENERATE = ("bump PLAN_FORMAT_VERSION in wheelfactory/planning/plan.py, then regenerate the golden file: "
              "WHEELFACTORY_UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden_plan_json.py")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise TypeError(f"not a JSON value: {value!r}")


def merge(a: Any, b: Any) -> Any:
    """One shape for two: records and maps merge key by key (a key one lacks is "absent"), lists
    merge their elements, differing scalars become a union "null|string". None (the values of an
    empty map) merges into anything."""
    if a is None or b is None or a == b:
        return b if a is None else a
    if isinstance(a, dict) and isinstance(b, dict) and (MAP in a) == (MAP in b):
        return {k: merge(a.get(k, "absent"), b.get(k, "absent")) for k in sorted(set(a) | set(b))}
    if isinstance(a, list) and isinstance(b, list):
        return [merge(a[0], b[0])] if a and b else (a or b)
    if isinstance(a, str) and isinstance(b, str):
        return "|".join(sorted(set(a.split("|")) | set(b.split("|"))))
    return {"anyOf": sorted(json.dumps(x, sort_keys=True) for x in (a, b))}


def shape(value: Any, path: tuple[str, ...] = ()) -> Any:
    """The keys and value types of a JSON value, recursively (list elements merged into one)."""
    if isinstance(value, dict):
        if path in MAPS:
            merged: Any = None
            for v in value.values():
                s = shape(v, path + (MAP,))
                merged = s if merged is None else merge(merged, s)
            return {MAP: merged}  # None while every instance of the map is empty
        return {k: shape(v, path + (k,)) for k, v in sorted(value.items())}
    if isinstance(value, list):
        merged = None
        for v in value:
            s = shape(v, path)
            merged = s if merged is None else merge(merged, s)
        return [] if merged is None else [merged]
    return _scalar(value)


def plan_json(tmp_path) -> dict[str, Any]:
    r = invoke("--wheelhouse", str(tmp_path / "wh"), "--cache-dir", str(tmp_path / "cache"),
               "plan", "-r", RELEASE, "--adopt", ADOPT, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def test_plan_json_shape_matches_the_golden_file(tmp_path):
    plan = plan_json(tmp_path)
    version = plan.get("format_version")
    assert isinstance(version, int) and version >= 1, f"plan --json has no integer format_version: {version!r}"
    got = {"format_version": version, "release": RELEASE, "adopt": ADOPT, "shape": shape(plan)}
    want = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {"format_version": None, "shape": None}
    if os.environ.get("WHEELFACTORY_UPDATE_GOLDEN"):
        if got["shape"] != want["shape"] and version == want["format_version"]:
            pytest.fail(f"the shape of plan --json changed and format_version is still {version}: {REGENERATE}",
                        pytrace=False)
        GOLDEN.write_text(dump(got))
        pytest.skip(f"rewrote {GOLDEN}; review `git diff {GOLDEN.relative_to(REPO)}`")
    if got["shape"] != want["shape"]:
        diff = "".join(difflib.unified_diff(dump(want["shape"]).splitlines(True), dump(got["shape"]).splitlines(True),
                                            str(GOLDEN.relative_to(REPO)), "plan --json now"))
        pytest.fail(f"the shape of `plan --json` changed (a key added, removed or of another type):\n{diff}\n"
                    f"if on purpose: {REGENERATE}", pytrace=False)
    assert version == want["format_version"], (
        f"plan --json says format_version {version}, the golden file {want['format_version']}: "
        "regenerate it (WHEELFACTORY_UPDATE_GOLDEN=1 python3 -m pytest tests/test_golden_plan_json.py)")


def test_golden_file_is_what_it_claims():
    """Independent of the code: facts of the contract the golden must show."""
    golden = json.loads(GOLDEN.read_text())
    s = golden["shape"]
    assert golden["format_version"] == 3 and s["format_version"] == "integer"
    assert set(s) == {"format_version", "release", "target", "steps", "pins", "overrides", "build_host"}
    assert s["build_host"] == {"machine": "string", "cross": "boolean"}
    assert s["target"] == {"python": "string", "cuda": "string", "cuda_arch_list": ["string"],
                           "platform": "string", "toolkit": "string"}
    [step] = s["steps"]
    assert step["component"] == step["version"] == step["key"] == step["action"] == "string"
    assert step["source"] == step["adopt"] == "null|string"  # built from a source, or adopted
    assert step["mode"] == "null|string"  # native, cross or emulated; null for an adopted wheel
    assert step["depends_on"] == step["outputs"] == step["unresolved"] == ["string"]
    assert step["env"] == {MAP: "string"} and step["patches"] == {MAP: ["string"]}
    assert step["options"] == {MAP: "boolean"}
    assert s["pins"] == {MAP: "string"}
    assert set(s["overrides"][MAP]) >= {"version", "reason"}


@pytest.mark.parametrize("change", ["add", "remove", "retype", "retype-nested", "map-value"])
def test_the_shape_sees_every_kind_of_change(tmp_path, change):
    """The comparison can fail: each kind of change to the JSON changes its shape; data does not."""
    plan = plan_json(tmp_path)
    before = shape(plan)
    changed = copy.deepcopy(plan)
    if change == "add":
        changed["steps"][0]["new_key"] = "x"
    elif change == "remove":
        del changed["steps"][-1]["options"]  # one step lacking a key is enough
    elif change == "retype":
        changed["release"] = {"name": changed["release"]}
    elif change == "retype-nested":
        changed["target"]["cuda_arch_list"] = ";".join(changed["target"]["cuda_arch_list"])
    else:
        changed["steps"][-1]["env"]["SOME_FLAG"] = 1
    assert shape(changed) != before
    data_only = copy.deepcopy(plan)
    data_only["steps"][0]["env"]["ANOTHER_VARIABLE"] = "value"
    data_only["steps"][0]["version"] = "9.9.9"
    data_only["pins"]["another-package"] = "1.0"
    assert shape(data_only) == before

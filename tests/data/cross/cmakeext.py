"""Test recipe (not shipped): the vLLM-style CMake extension stand-in of tests/fixtures/cmake-ext-standin,
built as vLLM is (its setup.py runs CMake), declaring CROSS as the vLLM recipe does."""

from __future__ import annotations

from wheelfactory.planning.recipe import EnvSpec, Recipe, Repair

# The stand-in passes nothing about the target: a cross step's CMAKE_TOOLCHAIN_FILE decides it.
CROSS = True

RECIPE = Recipe(
    name="cmakeext",
    summary="Stand-in for vLLM's CMake extension build (tests/fixtures/cmake-ext-standin)",
    source=None,  # the release names the stand-in's directory
    outputs=("cmake-ext-standin",),
    repair=Repair(mode="retag", strip=True),
)


def environment(spec: EnvSpec) -> dict[str, str]:
    # CMake's default for CMAKE_CUDA_ARCHITECTURES: the target's arches as CMake writes them (121a).
    return {"CUDAARCHS": ";".join(a.replace(".", "") for a in spec.target.cuda_arch_list),
            "CMAKE_BUILD_TYPE": "Release"}

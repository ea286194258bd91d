"""Parallel jobs: as many as CPUs, capped so that jobs x the recipe's memory per job fits in the
memory available (128 GB Sparks ran out of memory with -j$(nproc) building torch and flashinfer)."""

from __future__ import annotations

import pytest

from wheelfactory.host.facts import Host, default_jobs
from wheelfactory.planning.plan import plan_release
from wheelfactory.planning.recipe import Target, load_recipes
from wheelfactory.planning.release import load_release

from .conftest import RECIPES


def host(cpus: int, mem_gb: float) -> Host:
    return Host("linux_aarch64", None, "none", cpus=cpus, mem_available_gb=mem_gb)


@pytest.mark.parametrize("cpus, mem_gb, per_job, jobs", [
    (20, 110.0, 8.0, 13),   # memory-bound: 13 x 8 = 104 <= 110 < 14 x 8
    (20, 110.0, 6.0, 18),   # 18 x 6 = 108
    (20, 110.0, 1.5, 20),   # CPU-bound: 73 would fit
    (20, 16.0, 6.0, 2),
    (4, 256.0, 2.0, 4),
    (20, 5.9, 6.0, 1),      # less than one job's worth: still one job, never zero
    (20, 0.0, 2.0, 1),
    (1, 110.0, 1.0, 1),
])
def test_jobs_are_capped_by_memory_and_cpus(cpus, mem_gb, per_job, jobs):
    assert default_jobs(host(cpus, mem_gb), per_job) == jobs


def test_a_zero_per_job_figure_does_not_divide_by_zero():
    assert default_jobs(host(8, 64.0), 0.0) == 8


@pytest.mark.parametrize("mem_gb", [128.0, 64.0, 24.0])
def test_every_shipped_build_step_fits_the_memory(mem_gb):
    """On a 20-core host with this much memory free, each step of the release runs as many jobs as
    fit its recipe's memory per job, at least one."""
    recipes = load_recipes(RECIPES)
    target = Target("3.12", "13.1.0", ("12.1a",), "linux_aarch64", "wheels:13.1.0:test")
    plan = plan_release(load_release("0.15.0-t4", recipes, RECIPES), recipes, target)
    h = host(20, mem_gb)
    for step in plan.steps:
        per_job = recipes[step.component].recipe.mem_per_job_gb
        assert step.mem_per_job_gb == per_job  # the plan carries the recipe's figure to the build
        jobs = default_jobs(h, per_job)
        assert 1 <= jobs <= 20
        assert jobs * per_job <= mem_gb or jobs == 1, (step.component, jobs)
        assert jobs == 20 or (jobs + 1) * per_job > mem_gb, f"{step.component}: {jobs} jobs leave room for one more"

"""Running a plan: the factory's front door, the executor, each step's phases and environment, outputs,
repair, provenance, installed distributions, the build cache."""

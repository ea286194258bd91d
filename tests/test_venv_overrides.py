"""A release's [overrides] are tolerated where they are meant: `pip check` in a venv from the lock
accepts the conflicts an override was written for (and says so), and nothing else."""

from __future__ import annotations

import pytest

from wheelfactory.core.errors import BuildError
from wheelfactory.lock.venv import check_consistency

T5 = "vllm 0.15.0 has requirement transformers<5,>=4.56.0, but you have transformers 5.0.0."
TORCH = "vllm 0.33.0 has requirement torch==2.14.0, but you have torch 2.14.1+cu131."
AUDIO = "vllm 0.33.0 has requirement torchaudio==2.14.0, but you have torchaudio 2.13.0."
MISSING = "vllm 0.15.0 requires ray, which is not installed."


class PipCheck:
    """Stands in for the runner: answers `pip check` with the given lines, records the notes."""

    def __init__(self, *lines: str):
        self.output = "\n".join(lines) + "\n" if lines else "No broken requirements found.\n"
        self.commands: list[list[str]] = []
        self.notes: list[str] = []

    def run(self, cmd, capture=False, check=True, **kwargs):
        self.commands.append([str(c) for c in cmd])
        assert capture and not check, "pip check's output is read, its exit code is not the verdict"
        return self.output

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_a_clean_venv_passes(tmp_path):
    runner = PipCheck()
    check_consistency(tmp_path / "bin" / "python", {}, runner)
    assert runner.commands == [[str(tmp_path / "bin" / "python"), "-m", "pip", "check"]] and not runner.notes


def test_an_overridden_pin_is_tolerated_and_shown(tmp_path):
    runner = PipCheck(T5)
    check_consistency(tmp_path / "python", {"transformers": "vLLM 0.15 declares transformers<5"}, runner)
    assert len(runner.notes) == 1 and T5 in runner.notes[0] and "overrides" in runner.notes[0]


def test_an_overridden_component_is_tolerated(tmp_path):
    runner = PipCheck(TORCH)
    check_consistency(tmp_path / "python", {"torch": "this release adopts 2.14.1"}, runner)
    assert [n for n in runner.notes if TORCH in n]


def test_without_the_override_the_same_conflict_fails(tmp_path):
    with pytest.raises(BuildError) as e:
        check_consistency(tmp_path / "python", {}, PipCheck(T5))
    assert T5 in str(e.value)


def test_only_the_overridden_conflict_is_tolerated(tmp_path):
    runner = PipCheck(T5, MISSING)
    with pytest.raises(BuildError) as e:
        check_consistency(tmp_path / "python", {"transformers": "why"}, runner)
    assert MISSING in str(e.value) and T5 not in str(e.value)
    assert [n for n in runner.notes if T5 in n]


def test_an_override_of_torch_does_not_cover_torchaudio(tmp_path):
    """A name is matched whole: overriding torch says nothing about torchaudio's conflict."""
    runner = PipCheck(TORCH, AUDIO)
    with pytest.raises(BuildError) as e:
        check_consistency(tmp_path / "python", {"torch": "this release adopts 2.14.1"}, runner)
    assert AUDIO in str(e.value) and TORCH not in str(e.value)


def test_names_are_compared_as_pip_normalizes_them(tmp_path):
    line = "vllm 0.15.0 has requirement huggingface-hub<1.0, but you have huggingface-hub 1.2.0."
    runner = PipCheck(line)
    check_consistency(tmp_path / "python", {"huggingface_hub": "why"}, runner)
    assert [n for n in runner.notes if line in n]

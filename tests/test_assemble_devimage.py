"""The dev image's design, the build network, base digests and the vLLM image's user, without Docker.

The dev image itself is built and used in tests/test_devimage.py (slow)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from assemble.assembler import Assembler, Prepared
from assemble.bases import find_base, load_bases
from assemble.devtoolkit import _link_locked_wheel, dev_toolkit, required_paths
from assemble.docker import Docker
from assemble.dockerfile import extra_runs, render_dockerfile
from assemble.layers import Layer
from assemble.spec import Settings, image_specs
from wheelfactory.core.errors import InputError
from wheelfactory.lock.closure import Lock, LockedPackage
from wheelfactory.pipeline.factory import Factory
from wheelfactory.toolchain.toolkit import REQUIRED, load_toolkit

from .conftest import CI_RELEASES, RECIPES

CUDA_WHEELS = RECIPES / "data" / "cuda_wheels.toml"


def _dockerfile(factory: Factory, release: str, variant: str) -> str:
    spec = next(s for s in image_specs(factory.release(release), RECIPES) if s.variant == variant)
    return render_dockerfile(spec, find_base(spec.base, load_bases()), [(g.name, g.about) for g in spec.groups])


def test_dev_dockerfile_is_the_runtime_one_plus_tooling_and_toolkit(factory: Factory) -> None:
    dev = _dockerfile(factory, "pytorch-2.10.0-cu131", "dev")
    runtime = _dockerfile(factory, "pytorch-2.10.0-cu131", "runtime")
    runs = [block for block in dev.split("\n\n") if "\nRUN " in "\n" + block]
    runtime_runs = [block for block in runtime.split("\n\n") if "\nRUN " in "\n" + block]
    # every RUN of the runtime image, in order and word for word, then the dev image's two
    assert runs[:len(runtime_runs)] == runtime_runs and len(runs) == len(runtime_runs) + 2
    tooling, toolkit = runs[-2:]
    assert "build-essential" in tooling and "cmake" in tooling and "ninja-build" in tooling
    assert "--mount=type=bind,source=toolkit,target=/toolkit" in toolkit
    for rel in ("bin/nvcc", "lib64/stubs/libcuda.so", "include/cusparse.h", "nvvm/bin/cicc"):
        assert f" {rel} " in toolkit.replace(";", " ")
    assert 'CUDA_HOME="/usr/local/cuda"' in dev and 'TORCH_CUDA_ARCH_LIST="12.1a"' in dev
    assert "FROM nvidia/cuda:13.1.0-base-ubuntu24.04\n" in dev  # no CUDA devel base
    assert "USER" not in dev


def test_the_toolkit_check_is_the_factorys() -> None:
    assert required_paths() == list(REQUIRED)


def test_every_run_is_named_for_the_size_report(factory: Factory) -> None:
    bases = load_bases()
    for release in ("pytorch-2.10.0-cu131", "0.33.0-t5", "0.15.0-t4"):
        for spec in image_specs(factory.release(release), RECIPES):
            base = find_base(spec.base, bases)
            text = render_dockerfile(spec, base, [(g.name, g.about) for g in spec.groups])
            p = Prepared(spec, base, [], Path("Dockerfile"), Path("context"), {}, Path("log"))
            # the wheel layers are not in `p.layers` here: count them from the spec's groups
            assert text.count("\nRUN ") == len(p.run_names) + len(spec.groups), (release, spec.variant)
            assert p.run_names[-len(extra_runs(spec, base)) or len(p.run_names):] == extra_runs(spec, base)


def test_vllm_image_runs_as_uid_1000_and_says_how_to_override(factory: Factory) -> None:
    text = _dockerfile(factory, "0.33.0-t5", "runtime")
    assert "useradd --create-home --uid 1000 --user-group --shell /bin/bash vllm" in text
    assert "\nUSER 1000:1000\n" in text and "WORKDIR" not in text  # a WORKDIR would be one more layer
    assert "docker run --user root" in text
    # the user comes after every RUN that installs (they need root) and before the labels
    assert text.index("USER 1000") > text.rindex("\nRUN ") and text.index("USER 1000") < text.index("\nLABEL ")


def test_base_labels_and_digest_pin() -> None:
    data = {"bases": {"example/cuda:13": {"python": "3.12", "platforms": ["linux_x86_64"], "glibc": "2.39",
                                          "family": "debian", "digest": "sha256:" + "ab" * 32}}}
    base = load_bases(data)["example/cuda:13"]
    assert base.pinned_ref == "example/cuda:13@sha256:" + "ab" * 32
    data["bases"]["example/cuda:13"]["digest"] = "latest"
    with pytest.raises(InputError, match=r"bases.toml \[example/cuda:13\]: digest 'latest' is not sha256"):
        load_bases(data)
    local = load_bases()["local/debian-py:bookworm"]
    assert local.digest is None and local.pinned_ref == "local/debian-py:bookworm"
    # dev tooling from apt on a base whose Python needs no provisioning
    assert "build-essential" in local.dev_packages and local.python_packages == ()


class FakeDocker(Docker):
    """The engine's answers, recorded; no process is started."""

    def __init__(self, bridge: bool, images: dict[str, dict] | None = None):
        super().__init__("docker")
        self.bridge = bridge
        self.images = images or {}
        self.pulled: list[str] = []

    def has_default_bridge(self) -> bool:
        return self.bridge

    def inspect(self, ref: str):
        return self.images.get(ref)

    def pull(self, ref: str) -> None:
        self.pulled.append(ref)
        self.images[ref] = {"Id": "sha256:" + "1" * 64, "RepoDigests": [f"{ref.split(':')[0]}@sha256:" + "2" * 64]}


def _prepared(factory: Factory, release: str, variant: str, tmp_path: Path) -> Prepared:
    spec = next(s for s in image_specs(factory.release(release), RECIPES) if s.variant == variant)
    base = find_base(spec.base, load_bases())
    dockerfile = tmp_path / f"{variant}.Dockerfile"
    dockerfile.write_text(render_dockerfile(spec, base, [(g.name, g.about) for g in spec.groups]))
    return Prepared(spec, base, [], dockerfile, tmp_path / "context", {}, tmp_path / "log")


@pytest.mark.parametrize("bridge, choice, expected", [
    (False, "auto", "host"), (True, "auto", None), (False, "default", None), (True, "host", "host")])
def test_build_network_for_steps_that_install_packages(factory: Factory, tmp_path: Path, bridge, choice,
                                                        expected) -> None:
    asm = Assembler(factory, Settings(network=choice), tmp_path, FakeDocker(bridge))
    p = _prepared(factory, "pytorch-2.10.0-cu131", "dev", tmp_path)  # apt: python, build tooling
    assert p.needs_network and asm.network(p) == expected
    cmd = asm.docker.build_command(p.dockerfile, p.context, "t:1", {}, asm.network(p), buildx=False)
    assert ("--network=host" in cmd) == (expected == "host") and "--network=none" not in cmd


def test_a_build_that_installs_only_wheels_has_no_network(factory: Factory, tmp_path: Path) -> None:
    settings = Settings(base_image="local/debian-py:bookworm", network="host")
    spec = image_specs(factory.release(str(CI_RELEASES / "ci.toml")), RECIPES, settings)[0]
    base = find_base(spec.base, load_bases())
    p = Prepared(spec, base, [], tmp_path / "D", tmp_path, {}, tmp_path / "log")
    assert not p.needs_network and Assembler(factory, settings, tmp_path, FakeDocker(False)).network(p) == "none"


def test_registry_base_pinned_to_its_digest_for_the_build(factory: Factory, tmp_path: Path) -> None:
    docker = FakeDocker(True)
    asm = Assembler(factory, Settings(), tmp_path, docker, echo=lambda s: None)
    p = _prepared(factory, "pytorch-2.10.0-cu131", "runtime", tmp_path)
    digest = asm.base_digest(p)
    assert docker.pulled == ["nvidia/cuda:13.1.0-base-ubuntu24.04"] and digest == "sha256:" + "2" * 64
    assert f"\nFROM nvidia/cuda:13.1.0-base-ubuntu24.04@{digest}\n" in p.dockerfile.read_text()
    # a local image: no registry digest; its ID is the label, FROM stays as it is
    local = {"Id": "sha256:" + "3" * 64, "RepoDigests": []}
    asm = Assembler(factory, Settings(), tmp_path, FakeDocker(True, {"local/debian-py:bookworm": local}))
    settings = Settings(base_image="local/debian-py:bookworm")
    spec = image_specs(factory.release(str(CI_RELEASES / "ci.toml")), RECIPES, settings)[0]
    base = find_base(spec.base, load_bases())
    (tmp_path / "ci").write_text(render_dockerfile(spec, base, []))
    q = Prepared(spec, base, [], tmp_path / "ci", tmp_path, {}, tmp_path / "log")
    assert asm.base_digest(q) == local["Id"] and "\nFROM local/debian-py:bookworm\n" in q.dockerfile.read_text()


def _lock(*packages: tuple[str, str, str]) -> Lock:
    return Lock("r", "3.11", "linux_x86_64", (), tuple(
        LockedPackage(n, v, f"{n.replace('-', '_')}-{v}-py3-none-any.whl", sha, None, "pypi")
        for n, v, sha in packages))


def test_dev_toolkit_takes_the_locked_wheels_but_never_the_compilers(factory: Factory) -> None:
    release = factory.release(str(CI_RELEASES / "ci-dev.toml"))
    pins = load_toolkit(CUDA_WHEELS, "13.0", "linux_x86_64")
    lock = _lock(("nvidia-cublas", "13.1.1.3", "c" * 64), ("nvidia-cuda-nvcc", "13.0.88", "d" * 64))
    dev = dev_toolkit(CUDA_WHEELS, release, lock, own={"nvidia-cuda-nvcc"})
    assert dev.from_lock == {"nvidia-cublas"}
    cublas = dev.toolkit.pin("nvidia-cublas")
    assert cublas is not None and (cublas.sha256, cublas.version) == ("c" * 64, "13.1.1.3")
    assert dev.toolkit.pin("nvidia-cuda-nvcc") == pins.pin("nvidia-cuda-nvcc")  # unpacked, whatever the lock holds
    assert dev.toolkit.identity != pins.identity and len(dev.toolkit.wheels) == len(pins.wheels)


def test_a_locked_wheel_becomes_links_into_the_venv(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("nvidia/cu13/lib/libcudart.so.13", b"\x7fELF")
        zf.writestr("nvidia/cu13/include/cuda.h", "CUresult cuInit(unsigned int Flags);\n")
        zf.writestr("nvidia_cuda_runtime-13.0.96.dist-info/METADATA", "Name: nvidia-cuda-runtime\n")
    wheel = tmp_path / "nvidia_cuda_runtime-13.0.96-py3-none-any.whl"
    wheel.write_bytes(buf.getvalue())
    root = tmp_path / "root"
    site = "/opt/venv/lib/python3.11/site-packages"
    headers = _link_locked_wheel(wheel, root, site)
    assert (root / "lib64" / "libcudart.so.13").readlink() == Path(f"{site}/nvidia/cu13/lib/libcudart.so.13")
    assert (root / "include" / "cuda.h").readlink() == Path(f"{site}/nvidia/cu13/include/cuda.h")
    assert not (root / "dist-info").exists()  # the venv has the wheel's metadata
    assert headers == ["CUresult cuInit(unsigned int Flags);\n"]  # for the libcuda stub



def test_size_report_puts_wheel_bytes_on_the_wheel_layers_of_a_dev_image(factory: Factory, tmp_path: Path) -> None:
    """RUNs after the wheel layers (tooling, toolkit) install no wheels: the report must not shift the
    wheels' installed bytes onto them."""
    p = _prepared(factory, "pytorch-2.10.0-cu131", "dev", tmp_path)
    p.layers = [Layer(g.name, g, (), 100 * (i + 1)) for i, g in enumerate(p.spec.groups)]
    names = p.run_names
    assert names[-2:] == ["tooling", "toolkit"]
    sizes = {g.name: 100 * (i + 1) for i, g in enumerate(p.spec.groups)}
    ref = p.spec.ref()
    docker = FakeDocker(True, {ref: {"Size": 10_000, "RootFS": {"Layers": [f"sha256:{i}" for i in range(12)]}}})
    docker.history = lambda _ref: [(sizes.get(n, 7), f"RUN {n}") for n in names]  # type: ignore[method-assign]
    report = Assembler(factory, Settings(), tmp_path, docker).size_report(p)
    by_name = {x.name: x for x in report.layers}
    assert [by_name[g.name].installed for g in p.spec.groups] == [100, 200, 300]
    assert by_name["tooling"].installed is None and by_name["toolkit"].installed is None
    assert report.overhead == 0.0

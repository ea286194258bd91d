"""Image specs, tags, labels and layer grouping of the real releases: pure, no wheels, no Docker."""

from __future__ import annotations

import pytest

from assemble.bases import find_base, incompatible_wheels, load_bases
from assemble.layers import assign, split
from assemble.spec import LayerGroup, Settings, cuda_wheel_names, image_specs, release_groups
from wheelfactory.core.errors import InputError
from wheelfactory.lock.closure import LockedPackage
from wheelfactory.pipeline.factory import Factory

from .conftest import CI_RELEASES, RECIPES


def pkg(name: str, version: str = "1.0", filename: str | None = None) -> LockedPackage:
    return LockedPackage(name, version, filename or f"{name.replace('-', '_')}-{version}-py3-none-any.whl",
                         "0" * 64, None, "pypi")


def test_vllm_release_tag_labels_and_groups(factory: Factory) -> None:
    [spec] = image_specs(factory.release("0.15.0-t4"), RECIPES)
    assert spec.ref() == "dgx-spark-vllm:0.15.0-t4"
    assert spec.ref("ghcr.io/me/") == "ghcr.io/me/dgx-spark-vllm:0.15.0-t4"
    assert spec.base == "nvidia/cuda:13.1.0-base-ubuntu24.04"
    assert [g.name for g in spec.groups] == ["cuda", "torch", "stack", "transformers"]
    ns = "dev.wheelfactory"
    for name, version in {"cuda": "13.1.0", "nccl": "2.29.2-1", "torch": "2.10.0", "torchvision": "0.25.0",
                          "torchaudio": "2.10.0", "triton": "3.5.1", "flashinfer": "0.6.2",
                          "transformers": "4.57.6", "vllm": "0.15.0", "ray": "2.53.0"}.items():
        assert spec.labels[f"{ns}.{name}_version"] == version
    assert spec.labels["org.opencontainers.image.version"] == "0.15.0-t4"
    assert spec.arg_labels["org.opencontainers.image.created"] == "WF_CREATED"
    assert spec.arg_labels[f"{ns}.torch_build_key"] == "WF_TORCH_BUILD_KEY"
    assert spec.env["TRITON_PTXAS_PATH"] == "/opt/venv/lib/python3.12/site-packages/nvidia/cu13/bin/ptxas"
    # Triton 3.5.1 reads no other ptxas variable
    assert "TRITON_PTXAS_BLACKWELL_PATH" not in spec.env


def test_triton_38_image_points_the_blackwell_ptxas_at_the_toolkit(factory: Factory) -> None:
    # Triton >= 3.6 runs TRITON_PTXAS_BLACKWELL_PATH's ptxas for sm_121a, not TRITON_PTXAS_PATH's
    [spec] = image_specs(factory.release("0.33.0-t5"), RECIPES)
    ptxas = "/opt/venv/lib/python3.12/site-packages/nvidia/cu13/bin/ptxas"
    assert spec.env["TRITON_PTXAS_BLACKWELL_PATH"] == ptxas and spec.env["TRITON_PTXAS_PATH"] == ptxas


def test_t5_differs_from_t4_only_in_transformers(factory: Factory) -> None:
    [t4] = image_specs(factory.release("0.15.0-t4"), RECIPES)
    [t5] = image_specs(factory.release("0.15.0-t5"), RECIPES)
    assert t5.tag == "0.15.0-t5" and t5.groups == t4.groups and t5.base == t4.base and t5.env == t4.env
    differ = {k for k in t4.labels if t4.labels[k] != t5.labels[k]}
    assert differ == {"dev.wheelfactory.release", "dev.wheelfactory.transformers_version",
                      "org.opencontainers.image.version"}


def test_pytorch_release_makes_dev_and_runtime(factory: Factory) -> None:
    dev, runtime = image_specs(factory.release("pytorch-2.10.0-cu131"), RECIPES)
    assert dev.ref() == "dgx-spark-pytorch-dev:2.10.0-cu131" and dev.dev_tooling
    # the thin design: the runtime image's base, plus tooling and the release's toolkit at /usr/local/cuda
    assert dev.base == runtime.base == "nvidia/cuda:13.1.0-base-ubuntu24.04"
    assert runtime.ref() == "dgx-spark-pytorch-runtime:2.10.0-cu131" and not runtime.dev_tooling
    assert dev.env["CUDA_HOME"] == "/usr/local/cuda" and dev.env["TORCH_CUDA_ARCH_LIST"] == "12.1a"
    assert dev.env["PATH"].split(":")[:2] == ["/opt/venv/bin", "/usr/local/cuda/bin"]
    assert "CUDA_HOME" not in runtime.env and dev.user is None and runtime.user is None
    assert dev.labels["org.opencontainers.image.base.name"] == "nvidia/cuda:13.1.0-base-ubuntu24.04"
    assert dev.arg_labels["org.opencontainers.image.base.digest"] == "WF_BASE_DIGEST"
    assert dev.arg_labels["dev.wheelfactory.cuda_toolkit"] == "WF_CUDA_TOOLKIT"
    assert "dev.wheelfactory.cuda_toolkit" not in runtime.arg_labels
    assert [g.name for g in runtime.groups] == ["cuda", "torch", "stack"]  # no transformers pin
    assert "dev.wheelfactory.vllm_version" not in runtime.labels


def test_settings_namespace_repository_and_base(factory: Factory) -> None:
    settings = Settings(registry="reg.example/x", label_namespace="org.example", repository="myvllm",
                        base_image="local/debian-py:bookworm")
    [spec] = image_specs(factory.release("0.15.0-t4"), RECIPES, settings)
    assert spec.ref(settings.registry) == "reg.example/x/myvllm:0.15.0-t4"
    assert spec.base == "local/debian-py:bookworm"
    assert spec.labels["org.example.vllm_version"] == "0.15.0"
    assert not any(k.startswith("dev.wheelfactory") for k in spec.labels)


def test_release_without_image_kind_is_refused(factory: Factory, tmp_path) -> None:
    path = tmp_path / "noimage.toml"
    path.write_text('[target]\npython = "3.12"\ncuda = "13.1.0"\ncuda_arch_list = ["12.1a"]\n'
                    'platform = "linux_aarch64"\n[pins]\ntransformers = "4.57.6"\n')
    with pytest.raises(InputError, match=r"no \[image\] kind"):
        image_specs(factory.release(str(path)), RECIPES)


def test_grouping_puts_each_package_in_its_layer(factory: Factory) -> None:
    release = factory.release("0.15.0-t4")
    groups = release_groups(release, RECIPES)
    libs, jit = cuda_wheel_names(RECIPES)
    names = ["torch", "torchvision", "triton", "nvidia-nccl-cu13", "nvidia-cublas", "nvidia-cuda-nvcc",
             "nvidia-cutlass-dsl", "nvidia-ml-py", "vllm", "ray", "numpy", "transformers"]
    out = assign([pkg(n) for n in names], groups, set().union(*libs.values(), *jit.values()))
    assert [p.name for p in out["cuda"]] == ["nvidia-cublas", "nvidia-cuda-nvcc"]
    assert [p.name for p in out["torch"]] == ["nvidia-nccl-cu13", "torch", "torchvision", "triton"]
    assert [p.name for p in out["stack"]] == ["numpy", "nvidia-cutlass-dsl", "nvidia-ml-py", "ray", "vllm"]
    assert [p.name for p in out["transformers"]] == ["transformers"]


def test_t4_and_t5_layers_identical_but_transformers(factory: Factory) -> None:
    libs, _ = cuda_wheel_names(RECIPES)
    common = [pkg(n) for n in ("torch", "nvidia-cublas", "vllm", "ray")]
    layers = []
    for release, tf in (("0.15.0-t4", "4.57.6"), ("0.15.0-t5", "5.0.0")):
        groups = release_groups(factory.release(release), RECIPES)
        layers.append(assign(common + [pkg("transformers", tf)], groups, set().union(*libs.values())))
    t4, t5 = layers
    assert [k for k in t4 if t4[k] != t5[k]] == ["transformers"]


def test_a_group_over_the_limit_is_split_in_name_order() -> None:
    group = LayerGroup("cuda", "")
    packages = [pkg(n) for n in ("a", "b", "c", "d")]
    sizes = {p.filename: s for p, s in zip(packages, (6, 5, 4, 1), strict=True)}
    layers = split(group, packages, sizes, limit=10)
    assert [(x.name, [p.name for p in x.packages], x.installed_bytes) for x in layers] == \
        [("cuda-1", ["a"], 6), ("cuda-2", ["b", "c", "d"], 10)]
    assert [x.name for x in split(group, packages, sizes, limit=100)] == ["cuda"]
    with pytest.raises(InputError, match="more than the layer limit"):
        split(group, packages, sizes, limit=5)


def test_wheel_tags_against_bases() -> None:
    bases = load_bases()
    debian = find_base("local/debian-py:bookworm", bases)
    ubuntu = find_base("nvidia/cuda:13.1.0-base-ubuntu24.04", bases)
    files = ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "idna-3.20-py3-none-any.whl",
             "cryptography-50.0.2-cp311-abi3-manylinux_2_38_x86_64.whl",
             "torch-2.10.0-cp312-cp312-manylinux_2_28_aarch64.whl"]
    assert incompatible_wheels(files, debian) == [files[2], files[3]]  # needs glibc 2.38; aarch64
    assert incompatible_wheels(files, ubuntu) == [files[0]]  # cp311 on Python 3.12 (abi3 is fine)


def test_unknown_base_names_the_data_file() -> None:
    with pytest.raises(InputError, match=r"unknown base image 'nvidia/cuda:99'.*assemble/data/bases.toml"):
        find_base("nvidia/cuda:99", load_bases())


def test_ci_release_spec() -> None:
    f = Factory(RECIPES, CI_RELEASES, CI_RELEASES)
    [spec] = image_specs(f.release(str(CI_RELEASES / "ci.toml")), RECIPES)
    assert spec.ref() == "wheelfactory-ci/vllm:0.14.1-t4" and spec.base == "local/debian-py:bookworm"


def test_jit_images_get_a_host_compiler_and_a_complete_toolkit_root(factory: Factory) -> None:
    # FlashInfer's JIT, run on a GPU against the wheels' nvidia/cu13 root (bench/GPU-PROOF.md), links
    # with `c++ ... -L$CUDA_HOME/lib64 -lcudart`: the image needs g++, lib64/ and libcudart.so.
    from assemble.dockerfile import render_dockerfile
    from assemble.spec import jit_root_links

    spec = next(s for s in image_specs(factory.release("0.15.0-t4"), RECIPES) if s.variant == "runtime")
    home = spec.env["CUDA_HOME"]
    assert home.endswith("/nvidia/cu13")
    assert jit_root_links(spec.env) == [("lib64", "lib"), ("lib/libcudart.so", "libcudart.so.13")]
    assert jit_root_links({}) == []
    text = render_dockerfile(spec, find_base(spec.base, load_bases()), [("cuda", "CUDA wheels")])
    assert "--no-install-recommends g++ python3 python3-venv" in text
    assert text.index("ln -s libcudart.so.13") < text.index("ENV ")


@pytest.mark.slow  # runs sh
def test_the_jit_root_run_line_works_in_a_posix_shell(tmp_path) -> None:
    import subprocess

    from assemble.dockerfile import _jit_root

    # The RUN line works in a POSIX shell, twice (idempotent), and fails when libcudart.so.N is missing.
    root = tmp_path / "cu13"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libcudart.so.13").write_bytes(b"")
    run = _jit_root({"CUDA_HOME": str(root)})[1].removeprefix("RUN ").replace("\\\n", "")
    for _ in range(2):
        assert subprocess.run(["sh", "-c", run]).returncode == 0
    assert (root / "lib64").readlink().as_posix() == "lib" and (root / "lib64" / "libcudart.so").exists()
    assert (root / "lib" / "libcudart.so").readlink().as_posix() == "libcudart.so.13"
    (root / "lib" / "libcudart.so.13").unlink()
    assert subprocess.run(["sh", "-c", run]).returncode != 0


def test_cuda_13_1_image_states_its_driver_floor_and_gates_on_it(factory: Factory) -> None:
    [spec] = image_specs(factory.release("0.33.0-t5"), RECIPES)
    ns = "dev.wheelfactory"
    assert spec.labels[f"{ns}.min_driver"] == "580" and spec.labels[f"{ns}.ptx_driver"] == "590.44.01"
    assert spec.entrypoint and spec.env["WHEELFACTORY_MIN_DRIVER"] == "580"
    # never CUDA's forward-compatibility libcuda on the library path
    assert not any("LD_LIBRARY_PATH" in k or "compat" in v for k, v in spec.env.items())

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.cuda.cuda_arch import devices_of, gencode_flags, parse_arch_list, torch_arch_list


def test_spark_arch_gives_sm121_gencode():
    archs = parse_arch_list(["12.1a"])
    assert gencode_flags(archs, keep_suffix=False) == ["-gencode=arch=compute_121,code=sm_121"]
    assert gencode_flags(archs) == ["-gencode=arch=compute_121a,code=sm_121a"]
    assert torch_arch_list(archs) == "12.1a"


def test_several_arches_and_ptx():
    archs = parse_arch_list(["9.0;12.1a", "12.0+PTX"])
    assert gencode_flags(archs, keep_suffix=False) == [
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_121,code=sm_121",
        "-gencode=arch=compute_120,code=sm_120",
        "-gencode=arch=compute_120,code=compute_120",
    ]
    assert torch_arch_list(archs) == "9.0;12.1a;12.0+PTX"


@pytest.mark.parametrize("bad", ["sm_121", "12", "12.1b", "12.10", ""])
def test_bad_arches_are_rejected(bad):
    with pytest.raises(InputError):
        parse_arch_list([bad])


def test_devices_of_an_arch_list():
    assert devices_of(["9.0a;12.1a", "12.1", "8.0+PTX"]) == ((9, 0), (12, 1), (8, 0))


def test_an_empty_arch_list_is_refused():
    with pytest.raises(InputError, match="empty CUDA arch list: name at least one arch, e.g. '12.1a'"):
        devices_of([" ", ";"])


def test_full_width_digits_are_refused_everywhere_an_arch_is_read():
    with pytest.raises(InputError, match="ASCII digits only"):
        parse_arch_list(["\uff11\uff12.1a"])
    with pytest.raises(InputError, match="ASCII digits only"):
        devices_of(["9.0;\uff11\uff12.1"])

"""The CUDA compatibility rules, row by row, with the cases NVIDIA's guide gives."""

import pytest

from wheelfactory.core.errors import InputError
from wheelfactory.cuda import cuda_compat as cc


@pytest.mark.parametrize(("code", "device", "expected"), [
    # plain SASS: same major, equal or higher minor
    ("sm_120", "12.1", "native"),
    ("sm_120", "12.0", "native"),
    ("sm_121", "12.0", "none"),
    ("sm_80", "8.9", "native"),
    ("sm_80", "9.0", "none"),       # another major: SASS never crosses majors
    ("sm_90", "12.1", "none"),
    # arch-specific: exactly that device
    ("sm_120a", "12.1", "none"),    # the QuTLASS trap: 12.0-only code in a GB10 build
    ("sm_121a", "12.1", "native"),
    ("sm_90a", "9.0", "native"),
    ("sm_100a", "10.3", "none"),
    # family-specific: same major, minor not older
    ("sm_120f", "12.1", "native"),
    ("sm_120f", "12.0", "native"),
    ("sm_121f", "12.0", "none"),
    ("sm_100f", "10.3", "native"),
    ("sm_103f", "10.0", "none"),
    ("sm_100f", "12.1", "none"),
    # PTX: JIT on anything not older, across majors
    ("compute_80", "12.1", "jit"),
    ("compute_90", "9.0", "jit"),
    ("compute_121", "12.0", "none"),
    ("compute_120a", "12.1", "none"),
    ("compute_121a", "12.1", "jit"),
    ("compute_120f", "12.1", "jit"),
    ("compute_120f", "13.0", "none"),
])
def test_how_a_device_loads_code(code, device, expected):
    assert cc.how_loaded(code, device) == expected


def test_an_object_counts_its_best_code():
    # Marlin as vLLM 0.14.1 compiles it for a 12.1a release: sm_80 SASS + compute_80 PTX.
    assert cc.best(["sm_80", "compute_80"], "12.1") == "jit"
    assert cc.best(["sm_80", "compute_80", "sm_120f"], "12.1") == "native"
    assert cc.best(["sm_120a"], "12.1") == "none"
    assert cc.best([], "12.1") == "none"


def test_foreign_arch_specific_code():
    gb10 = [(12, 1)]
    assert cc.is_foreign_specific("sm_120a", gb10)
    assert not cc.is_foreign_specific("sm_121a", gb10)
    assert not cc.is_foreign_specific("sm_120f", gb10)   # family code is not arch-specific
    assert cc.is_foreign_specific("sm_90a", gb10)
    assert not cc.is_foreign_specific("sm_90a", [(9, 0), (12, 1)])


def test_a_device_is_named_as_an_arch_list_entry():
    assert cc.parse_device("12.1") == cc.parse_device(" 12.1a ") == cc.parse_device("12.1+PTX") == (12, 1)
    with pytest.raises(InputError, match="bad CUDA arch 'sm_121'"):
        cc.parse_device("sm_121")


@pytest.mark.parametrize("bad", ["sm121", "sm_1", "compute_120x", "sass_90"])
def test_bad_code_names(bad):
    with pytest.raises(InputError, match="bad device code"):
        cc.parse_code(bad)


def test_rules_file_must_cover_every_form(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\nkind = "sass"\nsuffix = ""\nloads_on = "exact"\njit = false\n')
    with pytest.raises(InputError, match="no rule for"):
        cc.rules(path)
    path.write_text('[[rule]]\nkind = "sass"\nsuffix = ""\nloads_on = "sometimes"\njit = false\n')
    with pytest.raises(InputError, match="loads_on 'sometimes'"):
        cc.rules(path)

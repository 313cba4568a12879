"""Every numeric key of the pretraining config has a stated range, refused outside at load with one line."""

import functools
import re

import pytest
import torch

from common.backbone import _infer_arch
from common.errors import ConfigError
from common.trunk import resnet
from pretrain.config import ARCHS, RANGES, get_cfg, load_config


def numeric_keys(node, prefix=""):
    for name, value in node.items():
        if isinstance(value, dict):
            yield from numeric_keys(value, f"{prefix}{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{name}"


def test_every_int_and_float_key_has_a_range_that_holds_its_default():
    keys = set(numeric_keys(get_cfg()))
    assert keys - RANGES.keys() == set(), "state the range of these keys in pretrain/config.py's RANGES"
    assert RANGES.keys() - keys == set()
    load_config("", [], world_size=1)  # the defaults lie inside


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.MOMENTUM", "2.0", "MODEL.MOMENTUM is 2.0; it must be in [0, 1)"),
        ("MODEL.MOMENTUM", "1.0", "MODEL.MOMENTUM is 1.0; it must be in [0, 1)"),
        ("MODEL.TEMPERATURE", "-0.2", "MODEL.TEMPERATURE is -0.2; it must be greater than 0"),
        ("MODEL.TEMPERATURE", "0.0", "MODEL.TEMPERATURE is 0.0; it must be greater than 0"),
        ("MODEL.DDM_TEMPERATURE", "0.0", "MODEL.DDM_TEMPERATURE is 0.0; it must be greater than 0"),
        ("MODEL.DDM_TEMPERATURE", "1e999", "MODEL.DDM_TEMPERATURE is inf; it must be in (0, inf)"),
        ("DATA.STRONG_PROB", "1.5", "DATA.STRONG_PROB is 1.5; it must be in [0, 1]"),
        ("KNN.PERIOD_EPOCHS", "0", "KNN.PERIOD_EPOCHS is 0; it must be greater than 0"),
        ("SEED", "-1", "SEED is -1; it must be in [0, 18446744073709551616)"),
    ],
)
def test_a_value_out_of_range_is_one_line_naming_key_value_and_range(key, value, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config("", [key, value], world_size=1)


def test_nan_from_a_config_file_is_refused(tmp_path):
    (tmp_path / "nan.yaml").write_text("SOLVER:\n  BASE_LR: .nan\n")
    with pytest.raises(ConfigError, match="^SOLVER.BASE_LR is nan; it must be greater than 0$"):
        load_config(str(tmp_path / "nan.yaml"), [], world_size=1)


def test_the_bounds_are_inclusive_or_exclusive_as_written():
    cfg = load_config("", ["MODEL.MOMENTUM", "0.0", "DATA.STRONG_PROB", "1.0", "DATA.NUM_WORKERS", "0"], 1)
    assert [functools.reduce(getattr, k.split("."), cfg) for k in ("MODEL.MOMENTUM", "DATA.STRONG_PROB")] == [0, 1]


def test_an_unknown_arch_is_refused_at_load_with_the_valid_names():
    with pytest.raises(ConfigError, match="^MODEL.ARCH 'resnet5' is not one of resnet18, resnet34, resnet50,"):
        load_config("", ["MODEL.ARCH", "resnet5"], world_size=1)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_a_run_accepts_is_identified_from_its_weights(arch):
    with torch.device("meta"):  # names and shapes only
        state = resnet(arch).state_dict()
    assert _infer_arch("ckpt.pth", state) == arch

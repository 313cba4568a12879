"""`pretrain/config.py`: the presets, and every mistake in a config refused before a process starts."""

import re
from pathlib import Path

import pytest

from common.errors import ConfigError
from pretrain.config import load_config

PRESETS = sorted((Path(__file__).resolve().parents[2] / "pretrain" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_with_paper_defaults_and_its_views(preset):
    cfg = load_config(str(preset), [], world_size=8)
    assert cfg.OUTPUT_DIR.endswith(preset.stem) and cfg.DATA.KEY_VIEW == [224, 0.2, 1.0]
    assert (
        cfg.MODEL.QUEUE_SIZE,
        cfg.MODEL.MOMENTUM,
        cfg.MODEL.TEMPERATURE,
        cfg.MODEL.DDM_TEMPERATURE,
        cfg.MODEL.DDM_WEIGHT,
        cfg.MODEL.DIM,
        cfg.MODEL.MLP_HIDDEN,
    ) == (65536, 0.999, 0.2, 0.2, 1.0, 128, 2048)
    assert (
        cfg.SOLVER.BATCH_SIZE,
        cfg.SOLVER.BASE_LR,
        cfg.SOLVER.MOMENTUM,
        cfg.SOLVER.WEIGHT_DECAY,
        cfg.SOLVER.EPOCHS,
    ) == (256, 0.03, 0.9, 1e-4, 200)
    expected_loss = (
        "contrastive"
        if preset.stem in ("mocov2_strong_query", "mocov2_strong_query_key", "clsa_single_contrastive")
        else "ddm"
    )
    assert cfg.MODEL.STRONG_LOSS == expected_loss


def test_unknown_config_key_is_a_clear_error():
    with pytest.raises(ConfigError, match="MODEL.QUEUE_SIZ.*pretrain/config.py"):
        load_config("", ["MODEL.QUEUE_SIZ", "4096"], world_size=1)


def test_queue_not_a_multiple_of_the_global_batch_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"QUEUE_SIZE \(1000\).*SOLVER.BATCH_SIZE \(256\)"):
        load_config("", ["MODEL.QUEUE_SIZE", "1000"], world_size=1)
    with pytest.raises(ConfigError, match="divisible by the 3 processes"):
        load_config("", [], world_size=3)


def test_augment_defaults_to_auto_and_rejects_unknown_values():
    assert load_config("", [], world_size=1).DATA.AUGMENT == "auto"
    with pytest.raises(ConfigError, match="DATA.AUGMENT 'gpu' is not one of"):
        load_config("", ["DATA.AUGMENT", "gpu"], world_size=1)


@pytest.mark.parametrize(
    "override, message",
    [
        (("SOLVER.BATCH_SIZE", "0"), "SOLVER.BATCH_SIZE is 0; it must be greater than 0"),
        (("SOLVER.BASE_LR", "-0.03"), "SOLVER.BASE_LR is -0.03; it must be greater than 0"),
        (("SOLVER.EPOCHS", "0"), "SOLVER.EPOCHS is 0; it must be greater than 0"),
        (("DATA.NUM_WORKERS", "-1"), "DATA.NUM_WORKERS is -1; it must be at least 0"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        load_config("", list(override), world_size=1)

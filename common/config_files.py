"""Merging a YAML config file and KEY VALUE overrides into a yacs config (pretraining's and
detectron2's), with a one-line ConfigError for every mistake a user can make there."""

import os

from common.errors import ConfigError


def merge_config(cfg, config_file, opts, where_keys_are):
    """`cfg` with `config_file`, then the KEY VALUE `opts`, merged in. `where_keys_are(message)` is the
    hint added to an unknown key's error (where the valid keys are documented)."""
    misplaced = [opt for opt in opts[::2] if opt.startswith("-")]
    if misplaced:
        raise ConfigError(f"{misplaced[0]} comes after the KEY VALUE overrides; put options before them")
    if len(opts) % 2:
        raise ConfigError(f"config overrides come in KEY VALUE pairs, got {opts}")
    if config_file and not os.path.isfile(config_file):
        raise ConfigError(f"--config-file {config_file}: no such file")
    # yacs reports an unknown key with a KeyError (files) or an assert (overrides), and a value of
    # the wrong type with a ValueError.
    try:
        if config_file:
            cfg.merge_from_file(config_file)
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"{config_file}: {e.args[0]}; {where_keys_are(e.args[0])}") from None
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"{e.args[0]} in the command-line overrides; {where_keys_are(e.args[0])}") from None
    return cfg

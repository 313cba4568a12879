"""Merging a YAML config file and KEY VALUE overrides into a yacs config (pretraining's and
detectron2's), with a one-line ConfigError for every mistake a user can make there."""

import os

import yaml

from common.errors import ConfigError

_YAML = (".yaml", ".yml")


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
    if config_file:
        check_yaml_chain(config_file)
    # yacs reports an unknown key with a KeyError (files) or an assert (overrides), and a value of
    # the wrong type with a ValueError.
    try:
        if config_file:
            # detectron2's CfgNode would otherwise retry a file with Python tags with yaml.unsafe_load.
            cfg.merge_from_file(config_file, allow_unsafe=False)
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"{config_file}: {e.args[0]}; {where_keys_are(e.args[0])}") from None
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"{e.args[0]} in the command-line overrides; {where_keys_are(e.args[0])}") from None
    return cfg


def check_yaml_chain(config_file, _chain=()):
    """ConfigError, naming the file, unless `config_file` and every file its `_BASE_` names (a path or a
    list of paths, relative to the file, as fvcore resolves them) is a YAML file of plain data (no
    Python tags) that exists, and no file is its own base."""
    chain = (*_chain, os.path.realpath(config_file))
    if chain[-1] in _chain:
        loop = " -> ".join(os.path.relpath(path) for path in chain[chain.index(chain[-1]) :])
        raise ConfigError(f"{config_file}: the _BASE_ files include each other ({loop}); remove the loop")
    if not config_file.endswith(_YAML):
        raise ConfigError(f"{config_file}: not a YAML file; a config file and its _BASE_ are .yaml files")
    if not os.path.isfile(config_file):
        raise ConfigError(f"{config_file}: no such file (a _BASE_ of {_chain[-1]})")
    try:
        with open(config_file) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{config_file}{where}: {problem}; a config file holds plain YAML data") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{config_file}: not a text file in UTF-8; a config file holds plain YAML data") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{config_file}: holds a {type(data).__name__}, not KEY: VALUE pairs")
    bases = data.get("_BASE_", [])
    for base in bases if isinstance(bases, list) else [bases]:
        if not isinstance(base, str):
            raise ConfigError(f"{config_file}: _BASE_ {base!r} is not a file name")
        if base.startswith(("https://", "http://")):
            continue  # fetched by fvcore, which loads it with allow_unsafe=False as well
        base = os.path.expanduser(base)
        check_yaml_chain(base if os.path.isabs(base) else os.path.join(os.path.dirname(config_file), base), chain)

"""A config file that is not plain YAML data is one ConfigError naming it, and its code never runs."""

import pytest
from fvcore.common.config import CfgNode

from common.config_files import merge_config
from common.errors import ConfigError


def merge(config_file):
    cfg = CfgNode({"LR": 0.1})
    return merge_config(cfg, str(config_file), [], lambda _: "see the defaults")


@pytest.mark.parametrize(
    "text, message",
    [
        ("LR: [0.1\n", r"a.yaml, line 2: expected ',' or '\]', but got '<stream end>'; a config file holds plain YAML"),
        ("LR: 0.1\n\tX: 1\n", r"a.yaml, line 2: found character '\\t' that cannot start any token"),
        ("- LR\n", "a.yaml: holds a list, not KEY: VALUE pairs"),
    ],
)
def test_a_yaml_syntax_error_is_one_line_with_the_file_and_line(tmp_path, text, message):
    (tmp_path / "a.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        merge(tmp_path / "a.yaml")


def test_a_python_tag_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "a.yaml").write_text(f"LR: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="a.yaml, line 1: could not determine a constructor for the tag"):
        merge(tmp_path / "a.yaml")
    assert not marker.exists()


def test_a_python_file_as_base_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "base.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (tmp_path / "a.yaml").write_text("_BASE_: base.py\nLR: 0.2\n")
    with pytest.raises(ConfigError, match="base.py: not a YAML file; a config file and its _BASE_ are .yaml files"):
        merge(tmp_path / "a.yaml")
    assert not marker.exists()


@pytest.mark.parametrize(
    "files, loop",
    [
        ({"a.yaml": "_BASE_: a.yaml\n"}, "a.yaml -> a.yaml"),
        (
            {"a.yaml": "_BASE_: [c.yaml, b.yaml]\n", "b.yaml": "_BASE_: a.yaml\n", "c.yaml": "LR: 1\n"},
            "a.yaml -> b.yaml -> a.yaml",
        ),
    ],
)
def test_a_base_that_includes_itself_is_one_line_naming_the_loop(tmp_path, monkeypatch, files, loop):
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=f"the _BASE_ files include each other \\({loop}\\); remove the loop"):
        merge("a.yaml")


def test_a_missing_base_names_the_file_that_names_it(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone.yaml: no such file \(a _BASE_ of .*a.yaml\)"):
        merge(tmp_path / "a.yaml")


def test_a_chain_of_plain_files_merges(tmp_path):
    (tmp_path / "base.yaml").write_text("LR: 0.2\n")
    (tmp_path / "a.yaml").write_text("_BASE_: base.yaml\n")
    assert merge(tmp_path / "a.yaml").LR == 0.2

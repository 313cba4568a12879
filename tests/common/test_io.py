import hashlib
import json

import pytest

from common.io import atomic_path, atomic_write_json, sha256_file


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json({"ap": 1.0}, target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a file")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"ap": 1.0}
    assert list(tmp_path.iterdir()) == [target], "no temporary file may be left behind"


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    atomic_write_json({}, tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{}")
    assert (tmp_path / "a.json").stat().st_mode == (tmp_path / "b.json").stat().st_mode


def test_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=1000) == hashlib.sha256(data).hexdigest()

import json

import pytest

from pytest_axion.files import write_json_atomically


def test_atomic_write_leaves_only_the_file(tmp_path):
    target = tmp_path / "out" / "r.json"
    write_json_atomically(target, {"b": 1, "a": [1.5]})
    assert json.loads(target.read_text()) == {"a": [1.5], "b": 1}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text('{"old": true}')
    with pytest.raises(ValueError):
        write_json_atomically(target, {"x": float("nan")})  # NaN is not JSON
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_new_files_get_the_usual_mode_and_replaced_files_keep_theirs(tmp_path):
    import os
    umask = os.umask(0o022)
    try:
        target = tmp_path / "r.json"
        write_json_atomically(target, {"a": 1})
        assert target.stat().st_mode & 0o777 == 0o644
        target.chmod(0o640)
        write_json_atomically(target, {"a": 2})
        assert target.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)

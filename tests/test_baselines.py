import json
import multiprocessing
import os

import pytest

from pytest_axion import baselines
from pytest_axion.baselines import (
    Baseline,
    BaselineEntry,
    baseline_files,
    baseline_from_json,
    baseline_path,
    read_baseline,
    summarise_entries,
    write_baseline,
)
from pytest_axion.errors import BaselineError, HardwareIdError
from pytest_axion.hardware import collect_hardware

HARDWARE = collect_hardware(system_info="CPU : AVX2 = 1 | REPACK = 1 |", hardware_id_override="hw-1",
                            override_source="test").to_json()
PROVENANCE = {"recorded_at": "2026-11-25T03:00:00+00:00", "git_commit": None, "llama_cpp_python": "0.3.36",
              "llama_cpp_system_info": {"AVX2": "1"}, "pytest_axion": "0.1.0",
              "model": {"sha256": "a" * 64, "file_name": "m.gguf", "quantization": "Q4_1"},
              "hardware": HARDWARE, "threads": 2}


def make_baseline(level=100.0, runs=3):
    entry = BaselineEntry(nodeid="t.py::test", metric="prompt_tps", batch_size=1, n_prompt=512, n_gen=0, threads=2,
                          unit="tokens/s",
                          runs=tuple(tuple(level * f for f in (0.98, 1.0, 1.02)) for _ in range(runs)))
    return Baseline(hardware_id="hw-1", model_label="m.Q4_1", provenance=PROVENANCE,
                    entries={"t.py::test::prompt_tps::b1::pp512::tg0::t2": entry})


def test_round_trip_keeps_every_run_and_sorted_keys(tmp_path):
    path = baseline_path(tmp_path, "hw-1", "m.Q4_1")
    write_baseline(path, make_baseline())
    assert path == tmp_path / "hw-1" / "m.Q4_1.json"
    assert read_baseline(path) == make_baseline()
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert baseline_files(tmp_path) == [path]


def test_level_and_between_run_spread():
    entry = BaselineEntry("n", "gen_tps", 1, 0, 128, 2, "tokens/s", ((90.0, 100.0, 110.0), (120.0,), (80.0, 81.0)))
    assert entry.run_medians == (100.0, 120.0, 80.5)
    assert entry.level == 100.0 and entry.between_run_cv == pytest.approx(0.1975, abs=1e-3)
    assert summarise_entries(make_baseline())[0]["runs"] == 3


@pytest.mark.parametrize("hardware_id", ["../x", "a/b", ".hidden"])
def test_paths_refuse_unsafe_hardware_ids(tmp_path, hardware_id):
    with pytest.raises(HardwareIdError):
        baseline_path(tmp_path, hardware_id, "m")


def broken(tmp_path, text):
    path = tmp_path / "hw-1" / "m.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def good_json():
    return make_baseline().to_json()


def mutate(change):
    data = good_json()
    change(data)
    return json.dumps(data)


ENTRY = "t.py::test::prompt_tps::b1::pp512::tg0::t2"


@pytest.mark.parametrize("text, expected", [
    ("{not json", "is not valid JSON"),
    (json.dumps(good_json())[:200], "is not valid JSON"),
    (mutate(lambda d: d.update(schema_version=2)), "has schema_version 2, this pytest-axion reads 1"),
    (mutate(lambda d: d.pop("provenance")), "violates the baseline schema at top level: 'provenance' is a required"),
    (mutate(lambda d: d.update(extra=1)), "Additional properties are not allowed ('extra'"),
    (mutate(lambda d: d["entries"][ENTRY]["runs"][0]["samples"].append(-5)),
     f"violates the baseline schema at entries/{ENTRY}/runs/0/samples/3"),
    (mutate(lambda d: d["entries"][ENTRY]["runs"][0]["samples"].append(float("inf"))), "is not valid JSON"),
    (mutate(lambda d: d["entries"][ENTRY]["runs"][0]["samples"].append(float("nan"))), "is not valid JSON"),
    (mutate(lambda d: d.update(hardware_id="../../etc")), "violates the baseline schema at hardware_id"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"a":' * 20 + "1" + "}" * 20, "nested too deeply"),
    (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
])
def test_bad_files_are_one_line_errors_naming_the_file_and_stay_untouched(tmp_path, text, expected):
    path = broken(tmp_path, text)
    before = path.read_bytes()
    with pytest.raises(BaselineError) as err:
        read_baseline(path)
    message = str(err.value)
    assert expected in message, message
    assert str(path) in message and "\n" not in message
    assert path.read_bytes() == before


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(baselines, "MAX_BASELINE_BYTES", 100)
    path = broken(tmp_path, json.dumps(good_json()))
    with pytest.raises(BaselineError, match="above the 100 cap"):
        read_baseline(path)


def test_an_invalid_baseline_is_never_written(tmp_path):
    path = baseline_path(tmp_path, "hw-1", "m")
    write_baseline(path, make_baseline())
    before = path.read_bytes()
    bad = make_baseline()
    bad.entries[ENTRY] = BaselineEntry("n", "prompt_tps", 1, 512, 0, 2, "tokens/s", ((-1.0,),))
    with pytest.raises(BaselineError):
        write_baseline(path, bad)
    assert path.read_bytes() == before


def test_read_only_folder_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "blocker"
        target.write_text("a file where the folder should be")
        path = target / "m.json"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        path = tmp_path / "ro" / "m.json"
    with pytest.raises(BaselineError, match="cannot write baseline file"):
        write_baseline(path, make_baseline())


def _write_many(root, level, count):
    for _ in range(count):
        write_baseline(baseline_path(root, "hw-1", "m"), make_baseline(level=level))


def test_concurrent_writers_leave_a_whole_file_from_one_of_them(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(tmp_path, level, 20)) for level in (100.0, 200.0)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    result = read_baseline(baseline_path(tmp_path, "hw-1", "m"))
    assert result.entries[ENTRY].level in (100.0, 200.0)
    assert sorted(p.name for p in (tmp_path / "hw-1").iterdir()) == ["m.json"]


def test_schema_accepts_what_the_writer_writes():
    assert baseline_from_json(json.loads(json.dumps(good_json())), source="x") == make_baseline()

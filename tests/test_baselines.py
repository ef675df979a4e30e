import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_axion import schemas
from pytest_axion.errors import BaselineError, HardwareIdError
from pytest_axion.machine.hardware import collect_hardware
from pytest_axion.store import baselines
from pytest_axion.store.baselines import (
    Baseline,
    BaselineEntry,
    baseline_files,
    baseline_from_json,
    baseline_path,
    check_writable,
    read_baseline,
    summarise_entries,
    update_baseline,
    write_baseline,
)

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
    (mutate(lambda d: d.update(schema_version=4)), "has schema_version 4, this pytest-axion reads 1, 2 and 3"),
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


def test_oversized_file_is_refused_after_reading_no_more_than_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(baselines, "MAX_BASELINE_BYTES", 100)
    path = broken(tmp_path, json.dumps(good_json()))
    with pytest.raises(BaselineError, match="is over the 100-byte cap: it is not a baseline"):
        read_baseline(path)


def test_an_endless_stream_or_a_pipe_is_refused_without_reading_it(tmp_path):
    hw = tmp_path / "hw-1"
    hw.mkdir()
    (hw / "m.json").symlink_to("/dev/zero")
    os.mkfifo(hw / "pipe.json")   # opening a FIFO without a writer would block forever
    for name in ("m.json", "pipe.json"):
        with pytest.raises(BaselineError, match="is not a regular file: restore it"):
            read_baseline(hw / name)


def test_a_hardware_id_with_dots_inside_the_provenance_is_refused(tmp_path):
    data = json.loads(json.dumps(good_json()))   # a deep copy: the fixture's dicts are shared
    data["provenance"]["hardware"]["hardware_id"] = "../../etc"
    with pytest.raises(BaselineError, match=r"invalid hardware id '\.\./\.\./etc'"):
        read_baseline(broken(tmp_path, json.dumps(data)))


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


def in_two_processes(target, *argument_lists):
    """Run ``target`` in separate processes at once and check that each finished cleanly."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=target, args=args) for args in argument_lists]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0


def test_concurrent_writers_leave_a_whole_file_from_one_of_them(tmp_path):
    in_two_processes(_write_many, (tmp_path, 100.0, 20), (tmp_path, 200.0, 20))
    result = read_baseline(baseline_path(tmp_path, "hw-1", "m"))
    assert result.entries[ENTRY].level in (100.0, 200.0)
    assert sorted(p.name for p in (tmp_path / "hw-1").iterdir()) == ["m.json"]


def test_schema_accepts_what_the_writer_writes():
    assert baseline_from_json(json.loads(json.dumps(good_json())), source="x") == make_baseline()


def _add_entries(root, tag, count):
    """One refresh after another, each adding its own entry by read-modify-write."""
    def add(key):
        def update(current):
            entry = dataclasses.replace(make_baseline().entries[ENTRY], nodeid=key)
            entries = dict(current.entries) if current else {}
            entries[f"{key}::prompt_tps::b1::pp512::tg0::t2"] = entry
            return dataclasses.replace(make_baseline(), entries=entries)
        return update
    for i in range(count):
        update_baseline(baseline_path(root, "hw-1", "m"), add(f"t.py::test_{tag}_{i}"))


def test_two_refreshes_at_once_lose_no_entry_of_either(tmp_path):
    in_two_processes(_add_entries, (tmp_path, "a", 15), (tmp_path, "b", 15))
    result = read_baseline(baseline_path(tmp_path, "hw-1", "m"))
    assert len(result.entries) == 30   # without the lock around read-modify-write, one side's entries vanish


def test_kill_9_in_the_middle_of_a_write_keeps_the_old_file_and_the_leftover_is_cleaned(tmp_path):
    path = baseline_path(tmp_path, "hw-1", "m")
    write_baseline(path, make_baseline(level=100.0))
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pytest_axion import files
        from tests.test_baselines import make_baseline
        from pytest_axion.store.baselines import write_baseline
        # die like kill -9 at the worst moment: the new file is complete but not yet renamed
        files.os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        write_baseline(Path({str(path)!r}), make_baseline(level=200.0))
        """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(os.path.dirname(__file__)))
    assert killed.returncode == -9
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "m.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".m.json.") and leftovers[0].endswith(".tmp")
    assert path.read_bytes() == before and baseline_files(tmp_path) == [path]   # readers never see it
    write_baseline(path, make_baseline(level=300.0))   # the next writer holds the lock: the leftover is stale
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json"]
    assert read_baseline(path).entries[ENTRY].level == 300.0


def test_an_unwritable_folder_is_found_before_measuring(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(BaselineError, match=r"cannot write baseline file .*make the baselines folder writable"):
        check_writable(blocker / "hw" / "m.json")
    check_writable(tmp_path / "fine" / "m.json")


def test_the_fast_schema_check_refuses_whatever_jsonschema_refuses():
    broken_ones = [mutate(lambda d: d.pop("provenance")), mutate(lambda d: d.update(extra=1)),
                   mutate(lambda d: d.update(hardware_id="../../etc")),
                   mutate(lambda d: d["entries"][ENTRY]["runs"][0]["samples"].__setitem__(0, -5)),
                   mutate(lambda d: d["entries"][ENTRY]["runs"][0]["samples"].__setitem__(0, 0)),
                   mutate(lambda d: d["entries"][ENTRY]["runs"][0].update(samples=[])),
                   mutate(lambda d: d["entries"][ENTRY].update(unit="furlongs"))]
    for text in broken_ones:
        data = json.loads(text)
        assert not schemas.baseline_validator().is_valid(data)
        assert not schemas.baseline_quickly_valid(data), text[:200]
    assert schemas.baseline_quickly_valid(good_json())

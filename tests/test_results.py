"""Results that outlive a run: the result store, persisted results and the cache.

The store is tested on its own (formats, atomic writes, corruption) through a
directory and a file:// URI; persisting and caching through real runs on both
runners, counting executions with a side effect in a file.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from cli_runner import run_cli, run_cli_in_process

import rayflow as rf
from rayflow.results import ResultStore
from rayflow.states import StateType as T
from rayflow.store import RunStore


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAYFLOW_RESULTS", raising=False)
    return tmp_path / "home"


def on(flow, runner):
    return flow.with_options(runner=runner)


def count(marker: pathlib.Path) -> int:
    return marker.read_text().count("ran\n") if marker.exists() else 0


# -- the store ------------------------------------------------------------------------------

VALUES = {
    "table": pa.table({"a": [1, 2, None], "b": ["x", "y", "z"]}),
    "batch": pa.RecordBatch.from_pydict({"a": [1.5, 2.5]}),
    "array": pa.array([1, None, 3]),
    "chunked": pa.chunked_array([[1, 2], [3]]),
    "int32": np.arange(5, dtype=np.int32),
    "floats": np.array([0.5, np.nan]),
    "bools": np.array([True, False]),
    "dates": np.array(["2026-01-01", "2026-02-01"], dtype="datetime64[D]"),
    "frame": pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}, index=pd.Index(["r1", "r2"], name="row")),
    "matrix": np.ones((2, 3)),
    "python": {"key": (1, "two", 3.0), "nested": [None, {"deep": b"bytes"}]},
}


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, pd.DataFrame):
        return isinstance(b, pd.DataFrame) and a.equals(b) and a.index.equals(b.index) and a.index.name == b.index.name
    if isinstance(a, (pa.Table, pa.RecordBatch, pa.Array, pa.ChunkedArray)):
        return type(a) is type(b) and a.equals(b)
    return a == b


@pytest.mark.parametrize("uri", [False, True], ids=["directory", "file-uri"])
def test_values_round_trip_through_the_store_in_their_own_format(tmp_path, uri):
    location = ("file://" if uri else "") + str(tmp_path / "store")
    store = ResultStore(location)
    arrow = {"table", "batch", "array", "chunked", "int32", "floats", "bools", "dates", "frame"}
    for name, value in VALUES.items():
        path = store.write(f"runs/r1/{name}", value)
        assert path.endswith(".arrow" if name in arrow else ".pkl"), (name, path)
        assert _same(value, store.read(path)), name
    listed = sorted(f.path for f in store.list("runs"))
    assert listed == sorted(store.find(f"runs/r1/{n}") for n in VALUES)
    assert ResultStore(location).read("runs/r1/frame.arrow").index.name == "row"  # a new store, the same files


def test_writes_are_atomic_and_leftovers_of_a_crash_are_never_read(tmp_path):
    store = ResultStore(str(tmp_path))
    store.write("cache/f/t/k", [1, 2, 3])
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    # a crash mid-write leaves only a temporary file: not listed, not found
    (tmp_path / "cache/f/t/.tmp-dead-k2.pkl").write_bytes(b"half a pick")
    assert store.find("cache/f/t/k2") is None
    assert [f.path for f in store.list("cache")] == ["cache/f/t/k.pkl"]
    # a value replaced by one of another format leaves one file under the name
    store.write("cache/f/t/k", pa.array([1]))
    assert store.find("cache/f/t/k") == "cache/f/t/k.arrow" and not (tmp_path / "cache/f/t/k.pkl").exists()


def test_a_corrupted_or_missing_file_is_a_clear_error_naming_it(tmp_path):
    store = ResultStore(str(tmp_path))
    for name, value in (("p", {"a": 1}), ("a", pa.table({"x": [1, 2, 3]}))):
        path = store.write(name, value)
        full = tmp_path / path
        full.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
        with pytest.raises(rf.CorruptResultError, match=str(full)) as info:
            store.read(path)
        assert info.value.path == str(full)
    with pytest.raises(rf.MissingResultError, match="nope.pkl"):
        store.read("nope.pkl")
    with pytest.raises(rf.ResultStoreError, match="nosuch://"):
        ResultStore("nosuch://bucket/x")


# -- persisting -----------------------------------------------------------------------------


@rf.task(persist=True)
def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"i": range(n)})


@rf.task
def total(df: pd.DataFrame) -> int:
    return int(df["i"].sum())


@rf.flow
def persisted(n: int = 4):
    return total(frame(n))


def test_persisted_results_are_written_by_the_worker_and_read_back(home, runner):
    run = on(persisted, runner).run(n=4)
    assert run.result() == 6
    store = ResultStore()
    assert store.location == str((home / "results").resolve())
    path = store.find(f"runs/{run.run_id}/frame")
    assert path is not None and path.endswith(".arrow")  # a DataFrame is stored as Arrow
    assert store.read(path).equals(pd.DataFrame({"i": range(4)}))
    assert store.find(f"runs/{run.run_id}/total") is None  # not asked for

    everything = on(persisted, runner).with_options(persist=True, result_storage="file://" + str(home / "elsewhere")).run(n=2)
    other = ResultStore("file://" + str(home / "elsewhere"))
    assert other.read(other.find(f"runs/{everything.run_id}/total")) == 1
    assert other.find(f"runs/{everything.run_id}/frame") is not None


def test_a_bad_result_storage_fails_before_any_work(home, tmp_path):
    marker = tmp_path / "m"

    @rf.task(persist=True)
    def side_effect() -> int:
        marker.write_text("ran\n")
        return 1

    @rf.flow(result_storage="nosuch://bucket/prefix")
    def nowhere():
        return side_effect()

    with pytest.raises(rf.ResultStoreError, match="nosuch://bucket/prefix"):
        on(nowhere, "local").run()
    assert not marker.exists()


# -- caching --------------------------------------------------------------------------------


def _cached_flow(marker: pathlib.Path, **options):
    @rf.task(name="slow", cache_key_fn=rf.cache.inputs, **options)
    def slow(x: int, path: str) -> int:
        with open(path, "a") as f:
            f.write("ran\n")
        return x * 10

    @rf.flow(name="cached")
    def cached(x: int = 1):
        return slow(x, str(marker))

    return cached


def test_a_cache_hit_skips_execution_and_a_new_input_misses(home, runner, tmp_path):
    marker = tmp_path / "count"
    flow = on(_cached_flow(marker), runner)
    first, second, other = flow.run(x=1), flow.run(x=1), flow.run(x=2)
    assert (first.result(), second.result(), other.result()) == (10, 10, 20)
    assert count(marker) == 2
    assert [r.task_states["slow"].type for r in (first, second, other)] == [T.SUCCESS, T.CACHED, T.SUCCESS]
    assert second.task_states["slow"].message.startswith("cache hit: cache/cached/slow/")
    assert second.state.is_successful()


def test_expiry_and_a_code_change_invalidate(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_cached_flow(marker, cache_expiration=datetime.timedelta(hours=1)), "local")
    flow.run(x=1)
    flow.run(x=1)
    assert count(marker) == 1
    for path in (home / "results" / "cache").rglob("*.pkl"):  # age the entry past its expiry
        old = time.time() - 7200
        os.utime(path, (old, old))
    assert flow.run(x=1).task_states["slow"].type is T.SUCCESS
    assert count(marker) == 2
    assert flow.run(x=1).task_states["slow"].type is T.CACHED  # the new entry counts again

    @rf.task(name="slow", cache_key_fn=rf.cache.inputs)
    def slow(x: int, path: str) -> int:  # same name, same flow, different code
        with open(path, "a") as f:
            f.write("ran\n")
        return x * 100

    @rf.flow(name="cached", runner="local")
    def cached(x: int = 1):
        return slow(x, str(marker))

    assert cached.run(x=1).result() == 100
    assert count(marker) == 3


def test_refresh_cache_runs_and_replaces_the_entry(home, tmp_path):
    marker = tmp_path / "count"
    on(_cached_flow(marker), "local").run(x=1)
    refreshed = on(_cached_flow(marker, refresh_cache=True), "local").run(x=1)
    assert refreshed.task_states["slow"].type is T.SUCCESS and count(marker) == 2
    assert on(_cached_flow(marker), "local").run(x=1).task_states["slow"].type is T.CACHED
    assert count(marker) == 2


class Unpicklable:
    """A big upstream value stand-in: pickling it fails loudly, so a key that hashed it could not exist."""

    def __init__(self, n: int):
        self.n = n

    def __reduce__(self):
        raise TypeError("this value must never be pickled for a cache key")


def test_lineage_keys_never_hash_the_upstream_value_while_inputs_cannot_cache_it(home, tmp_path):
    marker = tmp_path / "count"

    @rf.task
    def big(n: int) -> Unpicklable:
        return Unpicklable(n)

    def consumer(policy):
        @rf.task(name="use", cache_key_fn=policy)
        def use(value: Unpicklable, path: str) -> int:
            with open(path, "a") as f:
                f.write("ran\n")
            return value.n

        @rf.flow(name=f"lineage_{policy!r}", runner="local")
        def lineage_flow(n: int = 3):
            return use(big(n), str(marker))

        return lineage_flow

    by_lineage = consumer(rf.cache.lineage)
    assert by_lineage.run(n=3).result() == 3
    second = by_lineage.run(n=3)
    assert second.task_states["use"].type is T.CACHED and count(marker) == 1
    assert by_lineage.run(n=4).task_states["use"].type is T.SUCCESS  # the upstream's constant changed

    by_inputs = consumer(rf.cache.inputs)
    runs = [by_inputs.run(n=3) for _ in range(2)]
    assert [r.task_states["use"].type for r in runs] == [T.SUCCESS, T.SUCCESS]  # uncached, not failed
    logs = RunStore(home).logs(runs[0].run_id)
    assert any(r["level"] == "WARNING" and "uncached" in r["message"] and "'value'" in r["message"] for r in logs)


def test_an_ignored_argument_is_left_out_of_the_key(home, tmp_path):
    marker = tmp_path / "count"

    @rf.task(cache_key_fn=rf.cache.inputs.ignoring("note"))
    def keyed(x: int, note: str, path: str) -> int:
        with open(path, "a") as f:
            f.write("ran\n")
        return x

    @rf.flow(runner="local")
    def noted(note: str = "a"):
        return keyed(1, note, str(marker))

    noted.run(note="a")
    assert noted.run(note="b").task_states["keyed"].type is T.CACHED and count(marker) == 1


def test_a_corrupted_cache_entry_is_recomputed_with_a_warning_naming_the_file(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_cached_flow(marker), "local")
    flow.run(x=1)
    (entry,) = (home / "results" / "cache").rglob("*.pkl")
    entry.write_bytes(b"\x80\x05garbage")
    again = flow.run(x=1)
    assert again.result() == 10 and again.task_states["slow"].type is T.SUCCESS and count(marker) == 2
    logs = RunStore(home).logs(again.run_id)
    assert any(r["level"] == "WARNING" and str(entry) in r["message"] and "corrupted" in r["message"] for r in logs)
    assert flow.run(x=1).task_states["slow"].type is T.CACHED  # rewritten whole


def test_two_runs_racing_on_one_key_both_finish_and_one_entry_remains(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_cached_flow(marker), "local")
    results, errors = [], []

    def go():
        try:
            results.append(flow.run(x=7).result())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and results == [70] * 4
    assert len(list((home / "results" / "cache").rglob("*.pkl"))) == 1
    assert flow.run(x=7).task_states["slow"].type is T.CACHED
    assert not [p for p in (home / "results").rglob(".tmp-*")]


# -- write-behind ---------------------------------------------------------------------------


def test_a_persisted_value_is_written_behind_its_task_and_the_run_waits_for_it(home, ray_session, tmp_path):
    import resumable

    gate = tmp_path / "opened"
    run = resumable.write_behind.with_options(runner="ray").run(path=str(gate))
    assert run.state.type is T.SUCCESS, run.state.message  # the downstream task opened the gate mid-write
    assert run.result() == "opened"
    stored = ResultStore(str(home / "results")).find(f"runs/{run.run_id}/gated")
    assert stored is not None  # written, and the run ended only after that
    assert ResultStore(str(home / "results")).read(stored).path == str(gate)


def test_in_process_a_persisted_value_is_written_before_a_downstream_task_can_edit_it(home):
    import resumable

    for _ in range(5):  # the edit and a write behind it would race: never here
        run = resumable.edited.with_options(runner="local").run(n=3)
        assert run.result() == 103
        stored = ResultStore(str(home / "results"))
        assert stored.read(stored.find(f"runs/{run.run_id}/rows")) == [{"v": 1}] * 3


def test_a_cancel_while_results_are_written_ends_the_run_cancelled(home, ray_session):
    import resumable
    from rayflow.runtime import cancel_run

    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("run", resumable.slow_write.with_options(run_id="slow-write-1").run())
    )
    thread.start()
    deadline = time.time() + 30
    while time.time() < deadline and not (home / "history.db").exists():
        time.sleep(0.1)
    time.sleep(2.0)  # the task is done; its 5 s write is under way
    cancel_run("slow-write-1", wait=0)
    thread.join(60)
    run = outcome["run"]
    assert run.task_states["slow_to_store"].type is T.SUCCESS
    assert run.state.type is T.CANCELLED and "while 1 result(s) were being written" in run.state.message


def test_a_write_behind_that_fails_fails_the_run_naming_the_task(home, runner):
    import resumable

    run = resumable.not_kept.with_options(runner=runner).run()
    assert run.task_states["unstorable"].type is T.SUCCESS and run.task_states["after"].type is T.SUCCESS
    assert run.state.type is T.FAILED
    assert "task 'unstorable': its result could not be persisted to runs/" in run.state.message
    assert "refuses to be stored" in run.state.message


# -- per-item caching of a map ----------------------------------------------------------------


def _items_flow(marker: pathlib.Path, name: str = "items", **options):
    @rf.task(name="square", cache_key_fn=options.pop("cache_key_fn", rf.cache.inputs), **options)
    def square(x: int, path: str) -> int:
        with open(path, "a") as f:
            f.write("ran\n")
        if x < 0:
            raise ValueError(f"negative item {x}")
        return x * x

    @rf.task
    def total(values: list) -> int:
        return sum(values)

    @rf.flow(name=name)
    def items(xs: list = [1, 2]):  # noqa: B006 - a parameter default, never mutated
        return total(square.map(xs, path=rf.unmapped(str(marker))))

    return items


def _map_items(home, run_id: str, key: str) -> dict:
    from rayflow.store.views import map_items

    return map_items([c for c in RunStore(home).run(run_id)["chunks"] if c["task_key"] == key])


def test_a_mapped_task_caches_per_item_and_runs_only_the_new_items(home, runner, tmp_path):
    marker = tmp_path / "count"
    flow = on(_items_flow(marker), runner)
    first = flow.run(xs=list(range(1000)))
    assert first.result() == sum(x * x for x in range(1000)) and count(marker) == 1000
    more = list(range(1000)) + list(range(5000, 5100))  # 100 new items after the old ones
    second = flow.run(xs=more)
    assert second.result() == sum(x * x for x in more)
    assert count(marker) == 1100  # only the 100 new items ran
    assert second.task_states["square"].type is T.MAPPED
    assert "1100 items: 1100 ok (1000 from the cache)" in second.task_states["square"].message
    assert _map_items(home, second.run_id, "square")["cached"] == 1000
    shuffled = flow.run(xs=list(reversed(more)))  # keys are per item, not per position
    assert shuffled.result() == sum(x * x for x in more) and count(marker) == 1100


def test_failed_items_are_not_cached_and_run_again(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_items_flow(marker), "local")
    xs = [1, -2, 3, -4]
    first = flow.with_options(runner="local")
    run = first.run(xs=xs)
    assert run.task_states["square"].type is T.FAILED or "2 failed" in run.task_states["square"].message
    assert count(marker) == 4
    again = flow.run(xs=xs)
    assert count(marker) == 6  # the two failed items, and only they, ran again
    assert "(2 from the cache)" in again.task_states["square"].message


def test_item_cache_expiry_refresh_and_code_change(home, tmp_path):
    marker = tmp_path / "count"
    xs = list(range(50))
    on(_items_flow(marker, cache_expiration=datetime.timedelta(hours=1)), "local").run(xs=xs)
    on(_items_flow(marker, cache_expiration=datetime.timedelta(hours=1)), "local").run(xs=xs)
    assert count(marker) == 50
    for path in (home / "results" / "cache").rglob("seg-*.arrow"):  # age every segment past its expiry
        old = time.time() - 7200
        os.utime(path, (old, old))
    on(_items_flow(marker, cache_expiration=datetime.timedelta(hours=1)), "local").run(xs=xs)
    assert count(marker) == 100
    refreshed = on(_items_flow(marker, refresh_cache=True), "local").run(xs=xs)
    assert count(marker) == 150 and "from the cache" not in refreshed.task_states["square"].message
    assert "(50 from the cache)" in on(_items_flow(marker), "local").run(xs=xs).task_states["square"].message

    @rf.task(name="square", cache_key_fn=rf.cache.inputs)
    def square(x: int, path: str) -> int:  # the same name, other code
        with open(path, "a") as f:
            f.write("ran\n")
        return x * x + 1

    @rf.flow(name="items", runner="local")
    def items(xs: list = [1, 2]):  # noqa: B006
        return square.map(xs, path=rf.unmapped(str(marker)))

    assert items.run(xs=xs).result() == [x * x + 1 for x in xs] and count(marker) == 200


def test_item_cache_lineage_never_hashes_an_upstream_value_passed_whole(home, tmp_path):
    marker = tmp_path / "count"

    @rf.task
    def big(n: int) -> Unpicklable:
        return Unpicklable(n)

    def flow_with(policy):
        @rf.task(name="use", cache_key_fn=policy)
        def use(x: int, value: Unpicklable, path: str) -> int:
            with open(path, "a") as f:
                f.write("ran\n")
            return x + value.n

        @rf.flow(name=f"item_lineage_{policy!r}", runner="local")
        def item_lineage(n: int = 3):
            return use.map(range(10), value=rf.unmapped(big(n)), path=rf.unmapped(str(marker)))

        return item_lineage

    by_lineage = flow_with(rf.cache.lineage)
    assert by_lineage.run(n=3).result() == [x + 3 for x in range(10)]
    second = by_lineage.run(n=3)
    assert second.result() == [x + 3 for x in range(10)] and count(marker) == 10
    assert "(10 from the cache)" in second.task_states["use"].message
    assert by_lineage.run(n=4).result() == [x + 4 for x in range(10)] and count(marker) == 20  # upstream changed

    by_inputs = flow_with(rf.cache.inputs)
    runs = [by_inputs.run(n=3) for _ in range(2)]
    assert all(r.result() == [x + 3 for x in range(10)] for r in runs) and count(marker) == 40  # uncached, not failed
    logs = RunStore(home).logs(runs[0].run_id)
    assert any(r["level"] == "WARNING" and "uncached" in r["message"] and "'value'" in r["message"] for r in logs)


def test_lineage_downstream_of_a_map_sees_what_the_map_mapped_over(home):
    @rf.task
    def load(n: int) -> list:
        return list(range(n))

    @rf.task(cache_key_fn=rf.cache.lineage)
    def square(y: int, k: int) -> int:
        return y * y + k

    @rf.task(cache_key_fn=rf.cache.lineage)
    def summarise(values: list) -> int:
        return sum(values)

    @rf.flow(runner="local")
    def over_upstream(n: int = 3, k: int = 0):
        return summarise(square.map(load(n), k=rf.unmapped(k)))

    @rf.flow(runner="local")
    def over_constant(xs: list = [1, 2]):  # noqa: B006
        return summarise(square.map(xs, k=rf.unmapped(0)))

    assert [over_upstream.run(n=n, k=k).result() for n, k in [(3, 0), (5, 0), (5, 1)]] == [5, 30, 35]
    again = over_upstream.run(n=5, k=1)
    assert again.result() == 35 and again.task_states["summarise"].type is T.CACHED
    assert [over_constant.run(xs=xs).result() for xs in ([1, 2], [3, 4], [1, 2])] == [5, 25, 5]


def test_item_cache_with_a_key_function_of_ones_own(home, tmp_path):
    marker = tmp_path / "count"

    def by_x(context, arguments):  # the path is left out, a negative x not cached
        return None if arguments["x"] < 0 else f"x={arguments['x']}"

    flow = on(_items_flow(marker, cache_key_fn=by_x), "local")
    flow.run(xs=[1, 2, 3])
    other = flow.with_options()  # a run with another marker path still hits: the key is x alone
    assert other.run(xs=[1, 2, 3]).result() == 14 and count(marker) == 3

    assert "(2 from the cache)" in flow.run(xs=[-1, 1, 2]).task_states["square"].message
    assert count(marker) == 4  # -1 ran uncached
    assert "(2 from the cache)" in flow.run(xs=[-1, 1, 2]).task_states["square"].message and count(marker) == 5

    def broken(context, arguments):
        raise RuntimeError("no key today")

    run = on(_items_flow(marker, name="broken", cache_key_fn=broken, chunk_size=2), "local").run(xs=[1, 2])
    assert run.result() == 5 and count(marker) == 7
    logs = RunStore(home).logs(run.run_id)
    assert [r["message"] for r in logs if r["level"] == "WARNING" and "no key today" in r["message"]] == [
        "task square: items run uncached: its cache_key_fn raised RuntimeError: no key today"
    ]  # one warning per chunk, not one per item


def test_a_batch_map_caches_per_item(home, runner, tmp_path):
    marker = tmp_path / "count"

    @rf.task(batch=True, cache_key_fn=rf.cache.inputs)
    def doubled(xs, path: str):
        with open(path, "a") as f:
            f.write("ran\n" * len(xs))
        return pa.compute.multiply(xs, 2)

    @rf.flow(runner=runner)
    def batches(n: int = 10):
        return doubled.map(range(n), path=rf.unmapped(str(marker)))

    assert batches.run(n=100).result() == [2 * x for x in range(100)]
    again = batches.run(n=120)
    assert again.result() == [2 * x for x in range(120)] and count(marker) == 120
    assert "(100 from the cache)" in again.task_states["doubled"].message


def test_a_corrupted_segment_is_skipped_with_a_warning_and_its_items_run_again(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_items_flow(marker, chunk_size=50), "local")
    flow.run(xs=list(range(200)))
    segments = sorted((home / "results" / "cache").rglob("seg-*.arrow"))
    assert len(segments) == 4
    segments[0].write_bytes(b"not arrow at all")
    again = flow.run(xs=list(range(200)))
    assert again.result() == sum(x * x for x in range(200))
    assert count(marker) == 250  # the damaged segment's 50 items ran again, the others did not
    logs = RunStore(home).logs(again.run_id)
    assert any(r["level"] == "WARNING" and str(segments[0]) in r["message"] for r in logs)


def test_cache_ls_and_clear_cover_item_segments(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_items_flow(marker), "local")
    flow.run(xs=[1, 2, 3])
    listed = run_cli_in_process("cache", "ls", "--task", "square", home=home)
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert lines and all(line[:2] == ["items", "square"] and line[2].startswith("items/seg-") for line in lines)
    cleared = run_cli_in_process("cache", "clear", "--flow", "items", home=home)  # a process of its own: test_cache_ls_and_clear
    assert cleared.returncode == 0 and f"removed {len(lines)} cached result(s)" in cleared.stdout
    flow.run(xs=[1, 2, 3])
    assert count(marker) == 6


def test_bad_cache_options_are_named_at_decoration():
    with pytest.raises(rf.TaskOptionError, match="cache_key_fn"):
        rf.task(cache_key_fn="inputs")(lambda: 1)
    with pytest.raises(rf.TaskOptionError, match="cache_expiration"):
        rf.task(cache_expiration=-5)(lambda: 1)


# -- the CLI --------------------------------------------------------------------------------


def test_cache_ls_and_clear(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_cached_flow(marker), "local")
    flow.run(x=1)
    flow.run(x=2)
    listed = run_cli_in_process("cache", "ls", "--flow", "cached", home=home)
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert len(lines) == 2 and all(line[0] == "cached" and line[1] == "slow" and len(line[2]) == 64 for line in lines)
    assert run_cli_in_process("cache", "ls", "--task", "other", home=home).stdout == ""
    cleared = run_cli("cache", "clear", "--task", "slow", home=home)
    assert cleared.returncode == 0 and "removed 2 cached result(s)" in cleared.stdout
    assert flow.run(x=1).task_states["slow"].type is T.SUCCESS and count(marker) == 3
    bad = run_cli_in_process("cache", "ls", "--storage", "nosuch://x", home=home)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nosuch://x" in bad.stderr


# -- keys: what makes calls the same (found by an outside review) ----------------------------

import functools  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from rayflow.cache import code_fingerprint  # noqa: E402


class Model:
    def __init__(self, factor: int):
        self.factor = factor

    def predict(self, x: int) -> int:
        return x * self.factor


def times(k: int):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(x):
            return fn(x) * k

        return wrapper

    return decorate


def test_the_code_fingerprint_sees_bound_objects_wrappers_partials_and_survives_recursion():
    assert code_fingerprint(Model(2).predict) != code_fingerprint(Model(3).predict)

    def base(x):
        return x

    assert code_fingerprint(times(2)(base)) != code_fingerprint(times(3)(base))

    def scaled(x, k):
        return x * k

    assert code_fingerprint(functools.partial(scaled, k=2)) != code_fingerprint(functools.partial(scaled, k=3))

    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    def uses_fact(n):
        return fact(n)

    assert len(code_fingerprint(uses_fact)) == 64  # no RecursionError


KEY_SCRIPT = """
import rayflow as rf
from rayflow.cache import CacheContext, code_fingerprint
def f(c, s):
    return c in {"a", "b", "c", "d", "e", "f", "g"}
ctx = CacheContext("flow", "f", "f", f, "")
print(code_fingerprint(f), rf.cache.inputs(ctx, {"c": "a", "s": {"x", "y", "z", "w", frozenset({"p", "q"})}}))
"""


def test_keys_are_the_same_in_every_process_whatever_the_hash_seed():
    keys = {
        subprocess.run(
            [sys.executable, "-c", KEY_SCRIPT], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(keys) == 1, keys


def test_a_key_function_cannot_name_a_file_outside_the_cache(home, tmp_path):
    @rf.task(cache_key_fn=lambda context, arguments: "../../../../outside")
    def escape() -> int:
        return 1

    @rf.flow(runner="local")
    def escaping():
        return escape()

    escaping.run()
    files = [p for p in home.rglob("*") if p.is_file() and p.suffix == ".pkl"]
    assert files and all((home / "results" / "cache") in p.parents for p in files), files
    assert escaping.run().task_states["escape"].type is T.CACHED


def test_lineage_ignoring_an_argument_leaves_it_out_of_the_plans_key(home, tmp_path):
    marker = tmp_path / "count"

    @rf.task(cache_key_fn=rf.cache.lineage.ignoring("client"))
    def fetch(day: str, client: str, path: str) -> str:
        with open(path, "a") as f:
            f.write("ran\n")
        return day

    @rf.flow(runner="local")
    def fetching(client: str = "a"):
        return fetch("monday", client, str(marker))

    fetching.run(client="session-1")
    assert fetching.run(client="session-2").task_states["fetch"].type is T.CACHED and count(marker) == 1


def test_a_cache_hit_of_a_persisting_task_is_persisted_for_its_run_and_unstorable_values_only_warn(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_cached_flow(marker, persist=True), "local")
    flow.run(x=1)
    hit = flow.run(x=1)
    assert hit.task_states["slow"].type is T.CACHED
    assert ResultStore().find(f"runs/{hit.run_id}/slow") is not None

    @rf.task(cache_key_fn=rf.cache.inputs)
    def a_lock() -> object:
        return threading.Lock()

    @rf.flow(runner="local")
    def locking():
        return a_lock()

    run = locking.run()
    assert run.task_states["a_lock"].type is T.SUCCESS  # the value cannot be stored: not cached, not failed
    assert any("not cached" in r["message"] for r in RunStore(home).logs(run.run_id))


@pytest.mark.parametrize(
    "value",
    [
        np.ma.masked_array([1, 2], mask=[0, 1]),
        pd.DataFrame({"mixed": [1, 2.5, "x"]}),
        pd.DataFrame({"lists": [[1], [2, 3]]}),
        pd.DataFrame({"big": [2**70, 1]}),
        pd.DataFrame({"x": [1, 2]}, index=pd.date_range("2026-01-01", periods=2, freq="D")),
        pd.DataFrame({"x": [1, 2, 3]}),  # a RangeIndex
    ],
    ids=["masked", "mixed-objects", "lists", "big-ints", "freq-index", "range-index"],
)
def test_values_arrow_would_change_are_stored_faithfully(tmp_path, value):
    store = ResultStore(str(tmp_path))
    back = store.read(store.write("v", value))
    if isinstance(value, np.ma.MaskedArray):
        assert isinstance(back, np.ma.MaskedArray) and back.mask.tolist() == [False, True] and back[0] == 1
    else:
        pd.testing.assert_frame_equal(back, value)
        assert type(back.index) is type(value.index) and getattr(back.index, "freq", None) == getattr(value.index, "freq", None)


def test_a_relative_storage_path_is_made_absolute_in_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ResultStore("rel/results").location == str(tmp_path / "rel" / "results")


def test_a_cache_miss_says_which_part_of_the_key_changed_and_show_prints_it(home, tmp_path):
    marker = tmp_path / "count"
    flow = on(_cached_flow(marker, cache_expiration=3600), "local")
    first = flow.run(x=1)
    assert first.task_states["slow"].message == "cache miss: no cached result for this task yet"
    assert flow.run(x=1).task_states["slow"].message.startswith("cache hit: ")
    changed = flow.run(x=2)
    assert changed.task_states["slow"].message == "cache miss: input 'x' changed since the newest entry"

    @rf.task(name="slow", cache_key_fn=rf.cache.inputs)
    def slow(x: int, path: str) -> int:  # new code under the same task
        return x

    @rf.flow(name="cached", runner="local")
    def cached(x: int = 1):
        return slow(x, str(marker))

    assert cached.run(x=2).task_states["slow"].message == "cache miss: the code changed since the newest entry"
    for path in (home / "results" / "cache").rglob("*.pkl"):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    expired = flow.run(x=1).task_states["slow"].message
    assert expired.startswith("cache miss: the entry expired (written 720") and "cache_expiration 3600s" in expired
    assert on(_cached_flow(marker, refresh_cache=True), "local").run(x=1).task_states["slow"].message == (
        "cache refreshed (refresh_cache=True)"
    )
    shown = run_cli_in_process("show", changed.run_id, home=home)
    assert shown.returncode == 0 and "input 'x' changed" in shown.stdout, shown.stdout
    listed = run_cli_in_process("cache", "ls", home=home)
    assert ".meta" not in listed.stdout and len(listed.stdout.splitlines()) == 3  # x=1, x=2, new code's x=2


def test_the_first_committed_cache_entry_wins_and_a_refresh_replaces_it(tmp_path):
    store = ResultStore(str(tmp_path))
    assert store.write("cache/f/t/k", 1, first_wins=True) == "cache/f/t/k.pkl"
    assert store.write("cache/f/t/k", 2, first_wins=True) == "cache/f/t/k.pkl"
    assert store.read("cache/f/t/k.pkl") == 1
    assert store.write_bytes("cache/f/t/k.pkl", b"x", first_wins=True) is False  # the race lost at the rename
    assert store.read("cache/f/t/k.pkl") == 1
    store.write("cache/f/t/k", 3)  # refresh_cache, or an expired entry: replaced
    assert store.read("cache/f/t/k.pkl") == 3
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_stored_results_are_owner_only(home, tmp_path):
    import stat

    store = ResultStore(str(tmp_path / "store"))
    path = store.write("runs/r1/a", {"x": 1})
    full = tmp_path / "store" / path
    assert stat.S_IMODE(os.stat(full).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(full.parent).st_mode) == 0o700

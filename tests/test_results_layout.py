"""The result store's layout (rayflow.results_layout): built and parsed in one module.

Round trips (build, then parse: the same fields) over task keys with subflow '/'
separators, map indexes (``name-2``), run ids up to the 128-character bound and
any cache key; the names built are byte for byte the ones earlier rayflows
wrote, and a store written in that layout is read as before.  No Ray, no process.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rayflow import cli
from rayflow import results_layout as L
from rayflow.cache import snapshot
from rayflow.exceptions import UnsafePathError
from rayflow.paths import RUN_ID_MAX, check_run_id
from rayflow.results import ResultStore
from rayflow.runs.resume import stored_chunks

# a name as core.options._key_name lets it be: no '/', no control character, no surrounding
# whitespace, never '.' or '..'
names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\x7f"), min_size=1, max_size=12
).filter(lambda v: v == v.strip() and v not in (".", ".."))
indexed = st.one_of(names, st.builds(lambda n, i: f"{n}-{i}", names, st.integers(2, 10**6)), st.just("items"))
task_keys = st.lists(indexed, min_size=1, max_size=4).map("/".join)  # a subflow's task: sub/inner
run_ids = st.one_of(
    st.from_regex(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_ID_MAX - 1}}}", fullmatch=True),
    st.builds(lambda c, n: c * n, st.sampled_from("aZ9"), st.just(RUN_ID_MAX)),
)
suffixes = st.sampled_from(L.VALUE_SUFFIXES)
LONG_RUN = "r" + "x" * (RUN_ID_MAX - 1)


@settings(max_examples=300, deadline=None)
@given(run_ids, task_keys, st.integers(0, 10**12), st.integers(0, 10**9), suffixes,
       st.one_of(st.none(), st.tuples(st.integers(0, 10**5), st.integers(0, L.WORK_ID_MAX))))
@example(LONG_RUN, "sub/inner/m-2", 0, 10, ".pkl", (1000, L.WORK_ID_MAX))
def test_a_chunk_name_parses_back_to_its_fields(run_id, map_key, start, size, suffix, patch):
    check_run_id(run_id)
    attempt, work_id = patch if patch is not None else (None, None)
    name = L.chunk_name(run_id, map_key, start, start + size, attempt, work_id)
    folder = L.chunk_folder(run_id, map_key)
    assert name.startswith(folder) and "/" not in name[len(folder):]
    assert L.parse_chunk(name[len(folder):] + suffix) == L.StoredChunk(start, start + size, attempt, work_id)


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.integers(1, 5000), st.integers(0, L.WORK_ID_MAX)), st.tuples(st.integers(1, 5000), st.integers(0, L.WORK_ID_MAX)))
def test_patches_are_ordered_by_attempt_then_work_id(a, b):
    parsed = [L.parse_chunk(L.chunk_name("r", "m", 0, 1, *p).rsplit("/", 1)[1] + ".pkl").order for p in (a, b)]
    assert (parsed[0] < parsed[1]) == (a < b)


@settings(max_examples=300, deadline=None)
@given(names, task_keys, st.text(min_size=1, max_size=200), suffixes)
@example("f", "sub/items", "seg-1", ".pkl")  # a subflow's task named items, a key like a segment's
@example("f", "sub/items", "seg-00000000000000000001-abcdef01", ".arrow")
@example("f", "t", "x.arrow", ".pkl")
@example("f", "t", "x.meta", ".pkl")
def test_a_cache_entry_parses_back_to_its_fields(flow, task_key, key, suffix):
    file_key = L.cache_file_key(key)
    name = L.cache_name(flow, task_key, file_key)
    assert L.parse_cache_path(name + suffix) == L.CacheEntry(flow, task_key, file_key, False)
    assert L.parse_cache_path(L.meta_name(name)) is None  # what the key is made of: not an entry
    assert name.startswith(L.cache_folder(flow, task_key)) and name.startswith(L.cache_folder(flow))


@settings(max_examples=300, deadline=None)
@given(names, task_keys, st.integers(0, 10**20 - 1), st.text("0123456789abcdef", min_size=8, max_size=8))
def test_a_segment_parses_back_to_its_fields(flow, task_key, time_ns, token):
    name = L.segment_name(flow, task_key, time_ns, token)
    assert name.startswith(L.segment_folder(flow, task_key) + "/")
    file_name = name.rsplit("/", 1)[1]
    assert L.parse_cache_path(name) == L.CacheEntry(flow, task_key, f"items/{file_name[:-len('.arrow')]}", True)


@given(st.text(min_size=1, max_size=200))
def test_cache_file_keys_are_what_they_were_except_for_segment_look_alikes(key):
    plain = L._SAFE_KEY.fullmatch(key) and key.strip(".") != ""
    looks_like_a_segment = L._SEGMENT_STEM.fullmatch(key) is not None
    expected = key if plain and not looks_like_a_segment else hashlib.sha256(key.encode()).hexdigest()
    assert L.cache_file_key(key) == expected


def test_names_are_byte_for_byte_the_earlier_layout():
    """What rayflow wrote before this module (the f-strings it replaced), for existing stores."""
    assert L.persist_name("r1", "sub/t-2") == "runs/r1/sub/t-2"
    assert L.chunk_name("r1", "m", 0, 10) == "runs/r1/m/chunk-0-10-base"
    assert L.chunk_name("r1", "sub/m", 5, 8, 1, 42) == "runs/r1/sub/m/chunk-5-8-w001000000042"
    assert L.cache_name("f", "sub/t", "k") == "cache/f/sub/t/k"
    assert L.meta_name("cache/f/t/x.arrow") == "cache/f/t/x.arrow.meta.json"
    assert L.segment_folder("f", "m") == "cache/f/m/items"
    assert L.segment_name("f", "m", 123, "abcdef01") == "cache/f/m/items/seg-00000000000000000123-abcdef01.arrow"
    assert L.cache_folder("f", "t") == "cache/f/t/" and L.cache_folder("") == "cache/"


def test_names_that_would_name_another_place_are_refused():
    with pytest.raises(UnsafePathError):
        L.persist_name("", "t")  # runs//t is runs/t on a local disk: another run's folder
    with pytest.raises(UnsafePathError):
        L.chunk_name("r", "sub//m", 0, 1)
    with pytest.raises(ValueError):
        L.chunk_name("r", "m", 0, 1, 1, L.WORK_ID_MAX + 1)  # would read as another attempt's patch
    with pytest.raises(UnsafePathError):  # '.' and '..' are paths.under_root's, as the store joins
        ResultStore("/tmp/never-written").write(L.persist_name("r", "../escape"), 1)


def test_a_subflow_task_named_items_is_listed_by_its_own_key(tmp_path):
    """Failed before: `rayflow cache ls/clear` took cache/f/sub/items/seg-1.pkl (key 'seg-1' of task
    'sub/items', as the worker builds it) for a segment of task 'sub', so --task sub/items found
    nothing and the entry was listed under 'sub' as 'items/seg-1'."""
    store = ResultStore(str(tmp_path))
    store.write("cache/f/sub/items/seg-1", {"x": 1})
    _, entries = cli._cache_entries(str(tmp_path), None, "sub/items")
    assert [(e[0], e[1], e[2]) for e in entries] == [("f", "sub/items", "seg-1")]


def test_a_store_written_in_the_earlier_layout_reads_as_before(tmp_path):
    """Files at the literal paths earlier rayflows wrote: resume's chunks, the CLI's cache
    listing and the plan's segment snapshot find them as they did."""
    store = ResultStore(str(tmp_path))
    hexkey = "ab" * 32
    for path in [
        f"runs/{LONG_RUN}/m/chunk-0-10-base.pkl",
        f"runs/{LONG_RUN}/m/chunk-0-10-w002000000001.pkl",
        f"runs/{LONG_RUN}/m/chunk-0-10-w001000000007.pkl",
        f"runs/{LONG_RUN}/m/chunk-10-20-base.arrow",
        f"runs/{LONG_RUN}/m/notes.txt",
        f"runs/{LONG_RUN}/sub/m/chunk-0-5-base.pkl",
        f"runs/{LONG_RUN}/t.pkl",
        f"cache/f/t/{hexkey}.pkl",
        f"cache/f/t/{hexkey}.meta.json",
        "cache/f/sub/t/mykey.arrow",
        "cache/f/m/items/seg-00000000000000000002-abcdef01.arrow",
        "cache/f/m/items/seg-00000000000000000001-00000000.arrow",
    ]:
        store.write_bytes(path, b"x")
    base = f"runs/{LONG_RUN}/m/"
    assert stored_chunks(store, [LONG_RUN], "m") == (
        (0, 10, (base + "chunk-0-10-base.pkl", base + "chunk-0-10-w001000000007.pkl", base + "chunk-0-10-w002000000001.pkl")),
        (10, 20, (base + "chunk-10-20-base.arrow",)),
    )
    assert stored_chunks(store, [LONG_RUN], "sub/m") == ((0, 5, (f"runs/{LONG_RUN}/sub/m/chunk-0-5-base.pkl",)),)
    assert store.find(L.persist_name(LONG_RUN, "t")) == f"runs/{LONG_RUN}/t.pkl"
    _, entries = cli._cache_entries(str(tmp_path), None, None)
    assert sorted((e[0], e[1], e[2]) for e in entries) == [  # the CLI orders by flow, task, time
        ("f", "m", "items/seg-00000000000000000001-00000000"),
        ("f", "m", "items/seg-00000000000000000002-abcdef01"),
        ("f", "sub/t", "mykey"),
        ("f", "t", hexkey),
    ]
    assert snapshot(store, L.segment_folder("f", "m"), None) == (
        "cache/f/m/items/seg-00000000000000000001-00000000.arrow",
        "cache/f/m/items/seg-00000000000000000002-abcdef01.arrow",
    )

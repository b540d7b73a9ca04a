"""What a trigger sees of a mapped upstream: one state per item, made lazily from the map's
outcomes (which hold only the items that did not succeed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from rayflow.engine import columns as C
from rayflow.states import State, StateType
from rayflow.triggers import Tally


_FLYWEIGHTS = {t: State(type=t) for t in C.CODES}
_BY_CODE = tuple(_FLYWEIGHTS[t] for t in C.CODES)


class ItemStates(Mapping[str, State]):
    """Upstream states with each mapped upstream expanded into one state per item, lazily.

    Item ``key[i]`` is item i of the map: its state comes from ``MapRun.outcomes()``, which
    holds only the items that did not succeed; every other item is SUCCESS.
    """

    def __init__(self, entries: dict[str, Any]):
        self._entries = entries

    def _items(self) -> Iterator[tuple[str, State]]:
        success = _FLYWEIGHTS[StateType.SUCCESS]
        for key, entry in self._entries.items():
            if isinstance(entry, State):
                yield key, entry
                continue
            i = 0
            for index, code in entry.outcomes().items():
                while i < index:
                    yield f"{key}[{i}]", success
                    i += 1
                yield f"{key}[{index}]", _BY_CODE[code]
                i = index + 1
            for j in range(i, entry.total or 0):
                yield f"{key}[{j}]", success

    def tally(self) -> Tally:
        total = successful = failed = skipped = 0
        for entry in self._entries.values():
            if isinstance(entry, State):
                pairs = [(entry.type, 1)]
            else:
                counts = entry.counts()
                done = sum(counts.values())
                pairs = list(counts.items()) + [(StateType.SUCCESS, (entry.total or 0) - done)]
            for state_type, n in pairs:
                state = _FLYWEIGHTS.get(state_type) or State(type=state_type)
                total += n
                successful += n if state.is_successful() else 0
                failed += n if state.is_failed() else 0
                skipped += n if state.is_skipped() else 0
        return Tally(total, successful, failed, skipped)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items())

    def __len__(self) -> int:
        return sum(1 if isinstance(e, State) else (e.total or 0) for e in self._entries.values())

    def __getitem__(self, key: str) -> State:
        entry = self._entries.get(key)
        if isinstance(entry, State):
            return entry
        name, bracket, index = key.rpartition("[")
        entry = self._entries.get(name) if bracket and index.endswith("]") else None
        if entry is not None and not isinstance(entry, State) and index[:-1].isdigit():
            i = int(index[:-1])
            if i < (entry.total or 0):
                return _BY_CODE[entry.outcomes().get(i, C.SUCCESS)]
        raise KeyError(key)

    def values(self) -> Iterator[State]:  # type: ignore[override]
        return (s for _, s in self._items())

    def items(self) -> Iterator[tuple[str, State]]:  # type: ignore[override]
        return self._items()

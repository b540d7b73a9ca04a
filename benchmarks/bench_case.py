"""The timing harness of map_bench.py: contestants run round-robin, the min of the repetitions
kept, one row per case with every contestant's times and rayflow's ratios to each."""

from __future__ import annotations

import time
from typing import Callable


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


class Bench:
    """Runs contestants round-robin, keeps the min of the repetitions, records rows."""

    def __init__(self, repeat: int, only_ray: bool = False) -> None:
        self.repeat = repeat
        self.only_ray = only_ray  # rayflow and hand-written Ray only: no Dask, mp or Ray Data peer
        self.rows: list[dict] = []

    def case(
        self,
        case: str,
        n: int,
        contestants: dict[str, Callable[[], object]],
        expected: object = None,
        warm: bool = True,
        ideal: float | None = None,
    ) -> dict:
        """Time each contestant (None = not run); every result must equal `expected` (or the first one's)."""
        runnable = {
            name: fn for name, fn in contestants.items()
            if fn is not None and not (self.only_ray and name.startswith(("dask", "mp", "ray_data")))
        }
        times: dict[str, list[float]] = {name: [] for name in runnable}

        def check(name: str, value: object) -> None:
            nonlocal expected
            if expected is None:
                expected = value
            assert value == expected, (case, n, name, value, expected)

        if warm:
            for name, fn in runnable.items():
                check(name, fn())
        for _ in range(self.repeat):
            for name, fn in runnable.items():
                seconds, value = timed(fn)
                check(name, value)
                times[name].append(seconds)
        best = {name: min(ts) for name, ts in times.items()}
        ours = best.get("rayflow")
        hand = {k: best[k] for k in ("ray_lists", "ray_fused") if k in best}
        best_hand = min(hand, key=hand.get) if hand else None

        def ratio(name: str | None) -> float | None:
            if ours is None or name is None or name not in best:
                return None
            return round(ours / best[name], 3)

        row = {
            "case": case,
            "n": n,
            "rayflow_s": _r(ours),
            "ray_lists_s": _r(best.get("ray_lists")),
            "ray_fused_s": _r(best.get("ray_fused")),
            "ray_naive_s": _r(best.get("ray_naive")),
            "dask_futures_s": _r(best.get("dask_futures")),
            "dask_bag_s": _r(best.get("dask_bag")),
            "mp_s": _r(best.get("mp")),
            "ray_data_map_s": _r(best.get("ray_data_map")),
            "ray_data_map_batches_s": _r(best.get("ray_data_map_batches")),
            "best_hand_written": best_hand,
            "ray_s": _r(best.get(best_hand)) if best_hand else None,
            "ratio": ratio(best_hand),
            "ratio_dask_futures": ratio("dask_futures"),
            "ratio_dask_bag": ratio("dask_bag"),
            "ratio_mp": ratio("mp"),
            "ratio_ray_data_map": ratio("ray_data_map"),
            "ratio_ray_data_map_batches": ratio("ray_data_map_batches"),
            # case 4: the fused chain against two-pass Ray, the same chain unfused, a single map
            "ray_two_pass_s": _r(best.get("ray_two_pass")),
            "rayflow_unfused_s": _r(best.get("rayflow_unfused")),
            "rayflow_single_s": _r(best.get("rayflow_single")),
            "rayflow_task_sum_s": _r(best.get("rayflow_task_sum")),  # cases 1 and 2: the sum as a task of its own
            "rayflow_batch_s": _r(best.get("rayflow_batch")),  # case 1 at 10^7: batch=True over Arrow
            "ratio_rayflow_batch_ray_data_map_batches": (
                round(best["rayflow_batch"] / best["ray_data_map_batches"], 3)
                if "rayflow_batch" in best and "ray_data_map_batches" in best else None
            ),
            "ratio_ray_two_pass": ratio("ray_two_pass"),
            "ratio_rayflow_unfused": ratio("rayflow_unfused"),
            "ratio_rayflow_single": ratio("rayflow_single"),
            "items_per_s": round(n / ours) if ours else None,
            "ideal_s": _r(ideal),
            "ratio_to_ideal": round(ours / ideal, 3) if ideal and ours else None,
            "repeat": self.repeat,
            "all_s": {name: [round(t, 4) for t in ts] for name, ts in times.items()},
        }
        self.rows.append(row)
        return row


def _r(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 4)

"""map_bench.py's table: one line per case and N, the contestants' best times and rayflow's ratios."""

from __future__ import annotations


def fmt(seconds: float | None, width: int) -> str:
    return f"{seconds:>{width}.3f}" if seconds is not None else f"{'-':>{width}}"


def fmt_ratio(value: float | None, width: int) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'case':<32} {'N':>9} {'rayflow s':>9} {'Ray lists':>9} {'Ray fused':>9} {'x best':>6}"
        f" {'dfut s':>7} {'x dfut':>6} {'bag s':>7} {'x bag':>6} {'mp s':>7} {'x mp':>6} {'ideal s':>7} {'x ideal':>7} {'items/s':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        lists = r["ray_lists_s"] if r["ray_lists_s"] is not None else r["ray_naive_s"]
        print(
            f"{r['case']:<32} {r['n']:>9} {fmt(r['rayflow_s'], 9)} {fmt(lists, 9)} {fmt(r['ray_fused_s'], 9)}"
            f" {fmt_ratio(r['ratio'], 6)} {fmt(r['dask_futures_s'], 7)} {fmt_ratio(r['ratio_dask_futures'], 6)}"
            f" {fmt(r['dask_bag_s'], 7)} {fmt_ratio(r['ratio_dask_bag'], 6)}"
            f" {fmt(r['mp_s'], 7)} {fmt_ratio(r['ratio_mp'], 6)} {fmt(r['ideal_s'], 7)}"
            f" {fmt_ratio(r['ratio_to_ideal'], 7)} {(r['items_per_s'] or '-'):>10}"
        )


def print_ray_data(rows: list[dict]) -> None:
    for r in rows:
        if r["ray_data_map_s"] or r["ray_data_map_batches_s"]:
            print(
                f"Ray Data at N={r['n']}: map {fmt(r['ray_data_map_s'], 0)} s (x {fmt_ratio(r['ratio_ray_data_map'], 0)}),"
                f" map_batches {fmt(r['ray_data_map_batches_s'], 0)} s (x {fmt_ratio(r['ratio_ray_data_map_batches'], 0)})"
            )

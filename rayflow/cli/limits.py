"""``rayflow limit set|ls|rm``: the cluster's named concurrency and rate limits.

The cluster is ``--address``, else RAY_ADDRESS, else the local cluster (``auto``), as
``rayflow cancel`` finds it.  Exit codes: 0 done, 1 ``rm`` of a limit that does not exist,
2 a bad name or value, 3 no cluster to reach.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from rayflow.cli.exits import EXIT_CLUSTER, EXIT_FAILED
from rayflow.cli.usage import fail as _fail

limit_app = typer.Typer(help="Concurrency and rate limits shared by every run on the cluster.", no_args_is_help=True)
AddressOption = Annotated[
    Optional[str],  # noqa: UP007 - typer needs Optional here
    typer.Option("--address", help="Ray cluster. Default: RAY_ADDRESS, else the local cluster (auto)."),
]


def _limits(address: str | None) -> Any:
    from rayflow.runtime.limits import api as limits
    from rayflow.runtime.driver.cluster import connect_existing

    try:
        connect_existing(address)  # ClusterConnectionError: exit 3 by the table
    except ConnectionError as exc:  # Ray's own: no local cluster for "auto"
        raise _fail(f"no Ray cluster to hold limits: {exc}".splitlines()[0], EXIT_CLUSTER) from None
    return limits


def set_limit(
    name: Annotated[str, typer.Argument(help="The limit's name (a task's tag, or rf.concurrency's name).")],
    slots: Annotated[int, typer.Argument(help="Slots held at once (with --per-second: tokens at most).")],
    per_second: Annotated[Optional[float], typer.Option("--per-second", help="A rate: tokens added per second.")] = None,  # noqa: UP007
    address: AddressOption = None,
) -> None:
    """Create or change a limit."""
    from rayflow.engine.limits_state import check_name, check_values

    check_name(name)  # refused before any cluster is reached (LimitError: exit 2 by the table)
    check_values(slots, per_second)
    _limits(address).set(name, slots, per_second)
    rate = f", {per_second:g} per second" if per_second is not None else ""
    typer.echo(f"limit {name}: {slots} slot(s){rate}")


def list_limits(
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
    address: AddressOption = None,
) -> None:
    """The limits, with the slots in use now."""
    rows = _limits(address).list()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo("name\tslots\tin use\tper second")
    for row in rows:
        rate = "-" if row["per_second"] is None else f"{row['per_second']:g}"
        typer.echo(f"{row['name']}\t{row['slots']}\t{row['in_use']}\t{rate}")


def remove_limit(
    name: Annotated[str, typer.Argument(help="The limit to remove.")],
    address: AddressOption = None,
) -> None:
    """Remove a limit (what holds its slots goes on; what waits for them fails)."""
    from rayflow.engine.limits_state import check_name

    check_name(name)
    removed = _limits(address).remove(name)
    if not removed:
        raise _fail(f"no limit named {name!r}", EXIT_FAILED)
    typer.echo(f"limit {name}: removed")

"""A flow that hands secret parameters to its tasks, for tests/test_security.py.

``canary`` is a plain parameter that travels every path the secrets travel
(task inputs, a mapped task, log records, printed lines, error messages,
persisted and cached results): the test finds it wherever it looks, so a
search that finds no secret searched something that would have shown one.
Kept in a module of its own so Ray workers can import it by name.
"""

from __future__ import annotations

from pydantic import SecretBytes, SecretStr

import rayflow as rf


@rf.task(cache_key_fn=rf.cache.inputs, log_prints=True)
def sign(token: SecretStr, key: SecretBytes, canary: str) -> str:
    """Uses the secrets and returns a value made without their plaintext."""
    rf.get_run_logger().info("signing %s with %s and %r", canary, token, key)
    print(f"signed {canary} with token={token} key={key}")
    return f"signature of {canary}: {len(token.get_secret_value()) + len(key.get_secret_value())}"


@rf.task(cache_key_fn=rf.cache.inputs, log_prints=True)
def check(i: int, token: SecretStr, canary: str) -> str:
    """A mapped task given the secret with every item; item 2 fails with a message built from its inputs."""
    print(f"item {i}: {canary} {token!r}")
    if i == 2:
        raise ValueError(f"item {i} refused {canary} with token {token} ({token!r})")
    return f"{canary}-{i}"


@rf.task(retries=1)
def reject(token: SecretStr, key: SecretBytes, canary: str) -> None:
    rf.get_run_logger().warning("rejecting %s: token=%s key=%s", canary, token, key)
    raise PermissionError(f"{canary}: token {token} / key {key!r} rejected (args: {(token, key)})")


@rf.flow(persist=True)
def vault(token: SecretStr, key: SecretBytes, canary: str = "canary-c4n4ry-plain"):
    signature = sign(token, key, canary)
    checked = check.map(range(4), token=rf.unmapped(token), canary=rf.unmapped(canary))
    return [signature, checked, reject(token, key, canary)]

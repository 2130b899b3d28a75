"""What an operation asks a transport to do: the steps of the sans-I/O core.

An operation (``operations``) is a generator: it validates its input and builds keys and arguments,
``yield``s one step, gets the step's reply back, and parses it, all without I/O. A transport
(``transport_sync``, ``transport_async``) is the only code that touches Redis: it runs each step and
sends the reply in. Both transports run the very same generators, so the sync methods and their
async twins cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.dispatch import Signal

from .scripts import LuaScript

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Run:
    """Run a script (EVALSHA, loaded on NOSCRIPT). ``write``: with ``REPLICA_ACKS``, WAIT after it."""

    script: LuaScript
    keys: Sequence[str]
    args: Sequence[Any]
    write: bool = False


@dataclass(frozen=True, slots=True)
class Commands:
    """Plain commands sent in one round trip (not atomic; on a cluster, keys of one slot).

    ``best_effort``: a failure is logged and the reply is None (for index upkeep after a write that is
    already done, where raising would invite a retry that writes twice).
    """

    commands: tuple[tuple[Any, ...], ...]
    best_effort: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Emit:
    """Send a Django signal: ``send`` on the sync path, ``asend`` on the async one."""

    signal: Signal
    kwargs: dict[str, Any] = field(default_factory=dict)


Step = Run | Commands | Sleep | Emit

#: An operation: yields steps, receives their replies, returns its result.
Operation = Generator[Step, Any, T]

__all__ = ["Commands", "Emit", "Operation", "Run", "Sleep", "Step"]

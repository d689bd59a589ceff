"""Module-level job functions for the executor tests (workers import them by name)."""

from __future__ import annotations

import os


def square(x: int) -> int:
    print(f"job {x} in pid {os.getpid()}")
    if x < 0:
        raise ValueError(f"negative input {x} is not allowed")
    return x * x


class PickyError(RuntimeError):
    """An exception whose constructor signature breaks unpickling (like the engine's NonFiniteError)."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"bad value {value} at step {step}")


def picky(x: int) -> int:
    if x < 0:
        raise PickyError(x, float("inf"))
    return x

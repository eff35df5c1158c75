"""The claim registry behind ``mode check``.

Every proposition in ``theory/*.md`` names a claim ID; the function registered under that ID
recomputes the claim independently of the code path it is about and returns a :class:`Verdict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of one check: the measured number, the bound it is held to, and the decision."""

    measured: float
    tolerance: str
    passed: bool


@dataclass(frozen=True)
class Claim:
    """A machine-checked proposition of ``theory/``."""

    id: str
    statement: str
    doc: str
    check: Callable[[], Verdict]


#: Every registered claim, by ID (``LM-1``, ``FP-5``, ...), in registration order.
CLAIMS: dict[str, Claim] = {}


def claim(id: str, statement: str, doc: str) -> Callable[[Callable[[], Verdict]], Callable[[], Verdict]]:
    """Register ``check`` as the machine check of proposition ``id`` written in ``doc``."""

    def register(check: Callable[[], Verdict]) -> Callable[[], Verdict]:
        if id in CLAIMS:
            raise ValueError(f"claim id {id!r} is registered twice")
        CLAIMS[id] = Claim(id=id, statement=statement, doc=doc, check=check)
        return check

    return register

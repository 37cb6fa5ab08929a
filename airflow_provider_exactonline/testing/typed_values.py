"""Generic generated rows for catalog entities without a hand-written generator: one value per field,
typed from the catalog's Edm type, a pure function of ``(seed, division, entity, i)``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from airflow_provider_exactonline.testing.entities import EntityDef, edm_types, spec_of

_M64 = (1 << 64) - 1
_CREATED_BASE_MS = 1_609_750_800_000  # 2021-01-04 09:00, as generator.CREATED_BASE_MS


def _guid(n: int) -> str:
    h = f"{(n * 0x9E3779B97F4A7C15) & ((1 << 128) - 1):032x}"
    return f"{h[0:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


_MAKERS: dict[str | None, Callable[[str, int, int], Any]] = {
    "Edm.Guid": lambda name, i, n: _guid(n),
    "Edm.Byte": lambda name, i, n: n % 256,
    "Edm.Int16": lambda name, i, n: n % 32_767,
    "Edm.Int32": lambda name, i, n: n % 2_147_483_647,
    "Edm.Int64": lambda name, i, n: n % 9_007_199_254_740_991,
    "Edm.Double": lambda name, i, n: round((n % 10_000_000) / 100, 2),
    "Edm.Single": lambda name, i, n: round((n % 10_000_000) / 100, 2),
    "Edm.Decimal": lambda name, i, n: round((n % 10_000_000) / 100, 2),
    "Edm.Boolean": lambda name, i, n: bool(n & 1),
    "Edm.DateTime": lambda name, i, n: f"/Date({_CREATED_BASE_MS + i * 60_000 + (n % 86_400) * 1000})/",
    "Edm.String": lambda name, i, n: f"{name} {i + 1}",
}


@functools.cache
def row_plan(entity: EntityDef) -> tuple[tuple[str, Callable[[str, int, int], Any], int], ...]:
    """``(field, maker, salt)`` for every field of every variant of ``entity`` (navigation fields left out)."""
    spec = spec_of(entity)
    if spec is None:
        return ()
    fields: dict[str, str | None] = {}
    for variant in spec.variants:
        for name, edm in edm_types(spec, variant).items():
            fields.setdefault(name, edm)
    return tuple(
        (name, _MAKERS[edm], (salt + 1) * 0x2545F4914F6CDD1D)
        for salt, (name, edm) in enumerate(fields.items())
        if edm in _MAKERS
    )


def fill_generic(row: dict[str, Any], entity: EntityDef, i: int, n: int) -> None:
    """Give every typed field of ``entity`` a value; the fields ``row`` already has are kept."""
    for name, make, salt in row_plan(entity):
        if name not in row:
            mixed = ((n ^ salt) * 0xBF58476D1CE4E5B9) & _M64
            row[name] = make(name, i, mixed ^ (mixed >> 31))

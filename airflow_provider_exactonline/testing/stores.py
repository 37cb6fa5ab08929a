"""Per-division state: generated rows plus an overlay of mutations, so memory stays flat with row count.

Generated row ``i`` has ``Timestamp = base + i``; every write takes the next value of a
division-wide counter that starts above all generated timestamps.
"""

from __future__ import annotations

import bisect
import random
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_exactonline.testing.entities import ENTITIES, EntityDef, default_value, field_types
from airflow_provider_exactonline.testing.generator import USER_NAME, Generator, date_value, wall_ms

WRITE_TIMESTAMP_START = 1_000_000_000
_TS_SLOT = 10_000_000
_TS_START = 1_000_000


@dataclass
class EntityStore:
    """Generated rows plus an overlay of mutations for one (division, entity)."""

    entity: EntityDef
    division: int
    count: int
    ts_base: int
    overlay: dict[int, dict[str, Any]] = field(default_factory=dict)  # position -> full row
    deleted: set[int] = field(default_factory=set)
    created: int = 0
    created_keys: dict[str, int] = field(default_factory=dict)
    sync_log: list[tuple[int, int]] = field(default_factory=list)  # (Timestamp, position), ascending

    @property
    def positions(self) -> int:
        return self.count + self.created

    def live_count(self) -> int:
        return self.positions - len(self.deleted)


class DivisionData:
    def __init__(self, division: int, name: str, rows: Mapping[str, int], generator: Generator) -> None:
        self.division = division
        self.name = name
        self.generator = generator
        self.counts = {e.name: int(rows.get(e.name, e.default_rows)) for e in ENTITIES}
        self.counts.update(rows)
        self.stores: dict[str, EntityStore] = {}
        for e in ENTITIES:
            self.store(e)
        self._next_ts = WRITE_TIMESTAMP_START
        self.deleted_log: list[dict[str, Any]] = []
        self.rng = random.Random(f"{generator.seed}:{division}:writes")

    def store(self, entity: EntityDef) -> EntityStore:
        """The entity's rows in this division, made on first use (so 451 endpoints cost nothing until read)."""
        found = self.stores.get(entity.name)
        if found is None:
            count = int(self.counts.setdefault(entity.name, entity.default_rows))
            found = self.stores[entity.name] = EntityStore(
                entity, self.division, count, _TS_START + entity.slot * _TS_SLOT
            )
        return found

    @property
    def last_timestamp(self) -> int:
        """The Timestamp the division's latest write took."""
        return self._next_ts

    def next_timestamp(self) -> int:
        self._next_ts += 1
        return self._next_ts

    def new_guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- reading ---------------------------------------------------------------------------------

    def generated(self, store: EntityStore, i: int) -> dict[str, Any]:
        return self.generator.row(store.entity, self.division, i, self.counts, store.ts_base + i)

    def row_at(self, store: EntityStore, pos: int) -> dict[str, Any] | None:
        if pos in store.deleted or pos < 0 or pos >= store.positions:
            return None
        row = store.overlay.get(pos)
        if row is not None:
            return row
        return self.generated(store, pos)

    def position_of(self, store: EntityStore, key: str) -> int | None:
        key = key.strip().strip("{}").lower()
        pos = store.created_keys.get(key)
        if pos is None and store.entity.int_key:
            i = int(key) - 1 if key.isdigit() else None
            if i is None or i >= store.count:
                return None
            pos = i
        if pos is None:
            i = self.generator.index_of(self.division, store.entity.name, key)
            if i is None or i >= store.count:
                return None
            pos = i
        return None if pos in store.deleted else pos

    def iter_natural(self, store: EntityStore, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """Rows in creation order from position ``start``."""
        for pos in range(max(0, start), store.positions):
            if pos in store.deleted:
                continue
            row = store.overlay.get(pos)
            yield pos, (row if row is not None else self.generated(store, pos))

    def iter_sync(self, store: EntityStore, after: int) -> Iterator[dict[str, Any]]:
        """Rows with ``Timestamp > after`` in Timestamp order, seeking directly to the first one."""
        start = max(0, after - store.ts_base + 1)
        for i in range(start, store.count):
            if i in store.overlay or i in store.deleted:
                continue  # an updated row reappears later with its new Timestamp
            yield self.generated(store, i)
        index = bisect.bisect_right(store.sync_log, (after, 1 << 62))
        for ts, pos in store.sync_log[index:]:
            row = store.overlay.get(pos)
            if row is not None and pos not in store.deleted and row.get("Timestamp") == ts:
                yield row

    def iter_deleted(self, after: int) -> Iterator[dict[str, Any]]:
        index = bisect.bisect_right([r["Timestamp"] for r in self.deleted_log], after)
        yield from self.deleted_log[index:]

    # -- writing ---------------------------------------------------------------------------------

    def _stamp(self, row: dict[str, Any], now: float) -> int:
        ts = self.next_timestamp()
        row["Timestamp"] = ts
        row["Modified"] = date_value(wall_ms(now))
        row["Modifier"] = self.generator.user_id
        row["ModifierFullName"] = USER_NAME
        return ts

    def full_row(self, store: EntityStore, row: dict[str, Any]) -> dict[str, Any]:
        full = {name: default_value(kind) for name, kind in field_types(store.entity, "standard").items()}
        for name, kind in field_types(store.entity, "sync").items():
            full.setdefault(name, default_value(kind))
        full.update(row)
        return full

    def create(self, store: EntityStore, data: Mapping[str, Any], now: float) -> dict[str, Any]:
        if store.entity.int_key:
            key: Any = int(data.get(store.entity.key) or store.positions + 1)
        else:
            key = str(data.get(store.entity.key) or self.new_guid()).lower()
        if store.entity.name == "Accounts" and isinstance(data.get("Code"), str) and data["Code"].strip():
            data = {**data, "Code": f"{data['Code'].strip():>18}"}
        row = self.full_row(store, {k: v for k, v in data.items() if k != "Timestamp"})
        row[store.entity.key] = key
        if store.entity.name == "SalesInvoices":
            row["ID"] = key
            if row.get("InvoiceNumber") in (None, 0):
                row["InvoiceNumber"] = 21_000_001 + store.positions
        row["Division"] = self.division
        row["Created"] = date_value(wall_ms(now))
        row["Creator"] = self.generator.user_id
        row["CreatorFullName"] = USER_NAME
        pos = store.positions
        store.created += 1
        store.created_keys[str(key)] = pos
        store.overlay[pos] = row
        store.sync_log.append((self._stamp(row, now), pos))
        return row

    def update(self, store: EntityStore, pos: int, data: Mapping[str, Any], now: float) -> dict[str, Any]:
        current = self.row_at(store, pos)
        assert current is not None
        row = self.full_row(store, current)
        for name, value in data.items():
            if name in (store.entity.key, "ID", "Timestamp", "Division", "Created", "Creator"):
                continue
            if name == "Code" and store.entity.name == "Accounts" and isinstance(value, str):
                value = f"{value.strip():>18}"
            row[name] = value
        store.overlay[pos] = row
        store.sync_log.append((self._stamp(row, now), pos))
        return row

    def delete(self, store: EntityStore, pos: int, now: float) -> dict[str, Any] | None:
        row = self.row_at(store, pos)
        assert row is not None
        store.deleted.add(pos)
        store.overlay.pop(pos, None)
        code = store.entity.deleted_type
        if code is None:
            self.next_timestamp()
            return None
        entry = {
            "Timestamp": self.next_timestamp(),
            "DeletedBy": self.generator.user_id,
            "DeletedDate": date_value(wall_ms(now)),
            "Division": self.division,
            "EntityKey": row[store.entity.key],
            "EntityType": code,
            "ID": self.new_guid(),
        }
        self.deleted_log.append(entry)
        return entry

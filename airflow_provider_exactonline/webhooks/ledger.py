"""The receiver's state in Airflow's metadata DB, shared by every api-server worker.

Two small tables of this provider (created on first use; no Airflow table is touched):

- ``exactonline_webhook_seen``: the signature of each accepted callback and when. Its primary key makes
  "is this a replay?" one atomic INSERT for all workers; rows older than the replay window are pruned.
- ``exactonline_webhook_pending``: accepted changes waiting for the burst to settle. :func:`flush_ready`
  turns ALL of them into Asset events in ONE transaction once no change arrived for ``debounce`` seconds
  (or the oldest waited ``max_delay``), so the scheduler sees the whole burst at once and a DAG scheduled
  on these Assets runs once per burst, not once per change. ``DELETE ... RETURNING`` hands each pending row
  to exactly one flushing worker.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from airflow_provider_exactonline.webhooks.signature import WebhookReplayed

log = logging.getLogger(__name__)

metadata = MetaData()

seen_table = Table(
    "exactonline_webhook_seen",
    metadata,
    Column("signature", String(64), primary_key=True),
    Column("seen_at", Float, nullable=False, index=True),
)

pending_table = Table(
    "exactonline_webhook_pending",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("asset_uri", String(1500), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("extra", Text, nullable=False),
)

_created: set[int] = set()
_create_lock = threading.Lock()


@dataclass(frozen=True)
class PendingChange:
    asset_uri: str
    extra: dict[str, Any]


def ensure_tables(engine: Any) -> None:
    """Create the two tables if missing (once per engine and process; safe if workers race)."""
    key = id(engine)
    if key in _created:
        return
    with _create_lock:
        if key in _created:
            return
        try:
            metadata.create_all(engine, checkfirst=True)
        except (OperationalError, ProgrammingError):  # another worker created them between check and create
            metadata.create_all(engine, checkfirst=True)
        _created.add(key)


def remember(session: Any, signature: str, *, now: float, window: float) -> None:
    """Record ``signature`` as accepted; raise :class:`WebhookReplayed` if it was within ``window`` seconds.

    Two workers racing with the same body both pass the SELECT; the primary key lets only one INSERT
    commit, the other's flush fails and is refused as the replay it is.
    """
    seen_at = session.scalar(select(seen_table.c.seen_at).where(seen_table.c.signature == signature))
    if seen_at is None:
        try:
            session.execute(insert(seen_table).values(signature=signature, seen_at=now))
            session.flush()
        except IntegrityError:
            raise WebhookReplayed(
                "Webhook callback refused: the same signed content is being accepted (replay)"
            ) from None
        return
    if now - float(seen_at) < window:
        raise WebhookReplayed(
            f"Webhook callback refused: the same signed content was accepted {now - float(seen_at):.0f} s ago (replay)"
        )
    session.execute(update(seen_table).where(seen_table.c.signature == signature).values(seen_at=now))


def add_pending(session: Any, change: PendingChange, *, now: float) -> None:
    session.execute(
        insert(pending_table).values(
            asset_uri=change.asset_uri, received_at=now, extra=json.dumps(change.extra, sort_keys=True)
        )
    )


def take_ready(session: Any, *, now: float, debounce: float, max_delay: float) -> list[PendingChange]:
    """Remove and return every pending change once the burst settled; ``[]`` while it is still going on."""
    times = session.execute(select(pending_table.c.id, pending_table.c.received_at)).all()
    if not times:
        return []
    newest = max(float(t) for _, t in times)
    oldest = min(float(t) for _, t in times)
    if now - newest < debounce and now - oldest < max_delay:
        return []
    taken = session.execute(
        delete(pending_table)
        .where(pending_table.c.id.in_([row_id for row_id, _ in times]))
        .returning(pending_table.c.id, pending_table.c.asset_uri, pending_table.c.extra)
    ).all()
    return [PendingChange(str(uri), json.loads(extra)) for _, uri, extra in sorted(taken)]


def prune_seen(session: Any, *, now: float, window: float) -> int:
    result = session.execute(delete(seen_table).where(seen_table.c.seen_at < now - window))
    return int(result.rowcount or 0)


def pending_count(session: Any) -> int:
    return len(session.execute(select(pending_table.c.id)).all())


def record_asset_events(session: Any, changes: list[PendingChange]) -> int:
    """One Asset event per change, for every Asset with that URI a DAG declared; returns how many."""
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetModel

    recorded = 0
    models: dict[str, list[Any]] = {}
    for change in changes:
        if change.asset_uri not in models:
            models[change.asset_uri] = list(
                session.scalars(select(AssetModel).where(AssetModel.uri == change.asset_uri)).all()
            )
        if not models[change.asset_uri]:
            log.info(
                "Exact Online webhook: no DAG uses Asset %s; change of %s ignored",
                change.asset_uri,
                change.extra.get("key"),
            )
        for model in models[change.asset_uri]:
            if asset_manager.register_asset_change(asset=model, extra=change.extra, session=session):
                recorded += 1
    return recorded

"""A/B deliveries: pick the winning variant once the test ends, then send it to the rest.

The email activity sends each variant to its share of the population and leaves the other
recipients' log rows `pending` with reason `awaitingWinner` and the delivery `abTesting`
until `abTest.endsAt`. The abTesting technical workflow then calls `pick_winner` and
`send_remainder`, which goes through the same never-twice pass as the activity.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import distinct, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker import resources
from worker.channels import sending
from worker.channels.connectors import connector_for
from worker.channels.templates import TemplateError, compile_content
from worker.config import Settings
from worker.db import utcnow
from worker.errors import ActivityError
from worker.messaging import delivery, delivery_log, tracking_log

_TRACKED_KIND = {"opens": "open", "clicks": "click"}


def _delivery(s: Session, delivery_id: int) -> dict[str, Any] | None:
    found = (
        s.execute(sending.by_key(delivery).where(delivery.c.id == delivery_id)).mappings().first()
    )
    return None if found is None else dict(found)


def rates(s: Session, delivery_id: int, criterion: str) -> dict[str, tuple[int, int]]:
    """(recipients who opened or clicked, recipients sent) by variant."""
    logs = delivery_log.c
    sent = s.execute(
        select(logs.variant, func.count())
        .where(
            logs.deliveryId == delivery_id,
            logs.variant.is_not(None),
            logs.status.in_(("sent", "bounced")),
        )
        .group_by(logs.variant)
    ).all()
    hits = s.execute(
        select(logs.variant, func.count(distinct(tracking_log.c.deliveryLogId)))
        .select_from(tracking_log.join(delivery_log, logs.id == tracking_log.c.deliveryLogId))
        .where(
            tracking_log.c.deliveryId == delivery_id,
            tracking_log.c.kind == _TRACKED_KIND[criterion],
            logs.variant.is_not(None),
        )
        .group_by(logs.variant)
    ).all()
    found = {str(name): (0, int(count)) for name, count in sent}
    for name, count in hits:
        found[str(name)] = (int(count), found.get(str(name), (0, 0))[1])
    return found


def pick_winner(s: Session, delivery_id: int, now: dt.datetime) -> str | None:
    """The winning variant, recorded in `abTest.winner` (in `s`'s transaction).

    None while the test runs (before `abTest.endsAt`) or for a delivery without a test. The
    best open (or click) rate wins; on a tie, the variant listed first. Once recorded, the
    winner is returned as it is: the decision is never taken twice.
    """
    row = _delivery(s, delivery_id)
    if row is None or not row["abTest"]:
        return None
    ab = dict(row["abTest"])
    if ab.get("winner"):
        return str(ab["winner"])
    ends = ab.get("endsAt")
    if not ends or now < dt.datetime.fromisoformat(ends):
        return None
    names = [variant["name"] for variant in ab["variants"]]
    criterion = ab.get("criterion", "opens")
    found = rates(s, delivery_id, criterion)

    def rate(name: str) -> float:
        hit, sent = found.get(name, (0, 0))
        return hit / sent if sent else 0.0

    best = max(rate(name) for name in names)
    winner = next(name for name in names if rate(name) == best)
    ab.update(
        winner=winner,
        decidedAt=now.isoformat(),
        rates={name: round(rate(name), 6) for name in names},
    )
    s.execute(
        update(delivery)
        .where(delivery.c.id == delivery_id)
        .values(abTest=ab, lastModified=utcnow())
    )
    return winner


def send_remainder(
    sessions: sessionmaker[Session],
    delivery_id: int,
    *,
    settings: Settings,
    attempt: int,
    vars: Mapping[str, Any] | None = None,
    should_stop: Callable[[], str | None] | None = None,
    batch_size: int = 500,
) -> Counter[str]:
    """Send the winner's content to the recipients awaiting it; returns rows by status.

    `attempt` is the calling task's attempt (1, 2...): rows a crashed earlier call left in
    flight are settled as in the activity, never sent twice. Commits its own transactions.
    """
    with sessions() as s:
        row = _delivery(s, delivery_id)
    if row is None:
        raise ActivityError(f"delivery {delivery_id} does not exist")
    ab = dict(row["abTest"] or {})
    winner = ab.get("winner")
    if not winner:
        raise ActivityError(f"delivery {delivery_id} has no A/B winner yet")
    variant: dict[str, Any] = next((v for v in ab["variants"] if v["name"] == winner), {})
    fields = {k: v for k, v in row["content"].items() if k != "sender"}
    fields.update({k: v for k, v in variant.items() if k != "name"})
    try:
        content = compile_content(fields)
    except TemplateError as exc:
        raise ActivityError(f"winner '{winner}': template {exc.message}") from None
    with sessions() as s, s.begin():
        s.execute(
            update(delivery_log)
            .where(
                delivery_log.c.deliveryId == delivery_id,
                delivery_log.c.status == "pending",
                delivery_log.c.reason == sending.AWAITING_WINNER,
            )
            .values(reason="", lastModified=utcnow())
        )
        sending.set_state(s, delivery_id, "sending")
        population = ab.get("population")
        if population and not sending.table_exists(s, population["table"]):
            population = None  # purged with its job: enrichment columns are gone
    channel = row["channel"]
    connector = connector_for(channel, settings)
    try:
        statuses = sending.Pass(
            sessions=sessions,
            delivery_id=delivery_id,
            org_id=row["org_id"],
            channel=channel,
            attempt=attempt,
            connector=connector,
            contents={None: content},
            vars=dict(vars or {}),
            population=population,
            profile=resources.catalog_for(settings.data_model).get("profile").table,
            sender=str(row["content"].get("sender") or settings.smtp_sender),
            batch_size=batch_size,
            should_stop=should_stop,
            decorate=sending.tracking(settings) if channel == "email" else None,
        ).run()
    finally:
        connector.close()
    with sessions() as s, s.begin():
        sending.set_state(s, delivery_id, "sent")
    return statuses

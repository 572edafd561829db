"""abTesting: decide the A/B deliveries whose test period ended and send the winner to the rest.

For each delivery in state `abTesting` whose `abTest.endsAt` passed: the winner is picked
(best open or click rate, ties to the first variant; recorded once, never re-decided) and
the recipients held back receive the winner's content through the same never-twice path
as the delivery itself (worker.channels.abtest). A crash mid-way sends nothing twice: the
next run finds the recorded winner and the rows still awaiting it.
"""

from __future__ import annotations

from sqlalchemy import select

from worker.activities.base import ActivityType, Context, Outcome
from worker.channels import abtest, sending
from worker.messaging import delivery
from worker.registry import register

#: Deliveries decided per run at most (the rest wait for the next day's run).
MAX_DELIVERIES = 100


@register
class AbTesting(ActivityType):
    """Picks the winning variant of finished A/B tests and sends it to the remaining recipients."""

    name = "abTesting"
    family = "channel"

    def run(self, ctx: Context) -> Outcome:
        decided = sent = 0
        with sending.own_sessions(ctx.session) as sessions:
            with sessions() as s:
                candidates = list(
                    s.scalars(
                        select(delivery.c.id)
                        .where(delivery.c.state == "abTesting")
                        .order_by(delivery.c.id)
                        .limit(MAX_DELIVERIES)
                    )
                )
            for delivery_id in candidates:
                with sessions() as s, s.begin():
                    winner = abtest.pick_winner(s, delivery_id, ctx.now)
                if winner is None:
                    continue  # still in its test period
                statuses = abtest.send_remainder(
                    sessions, delivery_id, settings=ctx.settings, attempt=ctx.attempt
                )
                decided += 1
                sent += statuses.get("sent", 0)
                ctx.log(f"delivery {delivery_id}: variant {winner} won, {statuses['sent']:,} sent")
        ctx.log(f"{decided:,} A/B test(s) decided, {sent:,} message(s) sent to the rest")
        return Outcome(counts={ctx.activity.name: decided})

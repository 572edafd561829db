"""Channels: the email, sms and push activities (personalised, proofed, never sent twice).

A run has two phases, with an optional human validation step between them:

- **prepare and proof**: find or create the task's delivery row (content and A/B settings
  stored), and, for an email with `proof`, send the rendered message to the test addresses
  first with "[PROOF] " before its subject (at most once per delivery, at least once: a
  crash between the proof and its record may send the proof again, never a real message);
- **validation** (option `validation`: assignee/group/timeout/subject, as the `validation`
  activity): the task parks until someone approves, then goes on; a rejection or a timeout
  ends it without sending (outlet `rejected`, with the decision in the vars);
- **send**: claim the recipients (exclusions decided in SQL, rows committed `pending`),
  then send them batch by batch through the channel's connector (worker.channels.sending
  explains why no recipient ever gets two messages).

Outlets: `done`, `sent` (the recipients sent to) and `failed` (failed, ignored and unknown),
each fired when it has a transition; `rejected` instead when the validation did not approve.
Counts: `<name>` sent, `<name>_failed`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session, sessionmaker

from worker import populations, resources, validations
from worker.activities import validation as validation_activity
from worker.activities.base import Activity, ActivityType, Context, Option, Outcome, Park
from worker.channels import delivery_batch, sending
from worker.channels.connectors import ConnectorError, Message, connector_for
from worker.channels.templates import CompiledContent, TemplateError, compile_content
from worker.errors import ActivityError, ConfigError, DefinitionError
from worker.messaging import delivery, delivery_log
from worker.registry import register

MAX_PROOFS = 20
MAX_BATCH = 10_000
MAX_SUBJECT = 1_000
MAX_BODY = 100_000
MAX_VARIANTS = 10
MAX_AB_HOURS = 24 * 30
PROOF_PREFIX = "[PROOF] "
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
)
_VARIANT = re.compile(r"[A-Za-z0-9_-]{1,32}")
_AB_KEYS = frozenset({"variants", "share", "criterion", "durationHours"})


def is_email(value: Any) -> bool:
    """A plain addr-spec of at most 254 characters (no display name, no line break)."""
    return isinstance(value, str) and len(value) <= 254 and bool(_EMAIL.fullmatch(value))


def _check_sender(value: Any) -> str | None:
    return None if is_email(value) else "must be an email address (local@domain)"


def _check_proof(value: Any) -> str | None:
    if len(value) > MAX_PROOFS:
        return f"at most {MAX_PROOFS} test addresses"
    for index, address in enumerate(value):
        if not is_email(address):
            return f"item {index} must be an email address (local@domain)"
    return None


def _check_batch(value: Any) -> str | None:
    return None if 1 <= value <= MAX_BATCH else f"must be between 1 and {MAX_BATCH:,}"


def _check_text(limit: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if len(value) <= limit else f"at most {limit:,} characters"

    return check


def _ab_problem(value: Mapping[str, Any], fields: tuple[str, ...]) -> str | None:
    unknown = sorted(str(k)[:40] for k in value if k not in _AB_KEYS)
    if unknown:
        return f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_AB_KEYS))})"
    variants = value.get("variants")
    if not isinstance(variants, list) or not 2 <= len(variants) <= MAX_VARIANTS:
        return f"'variants' must be a list of 2 to {MAX_VARIANTS} variants"
    names: set[str] = set()
    for index, variant in enumerate(variants):
        if not isinstance(variant, dict):
            return f"variant {index} must be an object"
        name = variant.get("name")
        if not isinstance(name, str) or not _VARIANT.fullmatch(name):
            return f"variant {index}: 'name' must be 1 to 32 letters, digits, _ or -"
        if name in names:
            return f"variant {index}: duplicate name '{name}'"
        names.add(name)
        extra = sorted(str(k)[:40] for k in variant if k != "name" and k not in fields)
        if extra:
            return f"variant '{name}': unknown key(s) {', '.join(extra)}"
        for key in fields:
            if key in variant and not isinstance(variant[key], str):
                return f"variant '{name}': '{key}' must be a string"
    share = value.get("share", 20)
    if type(share) is not int or not 1 <= share <= 100:
        return "'share' must be a whole percentage between 1 and 100"
    if value.get("criterion", "opens") not in ("opens", "clicks"):
        return "'criterion' must be opens or clicks"
    hours = value.get("durationHours", 24)
    if type(hours) not in (int, float) or not 0 < hours <= MAX_AB_HOURS:
        return f"'durationHours' must be a number above 0 and at most {MAX_AB_HOURS}"
    return None


class _Delivery(ActivityType):
    """What the three channels share; subclasses name the channel and its fields."""

    family = "channel"
    channel: ClassVar[str] = ""
    #: Template fields of the channel, and those of them that must be present.
    fields: ClassVar[tuple[str, ...]] = ()
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset({"done", "sent", "failed", "rejected"})

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        for content in self.contents(activity).values():
            for group in self.required:
                if not any(content.get(key) for key in group):
                    raise DefinitionError(
                        f"option '{' or '.join(group)}' is required", activity=activity.name
                    )
            try:
                compile_content(content, max_chars=MAX_BODY)
            except TemplateError as exc:
                raise DefinitionError(
                    f"template {exc.message}", activity=activity.name, details=exc.details
                ) from None

    def contents(self, activity: Activity) -> dict[str | None, dict[str, str]]:
        """Template fields by variant (None: without A/B, or the base of the variants)."""
        options = activity.options
        base = {key: options[key] for key in self.fields if key in options}
        ab = options.get("abTest")
        if not ab:
            return {None: base}
        return {
            variant["name"]: {
                **base,
                **{key: variant[key] for key in self.fields if key in variant},
            }
            for variant in ab["variants"]
        }

    def cancel(self, session: Session, task_ids: list[str], reason: str) -> None:
        # A delivery stopped while it waited for its validation: nobody can decide it now.
        validations.cancel(session, task_ids, reason)

    # ------------------------------------------------------------------ run

    def run(self, ctx: Context) -> Outcome:
        population = ctx.input("population")
        options = ctx.activity.options
        profile = _profile_table(ctx)
        connector = connector_for(self.channel, ctx.settings)
        compiled = {
            variant: compile_content(content, max_chars=MAX_BODY)
            for variant, content in self.contents(ctx.activity).items()
        }
        try:
            with sending.own_sessions(ctx.session) as sessions:
                row = self.prepare(ctx, sessions, population)
                if options.get("proof"):
                    self.proof(ctx, sessions, row, population, profile, compiled, connector)
                if options.get("validation"):
                    withheld = self.validate_first(ctx, sessions, row)
                    if withheld is not None:
                        return withheld
                parked = self.send(ctx, sessions, row, population, profile, compiled, connector)
                if parked is not None:
                    return parked
                with sessions() as s:
                    statuses, reasons = sending.tally(s, row["id"])
        finally:
            connector.close()
        return self.finish(ctx, row, statuses, reasons)

    def validate_first(
        self, ctx: Context, sessions: sessionmaker[Session], row: Mapping[str, Any]
    ) -> Outcome | None:
        """The validation step between the proof and the real send: None once approved, else
        the task parks until someone decides (or the timeout), or ends without sending."""
        title = ctx.activity.label or ctx.activity.name
        request = {"subject": f"Validate the {self.channel} '{title}' before it is sent"}
        request.update(ctx.activity.options["validation"])
        with sessions() as s, s.begin():
            asked = validation_activity.ask(ctx, request, s)
            if asked.park is not None:
                sending.set_state(s, row["id"], "toValidate")
                return asked
            if asked.outlets == ("approved",):
                return None
            sending.set_state(s, row["id"], "rejected")
        decision = (asked.vars or {}).get("validationDecision")
        ctx.log(f"not sent: the validation ended {decision}", "warning")
        fired = ("rejected",) if ctx.activity.transitions.get("rejected") else ()
        return Outcome(outlets=fired, vars=asked.vars, counts={ctx.activity.name: 0})

    def prepare(
        self, ctx: Context, sessions: sessionmaker[Session], population: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        options = ctx.activity.options
        content = {key: options[key] for key in (*self.fields, "sender") if key in options}
        ab = options.get("abTest")
        with sessions() as s, s.begin():
            return sending.ensure_delivery(
                s,
                org_id=ctx.org_id,
                channel=self.channel,
                name=ctx.activity.name,
                label=ctx.activity.label,
                workflow_id=ctx.workflow_id,
                job_id=ctx.job_id,
                task_id=ctx.task_id,
                content=content,
                ab_test={**ab, "population": dict(population)} if ab else None,
            )

    def proof(
        self,
        ctx: Context,
        sessions: sessionmaker[Session],
        row: Mapping[str, Any],
        population: Mapping[str, Any],
        profile: Table,
        compiled: Mapping[str | None, CompiledContent],
        connector: Any,
    ) -> None:
        addresses: list[str] = list(ctx.activity.options["proof"])
        if row["state"] != "preparing":
            ctx.log(f"proof already sent to {len(addresses)} address(es)")
            return
        with sessions() as s:
            context = _first_recipient(s, population, profile, ctx.vars)
        prefix = sending.message_prefix(row["id"])
        messages: list[Message] = []
        for variant, content in compiled.items():
            fields = content.render(context)
            fields["subject"] = PROOF_PREFIX + fields.get("subject", "")
            tag = f"{variant}." if variant else ""
            messages += [
                sending.to_message(f"{prefix}proof.{tag}{index}", address, fields, _sender(ctx))
                for index, address in enumerate(addresses)
            ]
        try:
            results = connector.send(messages)
        except ConnectorError as exc:
            raise ActivityError(f"proof: {exc.message}") from None
        refused = [r for r in results if not r.ok]
        ctx.log(f"proof sent to {len(addresses)} address(es)")
        for result in refused:
            ctx.log(f"proof {result.message_id} refused: {result.reason}", "warning")
        with sessions() as s, s.begin():
            sending.set_state(s, row["id"], "proofSent")

    def send(
        self,
        ctx: Context,
        sessions: sessionmaker[Session],
        row: Mapping[str, Any],
        population: Mapping[str, Any],
        profile: Table,
        compiled: Mapping[str | None, CompiledContent],
        connector: Any,
    ) -> Outcome | None:
        """Send, or coordinate the batches sending (None once every row is settled)."""
        ab = ctx.activity.options.get("abTest")
        split = None
        if ab:
            split = sending.Split(tuple(v["name"] for v in ab["variants"]), ab.get("share", 20))
        batch_size = int(ctx.activity.options.get("batchSize", 500))
        spread = delivery_batch.can_spread(sessions)
        if row["state"] in ("preparing", "proofSent", "toValidate"):
            with sessions() as s, s.begin():
                sending.claim(
                    s,
                    delivery_id=row["id"],
                    org_id=ctx.org_id,
                    channel=self.channel,
                    population=population,
                    profile=profile,
                    split=split,
                )
                sending.set_state(s, row["id"], "sending")
                if spread:
                    delivery_batch.plan(s, row["id"], batch_size)
        if spread and delivery_batch.planned(sessions, row["id"]):
            return self.coordinate(ctx, sessions, row, population, batch_size)
        contents = dict(compiled)
        contents.setdefault(None, next(iter(compiled.values())))
        total = int(population.get("count") or 0)
        run = sending.Pass(
            sessions=sessions,
            delivery_id=row["id"],
            org_id=ctx.org_id,
            channel=self.channel,
            attempt=ctx.attempt,
            connector=connector,
            contents=contents,
            vars=ctx.vars,
            population=population,
            profile=profile,
            sender=_sender(ctx),
            batch_size=batch_size,
            should_stop=_stop_check(sessions, ctx.task_id, ctx.attempt),
            progress=lambda done: ctx.progress(done, total, "messages"),
            decorate=sending.tracking(ctx.settings) if self.channel == "email" else None,
        )
        run.run()
        return None

    def coordinate(
        self,
        ctx: Context,
        sessions: sessionmaker[Session],
        row: Mapping[str, Any],
        population: Mapping[str, Any],
        batch_size: int,
    ) -> Outcome | None:
        """The delivery's batches are sent by batch tasks: publish those that need it, then
        park until the last one wakes us (or the timer, which looks for dead claims)."""
        idempotent = delivery_batch.idempotent_channel(self.channel, ctx.settings)
        seen = delivery_batch.tick(sessions, row["id"], ctx.settings.lease_seconds, idempotent)
        if seen.errors:
            # As when one process sends: the connector's failure fails the task, and its next
            # attempt sends what is left (the failed batches are pending again).
            more = f" (and {len(seen.errors) - 1} more)" if len(seen.errors) > 1 else ""
            raise ActivityError(seen.errors[0] + more)
        total = int(population.get("count") or 0)
        ctx.progress(seen.sent + seen.failed, total, "messages")
        if seen.done == seen.total:
            return None
        if seen.publish:
            payload = {
                "delivery_id": row["id"],
                "task_id": ctx.task_id,
                "org_id": ctx.org_id,
                "channel": self.channel,
                "contents": {k or "": v for k, v in self.contents(ctx.activity).items()},
                "vars": ctx.vars,
                "population": dict(population),
                "sender": _sender(ctx),
                "batch_size": batch_size,
                "batches": seen.total,
            }
            delivery_batch.publish(delivery_batch.current_app(), payload, seen.publish)
        recheck = dt.timedelta(seconds=ctx.settings.lease_seconds)
        return Outcome(
            park=Park(
                reason=f"sending in {seen.total} batches, {seen.done} done",
                due_at=ctx.now + recheck,
            )
        )

    def finish(
        self,
        ctx: Context,
        row: Mapping[str, Any],
        statuses: Counter[str],
        reasons: Counter[str],
    ) -> Outcome:
        name = ctx.activity.name
        ab = ctx.activity.options.get("abTest")
        s = ctx.session
        if ab:
            hours = float(ab.get("durationHours", 24))
            ends = ctx.now + dt.timedelta(hours=hours)
            stored = dict(
                s.execute(select(delivery.c.abTest).where(delivery.c.id == row["id"])).scalar_one()
                or {}
            )
            stored.setdefault("endsAt", ends.isoformat())
            sending.set_state(s, row["id"], "abTesting", abTest=stored)
        else:
            failed_all = statuses["failed"] and not statuses["sent"]
            sending.set_state(s, row["id"], "failed" if failed_all else "sent")
        ctx.log(sending.summary(statuses, reasons))
        transitions = ctx.activity.transitions
        outputs: dict[str, Any] = {}
        counts: dict[str, Any] = {name: statuses["sent"]}
        logs = delivery_log.c
        if transitions.get("sent"):
            outputs["sent"] = populations.create(
                ctx,
                "profile",
                select(logs.profileId.label("id")).where(
                    logs.deliveryId == row["id"], logs.status == "sent"
                ),
                0,
            )
        failed = statuses["failed"] + statuses["ignored"] + statuses["unknown"]
        counts[f"{name}_failed"] = failed
        if transitions.get("failed"):
            outputs["failed"] = populations.create(
                ctx,
                "profile",
                select(logs.profileId.label("id")).where(
                    logs.deliveryId == row["id"],
                    logs.status.in_(("failed", "ignored", "unknown")),
                ),
                1,
            )
        fired = tuple(o for o in ("done", "sent", "failed") if transitions.get(o))
        return Outcome(outlets=fired, outputs=outputs, counts=counts)


def _sender(ctx: Context) -> str:
    return str(ctx.activity.options.get("sender") or ctx.settings.smtp_sender)


def _stop_check(
    sessions: sessionmaker[Session], task_id: str, attempt: int
) -> Callable[[], str | None]:
    """Between batches: stop when the task is no longer this attempt's (a stop, restart or
    terminating end aborts it and moves its attempt on; a reaper hands it to a new attempt)
    or the workflow stopped."""

    def check() -> str | None:
        with sessions() as s:
            found = delivery_batch.task_and_workflow(s, task_id)
        if (why := delivery_batch.gone_or_aborted(found)) is not None:
            return why
        if found.attempt != attempt or found.state != "running":
            return "a later attempt took the task over"
        if found.wf == "stopped":
            return "the workflow was stopped"
        return None

    return check


def _profile_table(ctx: Context) -> Table:
    return profile_table_for(ctx.settings)


def profile_table_for(settings: Any) -> Table:
    try:
        return resources.catalog_for(settings.data_model).get("profile").table
    except ConfigError as exc:
        raise ActivityError(f"data model: {exc.message}") from None


def _first_recipient(
    s: Session, population: Mapping[str, Any], profile: Table, vars: Mapping[str, Any]
) -> dict[str, Any]:
    """The proof's context: the population's first profile, or an empty one."""
    pop = populations.as_table(population)
    first = select(func.min(pop.c.id)).scalar_subquery()
    extra = list(population.get("columns") or [])
    columns = [c.label(f"p_{c.key}") for c in profile.columns if c.key != "org_id"]
    columns += [pop.c[name].label(f"e_{name}") for name in extra]
    found: dict[str, Any] | None = None
    row = (
        s.execute(
            select(*columns)
            .select_from(pop.join(profile, profile.c.id == pop.c.id))
            .where(pop.c.id == first)
        )
        .mappings()
        .first()
    )
    if row is not None:
        found = dict(row)
    else:
        found = {f"p_{c.key}": None for c in profile.columns if c.key != "org_id"}
        found.update({f"e_{name}": None for name in extra})
    return sending.recipient_context(found, vars)


_COMMON = {
    "batchSize": Option((int,), check=_check_batch),
    "validation": Option((dict,), check=validation_activity.request_problem),
}


@register
class Email(_Delivery):
    """An email to every profile of the inbound population.

    Options: `subject`, `html` and/or `text` (Jinja2, sandboxed: `profile.<field>`,
    `vars.<name>`, enrichment columns), `sender` (default CARILLON_SMTP_SENDER), `proof`
    (up to 20 test addresses sent first), `validation` ({assignee, group, timeout, subject}:
    a human approves after the proof, before the real send), `batchSize` (500; messages per
    SMTP connection),
    `abTest` ({variants: [{name, subject?, html?, text?}], share: 20, criterion: opens |
    clicks, durationHours: 24}).
    """

    name = "email"
    channel = "email"
    fields = ("subject", "html", "text")
    required = (("subject",), ("html", "text"))
    options = {
        "subject": Option((str,), check=_check_text(MAX_SUBJECT)),
        "html": Option((str,), check=_check_text(MAX_BODY)),
        "text": Option((str,), check=_check_text(MAX_BODY)),
        "sender": Option((str,), check=_check_sender),
        "proof": Option((list,), check=_check_proof),
        "abTest": Option((dict,), check=lambda v: _ab_problem(v, Email.fields)),
        **_COMMON,
    }


@register
class Sms(_Delivery):
    """An SMS to every profile of the inbound population (`mobilePhone`); option `text`."""

    name = "sms"
    channel = "sms"
    fields = ("text",)
    required = (("text",),)
    options = {"text": Option((str,), required=True, check=_check_text(MAX_BODY)), **_COMMON}


@register
class Push(_Delivery):
    """A push notification to every profile of the inbound population (`pushToken`);
    options `title` and `body`."""

    name = "push"
    channel = "push"
    fields = ("title", "body")
    required = (("body",),)
    options = {
        "title": Option((str,), check=_check_text(MAX_SUBJECT)),
        "body": Option((str,), required=True, check=_check_text(MAX_BODY)),
        **_COMMON,
    }

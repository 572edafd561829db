"""Targeting: the query activity (filter DSL on a resource, result and complement outlets)."""

from __future__ import annotations

import os
import re
from typing import Any

from sqlalchemy import Select, exists, literal, select

import worker.models  # noqa: F401  (declares the organization table the catalog copies)
from worker import filters, populations, resources, sqlfilter
from worker.activities.base import Activity, ActivityType, Context, Option, Outcome
from worker.errors import ActivityError, ConfigError, DefinitionError, FilterError
from worker.registry import register

MAX_LIMIT = 10**12
_RESOURCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,47}")


def _check_resource(value: Any) -> str | None:
    if not _RESOURCE_NAME.fullmatch(value):
        return "must be a resource name (letters and digits, starting with a letter)"
    return None


def _check_limit(value: Any) -> str | None:
    if not 1 <= value <= MAX_LIMIT:
        return f"must be between 1 and {MAX_LIMIT:,}"
    return None


def _save_catalog() -> resources.Catalog | None:
    """The catalog definitions are checked against when saved; None when it cannot be read.

    Activity validation has no settings, so this reads CARILLON_DATA_MODEL like the
    processes do: profile extension fields and extension resources are then known at save.
    """
    try:
        return resources.catalog_for(os.environ.get("CARILLON_DATA_MODEL", ""))
    except ConfigError:
        return None  # the process fails on startup anyway; the run-time check still holds


@register
class Query(ActivityType):
    """Selects the records of a resource matching a filter, and optionally the others.

    Options: `resource` (default profile), `filter` (the DSL, required), `complement`
    (default: true when a `complement` transition exists) and `limit` (at most N records,
    lowest ids first). Outlets, each fired when it has a transition: `result`
    with the matching records; `complement` with every other record of the resource in
    the organization (with a limit, the matching ones past it included), so result and
    complement always split the resource in two.
    Counts: `<name>` and `<name>_complement` (`<name>_<outlet>` as in every activity with
    several outputs).
    """

    name = "query"
    family = "targeting"
    data = True
    options = {
        "resource": Option((str,), check=_check_resource),
        "filter": Option((dict,), required=True),
        "complement": Option((bool,)),
        "limit": Option((int,), check=_check_limit),
    }

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        options = activity.options
        if options.get("complement") is False and activity.transitions.get("complement"):
            raise DefinitionError(
                "the 'complement' transition never fires: 'complement' is false",
                activity=activity.name,
            )
        try:
            filters.validate_filter(options["filter"], where="filter")
        except FilterError as exc:
            raise FilterError(exc.message, activity=activity.name, details=exc.details) from None
        catalog = _save_catalog()
        if catalog is None:
            return
        try:
            resource = catalog.get(options.get("resource", "profile"))
        except FilterError as exc:
            raise DefinitionError(
                f"option 'resource': {exc.message}", activity=activity.name
            ) from None
        try:
            sqlfilter.check_filter(options["filter"], resource, where="filter")
        except FilterError as exc:
            raise FilterError(exc.message, activity=activity.name, details=exc.details) from None

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset({"result", "complement"})

    def run(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        resource = _resource(ctx, options.get("resource", "profile"))
        try:
            condition = sqlfilter.compile_filter(
                options["filter"],
                resource,
                vars=ctx.vars,
                counts=ctx.counts,
                today=ctx.now.date(),
            )
        except FilterError as exc:
            raise ActivityError(exc.message, details=exc.details) from None
        query = select(resource.key).where(resource.org == ctx.org_id, condition)
        if "limit" in options:
            query = query.order_by(resource.key).limit(options["limit"])
        result = populations.create(ctx, resource.name, query, 0)
        name = ctx.activity.name
        ctx.log(f"{result['count']:,} record(s) selected")
        ctx.progress(result["count"], result["count"])
        outputs = {"result": result}
        counts = {name: result["count"]}
        if self._wants_complement(ctx.activity):
            rest = populations.create(
                ctx, resource.name, _complement(resource, ctx.org_id, result), 1
            )
            ctx.log(f"{rest['count']:,} record(s) in the complement")
            counts[f"{name}_complement"] = rest["count"]
            outputs["complement"] = rest
        # The engine pauses a workflow on a fired outlet without a transition: fire only
        # the outlets that lead somewhere.
        fired = tuple(outlet for outlet in outputs if ctx.activity.transitions.get(outlet))
        return Outcome(outlets=fired, outputs=outputs, counts=counts)

    @staticmethod
    def _wants_complement(activity: Activity) -> bool:
        return bool(
            activity.options.get("complement", bool(activity.transitions.get("complement")))
        )


def _resource(ctx: Context, name: str) -> resources.Resource:
    try:
        return resources.catalog_for(ctx.settings.data_model).get(name)
    except (FilterError, ConfigError) as exc:
        raise ActivityError(f"resource: {exc.message}") from None


def _complement(resource: resources.Resource, org_id: int, result: dict[str, Any]) -> Select[Any]:
    """The organization's records not in the result table: NULL-safe, unlike NOT <filter>."""
    chosen = populations.as_table(result)
    taken = exists(select(literal(1)).select_from(chosen).where(chosen.c.id == resource.key))
    return select(resource.key).where(resource.org == org_id, ~taken)

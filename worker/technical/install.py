"""Install the technical workflows: the system organization, their definitions, their settings.

Each technical workflow is an ordinary workflow of the `system` organization, so its tasks,
logs and history show like any other's and admins steer it with the usual commands.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from worker import catalog
from worker.models import Workflow
from worker.technical import timing
from worker.technical.tables import technical_setting

SYSTEM_ORG = "system"

#: Technical workflow -> (activity type doing its work, label from the seed).
ACTIVITIES: dict[str, tuple[str, str]] = {
    "cleanup": ("databaseCleanup", "Database cleanup"),
    "reportingAggregates": ("reportingAggregates", "Reporting aggregates"),
    "kpiSharing": ("kpiSharing", "Share KPIs with analytics"),
    "kpiReconciliation": ("kpiReconciliation", "Reconcile KPIs with analytics"),
    "deliverabilityUpdate": ("deliverabilityUpdate", "Update for deliverability"),
    "importSharedAudience": ("importSharedAudience", "Import shared audiences"),
    "mobileAppOptOutMgt": ("mobileAppOptOutMgt", "Push opt-out management"),
    "forecasting": ("forecasting", "Forecasting"),
    "mcSynch_local": ("mcSynchLocal", "Message Center local archiving"),
    "updateEventsStatus": ("updateEventsStatus", "Update events status"),
    "abTesting": ("abTesting", "A/B Testing"),
    "billing": ("billing", "Billing"),
    "reportSendingNow": ("reportSendingNow", "Instant report sharing"),
    "updateDeliveryExecInfo": ("updateDeliveryExecInfo", "Update delivery execution"),
    "updateDeliveryIndicators": ("updateDeliveryIndicators", "Update delivery indicators"),
}


def definition(name: str) -> dict[str, Any]:
    """The definition installed for a technical workflow: start, its activity, end."""
    activity_type, label = ACTIVITIES[name]
    return {
        "id": name,
        "label": label,
        "description": f"Technical workflow {name} (seed 001); fired by Celery beat.",
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": f"{activity_type}1"}},
            {"name": f"{activity_type}1", "type": activity_type, "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def ensure_installed(s: Session) -> int:
    """Create what is missing (never overwrites an admin's edits); returns the system org id."""
    org = catalog.ensure_org(s, SYSTEM_ORG)
    existing = set(s.scalars(select(Workflow.name).where(Workflow.org_id == org.id)))
    for name in ACTIVITIES:
        if name not in existing:
            _create_once(s, lambda name=name: catalog.save_definition(s, org, definition(name)))
    known = set(s.scalars(select(technical_setting.c.name)))
    for name in timing.names():
        if name not in known:
            _create_once(
                s, lambda name=name: s.execute(technical_setting.insert().values(name=name))
            )
    return org.id


def _create_once(s: Session, create: Any) -> None:
    # Two processes installing at once: the second one's insert conflicts and is dropped.
    try:
        with s.begin_nested():
            create()
    except IntegrityError:
        pass


def workflow_of(s: Session, org_id: int, name: str) -> Workflow | None:
    return s.scalars(
        select(Workflow).where(Workflow.org_id == org_id, Workflow.name == name)
    ).first()

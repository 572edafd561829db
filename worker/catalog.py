"""Organizations, API credentials and saved workflow definitions (versioned)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker import definitions, populations
from worker.db import utcnow
from worker.errors import DefinitionError, NotFound
from worker.models import (
    ApiKey,
    Command,
    Job,
    JoinArrival,
    LogLine,
    Organization,
    StateEvent,
    Task,
    Trigger,
    Workflow,
    WorkflowVersion,
)

ORG_RE = definitions.NAME_RE


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_org(s: Session, name: str) -> Organization:
    if not isinstance(name, str) or not ORG_RE.match(name):
        raise DefinitionError(
            "organization names are letters, digits and '_' starting with a letter (max 64)"
        )
    org = s.scalars(select(Organization).where(Organization.name == name)).first()
    if org is None:
        org = Organization(name=name, created_at=utcnow())
        s.add(org)
        s.flush()
    return org


def org_by_name(s: Session, name: str) -> Organization:
    org = s.scalars(select(Organization).where(Organization.name == name)).first()
    if org is None:
        raise NotFound(f"organization '{name}' not found")
    return org


def create_credentials(s: Session, org_name: str) -> dict[str, str]:
    """A new API key and bearer token for an organization; only their hashes are stored."""
    org = ensure_org(s, org_name)
    prefix = secrets.token_hex(6)
    api_key = f"ck_{prefix}_{secrets.token_urlsafe(24)}"
    token = secrets.token_urlsafe(32)
    s.add(
        ApiKey(
            org_id=org.id,
            key_prefix=prefix,
            key_hash=_digest(api_key),
            token_hash=_digest(token),
            created_at=utcnow(),
        )
    )
    return {"org": org.name, "apiKey": api_key, "token": token}


def authenticate(s: Session, api_key: str, token: str) -> Organization | None:
    """The organization owning this key and token, compared in constant time; None if wrong."""
    parts = api_key.split("_")
    if len(parts) < 3 or parts[0] != "ck":
        return None
    found = s.scalars(
        select(ApiKey).where(ApiKey.key_prefix == parts[1], ApiKey.revoked_at.is_(None))
    ).first()
    if found is None:
        return None
    key_ok = hmac.compare_digest(found.key_hash, _digest(api_key))
    token_ok = hmac.compare_digest(found.token_hash, _digest(token))
    if not (key_ok and token_ok):
        return None
    return s.get(Organization, found.org_id)


def save_definition(s: Session, org: Organization, body: dict[str, Any]) -> Workflow:
    """Validate and store a definition as the workflow's newest version."""
    definition = definitions.parse(body)
    workflow = s.scalars(
        select(Workflow).where(Workflow.org_id == org.id, Workflow.name == definition.id)
    ).first()
    now = utcnow()
    if workflow is None:
        workflow = Workflow(
            org_id=org.id,
            name=definition.id,
            label=definition.label,
            state="edition",
            latest_version=1,
            created_at=now,
            updated_at=now,
        )
        s.add(workflow)
        s.flush()
    else:
        workflow.latest_version += 1
        workflow.label = definition.label
        workflow.updated_at = now
    s.add(
        WorkflowVersion(
            workflow_id=workflow.id,
            version=workflow.latest_version,
            body=dict(body),
            created_at=now,
        )
    )
    s.flush()
    return workflow


def delete_workflow(s: Session, workflow_id: int) -> None:
    """Every row of a workflow, children first (state events have no foreign key)."""
    jobs = select(Job.id).where(Job.workflow_id == workflow_id)
    populations.drop_for_workflow(s, workflow_id)
    s.execute(delete(StateEvent).where(StateEvent.workflow_id == workflow_id))
    s.execute(delete(LogLine).where(LogLine.workflow_id == workflow_id))
    s.execute(delete(JoinArrival).where(JoinArrival.job_id.in_(jobs)))
    for model in (Task, Trigger, Command, Job, WorkflowVersion):
        s.execute(delete(model).where(model.workflow_id == workflow_id))
    s.execute(delete(Workflow).where(Workflow.id == workflow_id))


def list_workflows(s: Session, org: Organization | None = None) -> list[Workflow]:
    stmt = select(Workflow).order_by(Workflow.org_id, Workflow.name)
    if org is not None:
        stmt = stmt.where(Workflow.org_id == org.id)
    return list(s.scalars(stmt))

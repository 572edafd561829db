"""JSON renderings of the models, in the platform's conventions (camelCase, `@` PKeys, hrefs)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from api.context import execution_path, public_url
from worker.models import Job, LogLine, Task, Workflow


def iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def workflow_links(org: str, workflow: Workflow) -> dict[str, Any]:
    base = execution_path(org, workflow.pkey)
    return {
        "href": public_url(base),
        "definition": {"href": public_url(f"/{org}/campaign/workflow/definitions/{workflow.name}")},
        "commands": {"href": public_url(f"{base}/commands")},
        "jobs": {"href": public_url(f"{base}/jobs")},
        "tasks": {"href": public_url(f"{base}/tasks")},
        "logs": {"href": public_url(f"{base}/logs")},
    }


def workflow_summary(org: str, workflow: Workflow) -> dict[str, Any]:
    return {
        "PKey": f"@{workflow.pkey}",
        "id": workflow.name,
        "label": workflow.label,
        "state": workflow.state,
        "latestVersion": workflow.latest_version,
        "runningVersion": workflow.running_version,
        "errorMessage": workflow.error_message,
        "createdAt": iso(workflow.created_at),
        "updatedAt": iso(workflow.updated_at),
        "startedAt": iso(workflow.started_at),
        "endedAt": iso(workflow.ended_at),
        **workflow_links(org, workflow),
    }


def job_href(org: str, pkey: str, job_id: str) -> str:
    return public_url(f"{execution_path(org, pkey)}/jobs/{job_id}")


def job(org: str, pkey: str, row: Job) -> dict[str, Any]:
    return {
        "id": row.id,
        "href": job_href(org, pkey, row.id),
        "origin": row.origin,
        "originActivity": row.origin_activity,
        "source": row.source,
        "version": row.version,
        "vars": row.vars or {},
        "createdAt": iso(row.created_at),
    }


def duration_ms(row: Task) -> int | None:
    if row.started_at is None or row.finished_at is None:
        return None
    return round((row.finished_at - row.started_at).total_seconds() * 1000)


def task(row: Task, why: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "activity": row.activity,
        "type": row.activity_type,
        "state": row.state,
        "job": row.job_id,
        "version": row.version,
        "executions": row.attempt,
        "createdAt": iso(row.created_at),
        "startedAt": iso(row.started_at),
        "finishedAt": iso(row.finished_at),
        "durationMs": duration_ms(row),
        "dueAt": iso(row.due_at),
        "outlets": row.outlets,
        "reason": row.reason,
        "error": row.error,
        "vars": row.vars or {},
        "why": why,
    }


def log_line(row: LogLine) -> dict[str, Any]:
    return {
        "id": row.id,
        "createdAt": iso(row.created_at),
        "level": row.level,
        "message": row.message,
        "activity": row.activity,
        "task": row.task_id,
        "job": row.job_id,
    }

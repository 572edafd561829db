"""OpenAPI schemas of the monitoring JSON API (api/monitoring.py), merged by api/openapi.py."""

from __future__ import annotations

from typing import Any

_TIME = {"type": "string", "format": "date-time", "nullable": True}
_COUNTS = {
    "type": "object",
    "description": "numbers by state",
    "additionalProperties": {"type": "integer"},
}
_LINK = {
    "type": "object",
    "nullable": True,
    "description": "null on the last page",
    "properties": {"href": {"type": "string", "format": "uri"}},
}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["content", "count", "next"],
        "properties": {
            "content": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "count": {
                "type": "integer",
                "description": "lines matching the filters, counted up to 10,000 past the "
                "page; a lower bound when countExact is false",
            },
            "countExact": {"type": "boolean"},
            "next": _LINK,
        },
    }


_RUN = {
    "type": "object",
    "nullable": True,
    "description": "the newest job; its state is derived from its tasks",
    "properties": {
        "jobId": {"type": "string"},
        "state": {"type": "string", "enum": ["running", "failed", "aborted", "done"]},
        "startedAt": _TIME,
        "finishedAt": _TIME,
    },
}
_WORKFLOW_ITEM = {
    "id": {"type": "string", "description": "internal name"},
    "PKey": {"type": "string"},
    "label": {"type": "string"},
    "state": {"type": "string"},
    "lastRun": _RUN,
    "nextRun": {**_TIME, "description": "earliest due time of its waiting timers"},
    "tasks": {**_COUNTS, "description": "tasks of the newest job by state"},
}

MONITORING_SCHEMAS: dict[str, dict[str, Any]] = {
    "MonitoringWhoami": {
        "type": "object",
        "properties": {
            "org": {"type": "string", "nullable": True, "description": "null for the admin"},
            "admin": {"type": "boolean"},
            "orgs": {"type": "array", "items": {"type": "string"}},
        },
    },
    "MonitoringSummary": {
        "type": "object",
        "properties": {
            "workflows": _COUNTS,
            "tasks": _COUNTS,
            "pendingValidations": {"type": "integer"},
            "generatedAt": {"type": "string", "format": "date-time"},
        },
    },
    "MonitoringWorkflowItem": {"type": "object", "properties": _WORKFLOW_ITEM},
    "MonitoringWorkflowPage": _page("MonitoringWorkflowItem"),
    "MonitoringWorkflow": {
        "type": "object",
        "properties": {
            **_WORKFLOW_ITEM,
            "version": {"type": "integer"},
            "errorMessage": {"type": "string", "nullable": True},
            "activities": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "type": {"type": "string"},
                        "label": {"type": "string"},
                        "state": {
                            "type": "string",
                            "nullable": True,
                            "description": "state of its newest task; null if it never ran",
                        },
                        "counts": {**_COUNTS, "description": "its tasks by state, all jobs"},
                        "executions": {"type": "integer", "description": "its tasks, all jobs"},
                    },
                },
            },
            "transitions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "from": {"type": "string"},
                        "outlet": {"type": "string"},
                        "to": {"type": "string"},
                    },
                },
            },
        },
    },
    "MonitoringJob": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": ["running", "failed", "aborted", "done"]},
            "startedAt": _TIME,
            "finishedAt": _TIME,
            "tasks": {"type": "integer"},
            "counts": _COUNTS,
            "origin": {"type": "string"},
            "originActivity": {"type": "string", "nullable": True},
        },
    },
    "MonitoringJobPage": _page("MonitoringJob"),
    "MonitoringTask": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "jobId": {"type": "string"},
            "activity": {"type": "string"},
            "type": {"type": "string"},
            "state": {"type": "string"},
            "createdAt": _TIME,
            "startedAt": _TIME,
            "finishedAt": _TIME,
            "dueAt": _TIME,
            "durationMs": {"type": "integer", "nullable": True},
            "executions": {"type": "integer"},
            "abortReason": {"type": "string", "nullable": True},
            "reason": {"type": "string", "nullable": True},
            "error": {"type": "string", "nullable": True},
            "vars": {"type": "object", "additionalProperties": True},
            "counts": {"type": "object", "additionalProperties": True},
            "progress": {"type": "object", "nullable": True, "additionalProperties": True},
            "why": {"type": "string", "nullable": True},
        },
    },
    "MonitoringTaskPage": _page("MonitoringTask"),
    "MonitoringLogLine": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "at": _TIME,
            "level": {"type": "string"},
            "activity": {"type": "string", "nullable": True},
            "taskId": {"type": "string", "nullable": True},
            "jobId": {"type": "string", "nullable": True},
            "message": {"type": "string"},
        },
    },
    "MonitoringLogPage": _page("MonitoringLogLine"),
    "MonitoringValidation": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "the PKey without '@'"},
            "PKey": {"type": "string"},
            "workflowId": {"type": "string", "nullable": True},
            "activity": {"type": "string"},
            "subject": {"type": "string"},
            "assignee": {"type": "string"},
            "group": {"type": "string"},
            "state": {"type": "string"},
            "createdAt": _TIME,
            "dueAt": _TIME,
            "taskId": {"type": "string"},
            "jobId": {"type": "string"},
        },
    },
    "MonitoringValidationPage": _page("MonitoringValidation"),
    "MonitoringTechnical": {
        "type": "object",
        "properties": {
            "content": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "label": {"type": "string"},
                        "enabled": {"type": "boolean"},
                        "schedule": {"type": "object", "additionalProperties": True},
                        "state": {"type": "string", "nullable": True},
                        "lastTick": _TIME,
                        "lastOutcome": {"type": "string", "nullable": True},
                        "nextRun": _TIME,
                    },
                },
            }
        },
    },
    "MonitoringWorkers": {
        "type": "object",
        "properties": {
            "workers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "online": {"type": "boolean"},
                        "active": {"type": "integer", "nullable": True},
                        "processed": {"type": "integer", "nullable": True},
                        "queues": {"type": "array", "items": {"type": "string"}},
                        "loadavg": {
                            "type": "array",
                            "nullable": True,
                            "items": {"type": "number"},
                        },
                        "concurrency": {"type": "integer", "nullable": True},
                        "pid": {"type": "integer", "nullable": True},
                    },
                },
            },
            "queues": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "depth": {"type": "integer", "nullable": True},
                    },
                },
            },
            "inspectedAt": {"type": "string", "format": "date-time"},
        },
    },
    "MonitoringThroughput": {
        "type": "object",
        "properties": {
            "bucketSeconds": {"type": "integer"},
            "buckets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "t": {"type": "string", "format": "date-time"},
                        "done": {"type": "integer"},
                        "failed": {"type": "integer"},
                        "triggers": {"type": "integer"},
                    },
                },
            },
        },
    },
}

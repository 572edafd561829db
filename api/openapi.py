"""`/openapi.json`: the OpenAPI 3 document, generated from the URL map and the views' docstrings.

Each view's docstring holds its operations in YAML after a `---` line (apispec's convention).
From the code come: every rule of the URL map (a view with two rules, such as the trigger with
and without its trailing slash, is described twice), its path parameters, its security, and
the error responses every protected operation or every body can produce.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from apispec import APISpec
from apispec.yaml_utils import load_operations_from_docstring
from flask import Blueprint, Flask, current_app

from api.auth import is_public
from api.bodies import MAX_DEPTH
from api.monitoring_schemas import MONITORING_SCHEMAS
from api.pages import DEFAULT_LINE_COUNT, MAX_LINE_COUNT, MAX_LINE_START
from api.ratelimit import EXEMPT_ENDPOINTS
from worker.activities.base import ERROR_POLICIES
from worker.messaging import EVENT_STATUSES, VALIDATION_STATES
from worker.states import TaskState

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
#: Descriptions of the path parameters the URL rules use.
PATH_PARAMETERS = {
    "org": "the organization; it must be the API key's (404 otherwise)",
    "workflow_ref": "the workflow's internal name, or its PKey (`@...`)",
    "activity_ref": "the external-signal activity's PKey (`@name`) or name",
    "definition_id": "the workflow's internal name, or its PKey (`@...`)",
    "job_id": "the job's id",
    "validation_ref": "the validation's PKey (`@...`)",
    "event_type": "the event type: letters, digits and '_' (at most 64)",
    "event_ref": "the event's PKey (`@...`), as the POST returned it",
    "template_ref": "the message template's name, or its PKey (`@name`)",
    "token": "a signed tracking token, as written in the sent message",
    "task_id": "the task's id (`carillon workflow tasks`, or the tasks resource)",
    "filename": "a file of the monitoring page (`.js`, `.css` or `.svg`), such as js/main.js",
}


#: Path parameters a view refuses with 400 (not 404) when malformed: their pattern.
PATH_PATTERNS = {"event_type": "^[A-Za-z0-9_]{1,64}$"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


RESPONSES: dict[str, dict[str, Any]] = {
    "BadRequest": _error("malformed body or query: not JSON, wrong keys, wrong types"),
    "Unauthorized": _error("missing or invalid Authorization / X-Api-Key"),
    "NotFound": _error("no such resource in this organization"),
    "Conflict": _error("the request does not apply to the workflow's current state"),
    "PayloadTooLarge": _error("the body is larger than 64 KB"),
    "UnsupportedMediaType": _error("the body is not application/json"),
    "InvalidDefinition": _error("the definition is invalid; details.activity names the activity"),
    "TooManyRequests": {
        **_error(
            "the signal was triggered less than CARILLON_SIGNAL_MIN_INTERVAL ago "
            "(tooManyTriggers), or the API key made more requests than CARILLON_RATE_LIMIT "
            "allows (rateLimited)"
        ),
        "headers": {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        },
    },
    "RateLimited": {
        **_error(
            "rateLimited: the API key (or, without one, the client address) made more "
            "requests than CARILLON_RATE_LIMIT allows"
        ),
        "headers": {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        },
    },
    "Unavailable": {
        **_error("unavailable: the database cannot be reached; nothing was done"),
        "headers": {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        },
    },
    "IdempotencyKeyReused": _error(
        "idempotencyKeyReused: the Idempotency-Key was first used with another method, path or body"
    ),
    "InternalError": _error("an unexpected error (logged; the body says nothing more)"),
    "InvalidSetting": _error("the setting is invalid (a schedule, properties); nothing changed"),
    "InvalidTemplate": _error(
        "the template is invalid; details.field names the field (and details.line the line)"
    ),
}

_LINK = {"type": "object", "properties": {"href": {"type": "string", "format": "uri"}}}
_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}
# Patterns of what the views accept, so that the document refuses what they refuse (a
# schema-valid request must never get a 400). White space is spelled out: the views strip
# Python's (str.isspace), which is not ECMA's `\s` (\x1c-\x1f, \x85), and validators and
# generators use either. A `pattern` searches: NOT_BLANK means "something not white".
SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{SPACE}]"
_CONTROL = r"\x00-\x1f\x7f"
#: A string the views strip, then refuse when blank or holding a control character.
STRIPPED_PRINTABLE = (
    f"^[{SPACE}]*[^{SPACE}{_CONTROL}]([^{_CONTROL}]*[^{SPACE}{_CONTROL}])?[{SPACE}]*$"
)
#: An e-mail address: an `@` and no white space (white space around it is stripped).
EMAIL = f"^[{SPACE}]*[^{SPACE}{_CONTROL}]*@[^{SPACE}{_CONTROL}]*[{SPACE}]*$"
#: A phone number: digits, spaces and + - ( ) . (white space around it is stripped).
PHONE = f"^[{SPACE}]*[0-9+().-][0-9+(). -]*[{SPACE}]*$"
#: Text stored in a text column: no NUL (PostgreSQL refuses it; the API answers 400).
NO_NUL = r"^[^\x00]*$"
#: Stored text that must not be blank either.
TEXT_NOT_BLANK = f"^[^\\x00]*[^{SPACE}\\x00][^\\x00]*$"
#: Names of workflows and activities (worker.definitions.NAME_RE).
_NAME = "^[A-Za-z][A-Za-z0-9_]{0,63}$"


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["content", "count"],
        "properties": {
            "content": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            "count": {"type": "object", "properties": {"value": {"type": "integer"}}},
            "next": {**_LINK, "description": "absent on the last page"},
        },
    }


def _channel_content(required: set[str], optional: set[str]) -> dict[str, Any]:
    """A channel's template strings: its keys only, the required ones not blank (email also
    needs html or text: html not blank, or text not empty)."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": sorted(required),
        "additionalProperties": False,
        "properties": {
            **{key: {"type": "string", "pattern": NOT_BLANK} for key in required},
            **{key: {"type": "string"} for key in optional},
        },
    }
    if optional == {"html", "text"}:
        schema["anyOf"] = [
            {"required": ["html"], "properties": {"html": {"pattern": NOT_BLANK}}},
            {"required": ["text"], "properties": {"text": {"minLength": 1}}},
        ]
    return schema


def _definition(with_id: bool) -> dict[str, Any]:
    """A definition's shape; what no schema says (activity types and options, the graph) is
    checked when saved: 422 invalidDefinition. A PUT's body may carry the workflow's own id
    (or none): the document leaves it out, since no schema can tie it to the path."""
    properties: dict[str, Any] = {
        "label": {"type": "string", "maxLength": 255, "pattern": NO_NUL},
        "description": {"type": "string", "maxLength": 4000, "pattern": NO_NUL},
        "onError": {"type": "string", "enum": sorted(ERROR_POLICIES)},
        "consecutiveErrors": {"type": "integer", "minimum": 1, "maximum": 1000},
        "historyDays": {"type": "integer", "minimum": 1, "maximum": 3650},
        "activities": {
            "type": "array",
            "minItems": 1,
            "maxItems": 500,
            "items": {
                "type": "object",
                "required": ["name", "type"],
                "additionalProperties": True,
                "properties": {
                    "name": {"type": "string", "pattern": _NAME},
                    "type": {"type": "string"},
                },
            },
        },
    }
    if with_id:
        properties = {"id": {"type": "string", "pattern": _NAME}, **properties}
    return {
        "type": "object",
        "description": "a workflow definition (see the README): id, label, activities...",
        "required": ["id", "activities"] if with_id else ["activities"],
        "additionalProperties": False,
        "properties": properties,
    }


_WORKFLOW = {
    "type": "object",
    "properties": {
        "PKey": {"type": "string", "example": "@7c9e6679-7425-40de-944b-e07fc1f90ae7"},
        "id": {"type": "string", "description": "internal name"},
        "label": {"type": "string"},
        "state": {
            "type": "string",
            "enum": ["edition", "started", "paused", "finished", "stopped", "error"],
        },
        "latestVersion": {"type": "integer"},
        "runningVersion": {"type": "integer", "nullable": True},
        "errorMessage": {"type": "string", "nullable": True},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "startedAt": _NULLABLE_TIME,
        "endedAt": _NULLABLE_TIME,
        "href": {"type": "string", "format": "uri"},
        "definition": {
            "description": "a link in lists and executions; the body in definition responses"
        },
        "commands": _LINK,
        "jobs": _LINK,
        "tasks": _LINK,
        "logs": _LINK,
    },
}

_EVENT_STATUSES = list(EVENT_STATUSES)
_CONTENT = {
    "type": "object",
    "description": "Jinja2 (sandboxed) strings reading `ctx`: email {subject, html, text}, "
    "sms {text}, push {title, body}",
    "additionalProperties": {"type": "string"},
}
#: Transactional events, message templates, bounces.
EVENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "EventRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "at least one address; the channel is that of the first present of "
        "email, mobilePhone, pushToken (null: absent)",
        "anyOf": [
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in ("email", "mobilePhone", "pushToken")
        ],
        "properties": {
            "email": {"type": "string", "maxLength": 255, "pattern": EMAIL, "nullable": True},
            "mobilePhone": {"type": "string", "maxLength": 32, "pattern": PHONE, "nullable": True},
            "pushToken": {
                "type": "string",
                "maxLength": 255,
                "pattern": STRIPPED_PRINTABLE,
                "nullable": True,
            },
            "ctx": {
                "type": "object",
                "description": "free JSON read by templates as `ctx`: at most 10 levels deep, "
                "2000 keys and items, keys of at most 128 characters",
                "additionalProperties": True,
            },
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "PKey": {"type": "string", "example": "@x4Gd1U0mBqCw0zXJ3nY2kS1T"},
            "eventType": {"type": "string"},
            "status": {"type": "string", "enum": _EVENT_STATUSES},
            "reason": {"type": "string", "nullable": True},
            "email": {"type": "string", "nullable": True},
            "mobilePhone": {"type": "string", "nullable": True},
            "pushToken": {"type": "string", "nullable": True},
            "ctx": _ANY_OBJECT,
            "created": {"type": "string", "format": "date-time"},
            "lastModified": {"type": "string", "format": "date-time"},
            "href": {"type": "string", "format": "uri"},
        },
    },
    "MessageTemplateRequest": {
        "type": "object",
        "required": ["name", "eventType", "content"],
        "additionalProperties": False,
        "description": "content holds the channel's keys only: email {subject, html or text}, "
        "sms {text}, push {body, title}",
        "oneOf": [
            {
                "description": "email (the default channel)",
                "properties": {
                    "channel": {"enum": ["email"]},
                    "content": _channel_content({"subject"}, {"html", "text"}),
                },
            },
            {
                "required": ["channel"],
                "properties": {
                    "channel": {"enum": ["sms"]},
                    "content": _channel_content({"text"}, set()),
                },
            },
            {
                "required": ["channel"],
                "properties": {
                    "channel": {"enum": ["push"]},
                    "content": _channel_content({"body"}, {"title"}),
                },
            },
        ],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_-]{0,63}$"},
            "label": {"type": "string", "maxLength": 255, "pattern": NO_NUL},
            "eventType": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"},
            "channel": {"type": "string", "enum": ["email", "sms", "push"], "default": "email"},
            "content": _CONTENT,
            "expiryHours": {"type": "integer", "minimum": 1, "maximum": 8784, "default": 24},
            "published": {"type": "boolean", "default": True},
        },
    },
    "MessageTemplate": {
        "type": "object",
        "properties": {
            "PKey": {"type": "string", "example": "@orderConfirmation"},
            "name": {"type": "string"},
            "label": {"type": "string"},
            "eventType": {"type": "string"},
            "channel": {"type": "string", "enum": ["email", "sms", "push"]},
            "content": _CONTENT,
            "published": {"type": "boolean"},
            "paused": {
                "type": "boolean",
                "description": "its events wait `paused` until it resumes",
            },
            "expiryHours": {"type": "integer"},
            "created": {"type": "string", "format": "date-time"},
            "href": {"type": "string", "format": "uri"},
        },
    },
    "MessageTemplatePage": _page("MessageTemplate"),
    "Bounce": {
        "type": "object",
        "required": ["messageId", "kind"],
        "additionalProperties": False,
        "properties": {
            "messageId": {"type": "string", "maxLength": 255, "pattern": r"^[^\x00]+$"},
            "kind": {"type": "string", "enum": ["hard", "soft", "complaint"]},
            "detail": {
                "type": "string",
                "nullable": True,
                "description": "the provider's text (200 kept)",
            },
        },
    },
    "BounceReport": {
        "type": "object",
        "properties": {
            "received": {"type": "integer"},
            "recorded": {"type": "integer", "description": "tracking logs written"},
            "bounced": {"type": "integer", "description": "delivery logs sent -> bounced"},
            "quarantined": {"type": "integer", "description": "profiles quarantined"},
            "eventsFailed": {"type": "integer", "description": "events processed -> failed"},
            "unknown": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
            "unknownCount": {"type": "integer"},
        },
    },
}

#: Validations (human tasks) and their decisions.
VALIDATION_SCHEMAS: dict[str, dict[str, Any]] = {
    "DecisionRequest": {
        "type": "object",
        "required": ["decision", "user"],
        "additionalProperties": False,
        "description": "a rejection needs a comment that is not blank",
        "anyOf": [
            {"properties": {"decision": {"enum": ["approve"]}}},
            {
                "required": ["comment"],
                "properties": {"comment": {"type": "string", "pattern": NOT_BLANK}},
            },
        ],
        "properties": {
            "decision": {"type": "string", "enum": ["approve", "reject"]},
            "comment": {
                "type": "string",
                "maxLength": 4000,
                "pattern": NO_NUL,
                "nullable": True,
                "description": "why; required to reject",
            },
            "user": {
                "type": "string",
                "maxLength": 128,
                "pattern": TEXT_NOT_BLANK,
                "description": "who decides",
            },
        },
    },
    "Validation": {
        "type": "object",
        "properties": {
            "PKey": {"type": "string", "example": "@0b4e7c36-5d2a-4d44-9a51-0b1f3a3c1c11"},
            "href": {"type": "string", "format": "uri"},
            "state": {
                "type": "string",
                "enum": list(VALIDATION_STATES),
            },
            "subject": {"type": "string"},
            "instructions": {"type": "string", "nullable": True},
            "assignee": {"type": "string", "description": "a user name, or empty"},
            "group": {"type": "string", "description": "a group name, or empty"},
            "dueAt": {**_NULLABLE_TIME, "description": "when the timeout outlet fires"},
            "created": {"type": "string", "format": "date-time"},
            "decidedBy": {"type": "string"},
            "decidedAt": _NULLABLE_TIME,
            "comment": {"type": "string"},
            "workflow": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "id": {"type": "string"},
                    "PKey": {"type": "string"},
                    "href": {"type": "string", "format": "uri"},
                },
            },
            "activity": {"type": "string"},
            "job": {"type": "string"},
            "task": {"type": "string"},
            "decision": {**_LINK, "description": "where to POST the decision"},
        },
    },
    "ValidationPage": _page("Validation"),
}

_TECHNICAL = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "example": "cleanup"},
        "enabled": {"type": "boolean", "description": "false: beat does not fire it"},
        "schedule": {**_ANY_OBJECT, "description": "the scheduler activity's options"},
        "defaultSchedule": {"type": "boolean", "description": "true: beat_schedule.py's"},
        "nextFires": {"type": "array", "items": {"type": "string", "format": "date-time"}},
        "properties": _ANY_OBJECT,
        "lastSlot": _NULLABLE_TIME,
        "lastOutcome": {"type": "string", "example": "started"},
        "installed": {"type": "boolean", "description": "false: not built in this version"},
        "state": {"type": "string", "nullable": True},
        "workflowPKey": {"type": "string", "nullable": True},
    },
}

#: Technical workflows, for the system organization's admins.
TECHNICAL_SCHEMAS: dict[str, dict[str, Any]] = {
    "Technical": _TECHNICAL,
    "TechnicalList": {
        "type": "object",
        "properties": {
            "content": {"type": "array", "items": {"$ref": "#/components/schemas/Technical"}},
            "count": {"type": "object", "properties": {"value": {"type": "integer"}}},
        },
    },
    "TechnicalChange": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "schedule": {
                **_ANY_OBJECT,
                "nullable": True,
                "description": "scheduler options (10-minute minimum); null: the default",
            },
            "properties": {**_ANY_OBJECT, "description": "at most 8 KB of JSON"},
        },
    },
    "TechnicalRun": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": ["started", "skipped", "duplicate"]},
            "detail": {"type": "string"},
            "slot": {"type": "string", "format": "date-time"},
        },
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "example": "triggerRefused"},
                    "message": {"type": "string"},
                    "details": _ANY_OBJECT,
                },
            }
        },
    },
    "Link": _LINK,
    "CommandRequest": {
        "type": "object",
        "required": ["method"],
        "additionalProperties": False,
        "properties": {"method": {"type": "string", "enum": ["start", "pause", "resume", "stop"]}},
    },
    "Command": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "method": {"type": "string"},
            "state": {"type": "string", "enum": ["pending"]},
            "workflow": _LINK,
        },
    },
    "TriggerRequest": {
        "type": "object",
        "required": ["source"],
        "additionalProperties": False,
        "properties": {
            "source": {
                "type": "string",
                "maxLength": 255,
                "pattern": TEXT_NOT_BLANK,
                "description": "who triggers",
            },
            "parameters": {
                "type": "object",
                "nullable": True,
                "description": "declared parameters of the signal: string, number, boolean "
                "(also 'true'/'false'), datetime (ISO 8601, also 2019-04-03 08:17:19.100Z)",
                "additionalProperties": {
                    "nullable": True,
                    "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}],
                },
            },
        },
    },
    "TriggerAccepted": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": ["accepted", "queued"]},
            "activity": {"type": "string"},
            "job": {
                "type": "object",
                "nullable": True,
                "description": "null while the trigger is queued (workflow paused)",
                "properties": {"id": {"type": "string"}, "href": {"type": "string"}},
            },
            "workflow": _LINK,
        },
    },
    "Activity": {
        "type": "object",
        "properties": {
            "PKey": {"type": "string", "example": "@signal1"},
            "type": {"type": "string"},
            "state": {"type": "string", "description": "its latest task's state, or idle"},
            "tasks": {
                "type": "object",
                "description": "tasks of the shown version by state",
                "additionalProperties": {"type": "integer"},
            },
            "lastRun": _NULLABLE_TIME,
            "vars": _ANY_OBJECT,
            "trigger": {**_LINK, "description": "external signals only: where to POST"},
        },
    },
    "Workflow": _WORKFLOW,
    "Execution": {
        "allOf": [
            {"$ref": "#/components/schemas/Workflow"},
            {
                "type": "object",
                "properties": {
                    "version": {"type": "integer", "description": "the version shown"},
                    "activities": {
                        "type": "object",
                        "properties": {
                            "activity": {
                                "type": "object",
                                "additionalProperties": {"$ref": "#/components/schemas/Activity"},
                            }
                        },
                    },
                },
            },
        ]
    },
    "Definition": _definition(with_id=True),
    "DefinitionUpdate": _definition(with_id=False),
    "WorkflowDefinition": {
        "allOf": [
            {"$ref": "#/components/schemas/Workflow"},
            {
                "type": "object",
                "properties": {"definition": {"$ref": "#/components/schemas/Definition"}},
            },
        ]
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "href": {"type": "string", "format": "uri"},
            "origin": {"type": "string", "enum": ["start", "signal", "scheduler", "rerun"]},
            "originActivity": {"type": "string", "nullable": True},
            "source": {"type": "string", "nullable": True},
            "version": {"type": "integer"},
            "vars": _ANY_OBJECT,
            "createdAt": {"type": "string", "format": "date-time"},
            "tasks": {
                "type": "object",
                "description": "single job only: its tasks by state",
                "additionalProperties": {"type": "integer"},
            },
        },
    },
    "Task": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "activity": {"type": "string"},
            "type": {"type": "string"},
            "state": {"type": "string", "enum": [state.value for state in TaskState]},
            "job": {"type": "string"},
            "version": {"type": "integer"},
            "executions": {"type": "integer", "description": "attempts so far"},
            "createdAt": {"type": "string", "format": "date-time"},
            "startedAt": _NULLABLE_TIME,
            "finishedAt": _NULLABLE_TIME,
            "durationMs": {"type": "integer", "nullable": True},
            "dueAt": _NULLABLE_TIME,
            "outlets": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "reason": {"type": "string", "nullable": True},
            "error": {"type": "string", "nullable": True},
            "vars": _ANY_OBJECT,
            "why": {
                "type": "string",
                "nullable": True,
                "description": "pending, waiting, held and failed tasks: why it is there",
            },
        },
    },
    "LogLine": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "createdAt": {"type": "string", "format": "date-time"},
            "level": {"type": "string"},
            "message": {"type": "string"},
            "activity": {"type": "string", "nullable": True},
            "task": {"type": "string", "nullable": True},
            "job": {"type": "string", "nullable": True},
        },
    },
    "WorkflowPage": _page("Workflow"),
    "JobPage": _page("Job"),
    "TaskPage": _page("Task"),
    "Requeued": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "enum": ["pending"]},
            "workflow": _LINK,
        },
    },
    "LogPage": _page("LogLine"),
    "Health": {"type": "object", "properties": {"status": {"type": "string", "example": "ok"}}},
    **EVENT_SCHEMAS,
    **VALIDATION_SCHEMAS,
    **TECHNICAL_SCHEMAS,
    **MONITORING_SCHEMAS,
}

PARAMETERS: dict[str, dict[str, Any]] = {
    "idempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "a key of your choice (1 to 255 printable ASCII characters): the same "
        "key with the same body within 24 hours replays the first successful response "
        "(header Idempotent-Replayed: true) without doing anything again; with another body "
        "it is refused (422); while the first request runs, the others wait for it (409 "
        "after 10 s). Errors are not kept: a retry after one runs again.",
        "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"},
    },
    "taskState": {
        "name": "state",
        "in": "query",
        "description": "only tasks in this state",
        "schema": {"type": "string", "enum": [state.value for state in TaskState]},
    },
    "lineCount": {
        "name": "_lineCount",
        "in": "query",
        "description": f"lines per page (default {DEFAULT_LINE_COUNT})",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LINE_COUNT},
    },
    "lineStart": {
        "name": "_lineStart",
        "in": "query",
        "description": "offset of the first line (default 0)",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LINE_START},
    },
}


def _path_pattern(argument: str) -> dict[str, str]:
    pattern = PATH_PATTERNS.get(argument)
    return {"pattern": pattern} if pattern else {}


def openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: `<org>` becomes `{org}`."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def _operation_id(endpoint: str, method: str, seen: set[str]) -> str:
    base = f"{endpoint.replace('.', '_')}_{method}"
    found, index = base, 1
    while found in seen:
        index += 1
        found = f"{base}_{index}"
    seen.add(found)
    return found


def _complete(
    operation: dict[str, Any], public: bool, endpoint: str = "", path_parameters: bool = False
) -> None:
    """Add the error responses that come from the code rather than from the view."""
    responses = operation.setdefault("responses", {})
    expected: list[tuple[int, str]] = [(500, "InternalError")]
    if endpoint not in EXEMPT_ENDPOINTS:  # the rate limiter, and the database behind
        expected += [(429, "RateLimited"), (503, "Unavailable")]
    if not public:
        expected += [(401, "Unauthorized"), (404, "NotFound")]
        operation.setdefault("security", [{"bearerAuth": [], "apiKey": []}])
    else:
        operation["security"] = []
    if "requestBody" in operation or operation.get("parameters") or path_parameters:
        # A parameter the view refuses; any text with a NUL, which PostgreSQL cannot store
        expected += [(400, "BadRequest")]
    if "requestBody" in operation:
        expected += [(413, "PayloadTooLarge"), (415, "UnsupportedMediaType")]
    for status, name in expected:
        if status not in responses and str(status) not in responses:
            responses[status] = {"$ref": f"#/components/responses/{name}"}


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of every route of `app`."""
    settings = app.extensions["carillon"].settings
    spec = APISpec(
        title="Carillon",
        version="0.1.0",
        openapi_version=OPENAPI_VERSION,
        info={
            "description": "Campaign workflows: definitions, executions, signals, history. "
            f"Bodies are JSON objects of at most 64 KB, nested at most {MAX_DEPTH} levels; "
            "errors are {error: {code, message, details}}."
        },
        servers=[{"url": settings.public_url}],
    )
    spec.components.security_scheme(
        "bearerAuth",
        {
            "type": "http",
            "scheme": "bearer",
            "description": "an organization's token, with its X-Api-Key; or the admin token "
            "(CARILLON_ADMIN_TOKEN) alone, which may use any organization's URLs",
        },
    )
    spec.components.security_scheme(
        "apiKey", {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    )
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, copy.deepcopy(schema))
    for name, response in RESPONSES.items():
        spec.components.response(name, copy.deepcopy(response))
    for name, parameter in PARAMETERS.items():
        spec.components.parameter(name, parameter["in"], copy.deepcopy(parameter))
    seen: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda found: found.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        documented = load_operations_from_docstring(view.__doc__ or "")
        summary = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
        public = is_public(rule.endpoint)
        operations: dict[str, Any] = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            verb = method.lower()
            operation = copy.deepcopy(documented.get(verb)) or {
                "summary": summary,
                "responses": {200: {"description": "OK"}},
            }
            operation["operationId"] = _operation_id(rule.endpoint, verb, seen)
            _complete(operation, public, rule.endpoint, bool(rule.arguments))
            operations[verb] = operation
        parameters = [
            {
                "name": argument,
                "in": "path",
                "required": True,
                "description": PATH_PARAMETERS.get(argument, argument),
                "schema": {"type": "string", **_path_pattern(argument)},
            }
            for argument in sorted(rule.arguments)
        ]
        spec.path(path=openapi_path(rule.rule), operations=operations, parameters=parameters)
    return spec.to_dict()


@bp.get("/openapi.json")
def spec() -> dict[str, Any]:
    """The OpenAPI document of this API.
    ---
    get:
      summary: The OpenAPI 3 document of this API (no authentication)
      tags: [meta]
      responses:
        200:
          description: the document
          content:
            application/json:
              schema: {type: object}
    """
    cached: dict[str, Any] | None = current_app.extensions.get("carillon_openapi")
    if cached is None:
        cached = current_app.extensions["carillon_openapi"] = build_spec(current_app)
    return cached

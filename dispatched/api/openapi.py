"""The OpenAPI 3.1 description of the API, served at ``/api/openapi.json``.

Tests drive a property-based fuzzer (schemathesis) from this document, so it must say
exactly what the routes accept and answer.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from ..errors import ERROR_CODES
from ..models import JobStatus
from ..version import __version__
from . import bp

TIMESTAMP = {"type": "string", "format": "date-time"}
NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
RATE_HEADERS = {
    "X-RateLimit-Limit": {"schema": {"type": "string"}, "description": "Requests per window."},
    "X-RateLimit-Remaining": {"schema": {"type": "string"}},
    "X-RateLimit-Reset": {"schema": {"type": "string"}, "description": "Unix time of reset."},
}

#: No ``format: uri``: like webhook URLs, callbacks may be IRIs (non-ASCII paths and hosts).
CALLBACK_URL = {"type": ["string", "null"], "minLength": 1, "maxLength": 2048}
CALLBACK_RULES = (
    "Same rules as webhook URLs (https:// in production, no private addresses); "
    "retried 3 times; never counts toward the quota. null = none."
)
CALLBACK_STATES = ["pending", "delivered", "failed"]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "data"],
        "properties": {
            "error": {"type": "string", "enum": list(ERROR_CODES)},
            "data": {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"type": "string"}},
            },
        },
    },
    "DispatchRequest": {
        "type": "object",
        "required": ["payload"],
        "not": {"required": ["scheduleFor", "scheduledFor"]},
        "properties": {
            "payload": {"type": "object", "description": "Any JSON object, sent to your webhook."},
            "scheduleFor": {
                **NULLABLE_TIMESTAMP,
                "description": "When to deliver (ISO-8601; naive = UTC; past/absent = now; "
                "at most 365 days ahead).",
            },
            "scheduledFor": {**NULLABLE_TIMESTAMP, "description": "Alias of scheduleFor."},
            "maxRetries": {
                "type": "integer",
                "minimum": 0,
                "description": "Retries after the first attempt; capped by the plan; "
                "absent = the plan's cap.",
            },
            "callback": {
                **CALLBACK_URL,
                "description": "Called (POST, signed like a delivery) when the job COMPLETED: "
                '`{"type": "job.completed", "jobId", "attemptNumber", "status", "body"}`. '
                + CALLBACK_RULES,
            },
            "failureCallback": {
                **CALLBACK_URL,
                "description": "Called when the job FAILED: "
                '`{"type": "job.failed", "jobId", "attempts", "lastError"}`. ' + CALLBACK_RULES,
            },
        },
    },
    "BatchItem": {
        "type": "object",
        "required": ["payload"],
        "not": {"required": ["scheduleFor", "scheduledFor"]},
        "description": "A dispatch body, with an optional idempotency key of its own.",
        "properties": {
            "payload": {"type": "object", "description": "Any JSON object, sent to your webhook."},
            "scheduleFor": {**NULLABLE_TIMESTAMP, "description": "As in dispatchJob."},
            "scheduledFor": {**NULLABLE_TIMESTAMP, "description": "Alias of scheduleFor."},
            "maxRetries": {"type": "integer", "minimum": 0, "description": "As in dispatchJob."},
            "idempotencyKey": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "description": "A key seen within 24 h (before, or earlier in this batch) "
                "returns the original job, as it is now, with deduplicated: true.",
            },
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["jobs"],
        "properties": {
            "jobs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "description": "Items are BatchItem objects. Any other value is accepted too "
                "and refused in its own result (an invalid item never sinks the others).",
                "items": {"anyOf": [{"$ref": "#/components/schemas/BatchItem"}, {}]},
            }
        },
    },
    "BatchJob": {
        "type": "object",
        "required": ["jobId", "status", "scheduledFor", "maxRetries", "createdAt", "deduplicated"],
        "properties": {
            "jobId": {"type": "string", "pattern": "^job_[A-Za-z0-9]+$"},
            "status": {"type": "string", "enum": list(JobStatus.ALL)},
            "scheduledFor": TIMESTAMP,
            "maxRetries": {"type": "integer", "minimum": 0},
            "createdAt": TIMESTAMP,
            "deduplicated": {
                "type": "boolean",
                "description": "true: the item's idempotencyKey was seen; this is the original.",
            },
        },
    },
    "BatchResponse": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "description": "One per item, in order: its job, or the error that refused it "
                "(BAD_REQUEST, PAYLOAD_TOO_LARGE, LIMIT_REACHED).",
                "items": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/BatchJob"},
                        {"$ref": "#/components/schemas/Error"},
                    ]
                },
            }
        },
    },
    "Project": {
        "type": "object",
        "required": ["projectId", "name", "webhookUrl", "flowControl", "endpoint"],
        "properties": {
            "projectId": {"type": "integer"},
            "name": {"type": "string"},
            "webhookUrl": {"type": ["string", "null"]},
            "flowControl": {
                "type": "object",
                "required": ["parallelism", "ratePerSecond", "effectiveParallelism"],
                "properties": {
                    "parallelism": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Most attempts in flight (the plan's cap unless set lower).",
                    },
                    "ratePerSecond": {"type": ["number", "null"], "description": "null = none"},
                    "effectiveParallelism": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "In force now: lower while 429/503 answers hold it back.",
                    },
                },
            },
            "endpoint": {
                "type": "object",
                "required": ["state", "reason", "since"],
                "properties": {
                    "state": {"type": "string", "enum": ["active", "paused"]},
                    "reason": {"type": ["string", "null"]},
                    "since": NULLABLE_TIMESTAMP,
                },
            },
        },
    },
    "ProjectPatch": {
        "type": "object",
        "additionalProperties": False,
        "description": "A JSON merge patch: fields left out stay as they are, null resets.",
        "properties": {
            "webhookUrl": {
                "type": ["string", "null"],
                "maxLength": 2048,
                "description": "http(s) URL (the SSRF rules apply); null clears it.",
            },
            "flowControl": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "description": "Merged; a null field (or a null flowControl) goes back to the "
                "plan's default. Above the plan's cap = 400.",
                "properties": {
                    "parallelism": {"type": ["integer", "null"], "minimum": 1},
                    "ratePerSecond": {"type": ["number", "null"], "exclusiveMinimum": 0},
                },
            },
        },
    },
    "DispatchResponse": {
        "type": "object",
        "required": ["jobId", "status", "scheduledFor", "maxRetries", "createdAt"],
        "properties": {
            "jobId": {"type": "string", "pattern": "^job_[A-Za-z0-9]+$"},
            "status": {"type": "string", "enum": list(JobStatus.ALL)},
            "scheduledFor": TIMESTAMP,
            "maxRetries": {"type": "integer", "minimum": 0},
            "createdAt": TIMESTAMP,
        },
    },
    "Job": {
        "type": "object",
        "required": [
            "jobId",
            "status",
            "payload",
            "scheduledFor",
            "createdAt",
            "updatedAt",
            "maxRetries",
            "attempts",
            "nextAttemptAt",
            "completedAt",
            "cancelledAt",
            "lastError",
            "scheduleId",
            "callback",
            "failureCallback",
            "callbackStatus",
        ],
        "properties": {
            "jobId": {"type": "string"},
            "status": {"type": "string", "enum": list(JobStatus.ALL)},
            "payload": {"type": "object"},
            "scheduledFor": TIMESTAMP,
            "createdAt": TIMESTAMP,
            "updatedAt": TIMESTAMP,
            "maxRetries": {"type": "integer", "minimum": 0},
            "attempts": {"type": "integer", "minimum": 0, "description": "Attempts made."},
            "nextAttemptAt": NULLABLE_TIMESTAMP,
            "completedAt": NULLABLE_TIMESTAMP,
            "cancelledAt": NULLABLE_TIMESTAMP,
            "lastError": {"type": ["string", "null"]},
            "scheduleId": {
                "type": ["string", "null"],
                "description": "The schedule whose fire created the job; null when dispatched.",
            },
            "callback": {"type": ["string", "null"]},
            "failureCallback": {"type": ["string", "null"]},
            "callbackStatus": {
                "enum": [None, *CALLBACK_STATES],
                "description": "The latest callback's delivery: null (none sent), pending "
                "(being sent or retried), delivered (2xx) or failed (retries spent).",
            },
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "nextCursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "nextCursor": {"type": ["string", "null"]},
        },
    },
    "Cancelled": {
        "type": "object",
        "required": ["jobId", "status"],
        "properties": {"jobId": {"type": "string"}, "status": {"const": "CANCELLED"}},
    },
    "RescheduleRequest": {
        "type": "object",
        "required": ["scheduledFor"],
        "properties": {
            "scheduledFor": {
                **NULLABLE_TIMESTAMP,
                "description": "New delivery time; null or past = now.",
            }
        },
    },
    "Attempt": {
        "type": "object",
        "required": ["attemptId", "attemptNumber", "startedAt", "outcome"],
        "properties": {
            "attemptId": {"type": "string"},
            "attemptNumber": {"type": "integer", "minimum": 1},
            "startedAt": TIMESTAMP,
            "finishedAt": NULLABLE_TIMESTAMP,
            "durationMs": {"type": ["integer", "null"]},
            "httpStatus": {"type": ["integer", "null"]},
            "outcome": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "responseExcerpt": {"type": ["string", "null"]},
        },
    },
    "AttemptList": {
        "type": "object",
        "required": ["jobId", "attempts"],
        "properties": {
            "jobId": {"type": "string"},
            "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}},
        },
    },
    "Usage": {
        "type": "object",
        "required": ["plan", "jobsThisMonth", "limit", "daysUntilReset", "rateLimit"],
        "properties": {
            "plan": {"type": "string"},
            "jobsThisMonth": {"type": "integer", "minimum": 0},
            "limit": {"type": ["integer", "null"], "description": "null = unlimited"},
            "daysUntilReset": {"type": "integer", "minimum": 1},
            "resetsAt": TIMESTAMP,
            "rateLimit": {
                "type": "object",
                "required": ["requestsPerMinute"],
                "properties": {"requestsPerMinute": {"type": "integer"}},
            },
        },
    },
}


CRON_DESCRIPTION = (
    "Standard 5-field cron (minute hour day-of-month month day-of-week: ranges, steps, lists, "
    "names such as MON or JAN) or @yearly, @monthly, @weekly, @daily, @hourly; evaluated in "
    "`timezone`. A local time skipped by a DST change fires once at the first instant after "
    "the gap; a repeated one fires once, at its first occurrence."
)
SCHEDULE_FIELDS: dict[str, Any] = {
    "cron": {"type": "string", "minLength": 1, "maxLength": 120, "description": CRON_DESCRIPTION},
    "timezone": {
        "type": "string",
        "maxLength": 64,
        "description": "IANA zone name, e.g. Europe/Berlin (default UTC).",
    },
    "payload": {"type": "object", "description": "Sent to your webhook by each fire's job."},
    "maxRetries": {
        "type": ["integer", "null"],
        "minimum": 0,
        "description": "Retries of each fire's job; capped by the plan; absent or null = cap.",
    },
    "name": {"type": ["string", "null"], "minLength": 1, "maxLength": 200},
    "catchUp": {
        "type": "string",
        "enum": ["none", "latest"],
        "description": "Fires missed while no scheduler ran: none = skip them (default), "
        "latest = make up the most recent one, once.",
    },
}
FIRE_TIME = {
    "type": "object",
    "required": ["at", "local", "dst"],
    "properties": {
        "at": TIMESTAMP,
        "local": {**TIMESTAMP, "description": "The same instant in the schedule's zone."},
        "dst": {
            "type": ["string", "null"],
            "enum": ["shifted", "deduplicated", None],
            "description": "shifted: stands for local times a spring-forward skipped; "
            "deduplicated: a repeated local time, fired at its first occurrence only.",
        },
    },
}
SCHEMAS.update(
    {
        "ScheduleRequest": {
            "type": "object",
            "required": ["cron", "payload"],
            "additionalProperties": False,
            "properties": SCHEDULE_FIELDS,
        },
        "SchedulePatch": {
            "type": "object",
            "additionalProperties": False,
            "properties": SCHEDULE_FIELDS,
        },
        "Schedule": {
            "type": "object",
            "required": [
                "scheduleId",
                "name",
                "cron",
                "timezone",
                "payload",
                "maxRetries",
                "catchUp",
                "paused",
                "nextFireAt",
                "nextFireAtLocal",
                "nextFireDst",
                "lastFireAt",
                "createdAt",
                "updatedAt",
            ],
            "properties": {
                "scheduleId": {"type": "string", "pattern": "^sch_[A-Za-z0-9]+$"},
                "name": {"type": ["string", "null"]},
                "cron": {"type": "string"},
                "timezone": {"type": "string"},
                "payload": {"type": "object"},
                "maxRetries": {"type": "integer", "minimum": 0},
                "catchUp": {"type": "string", "enum": ["none", "latest"]},
                "paused": {"type": "boolean"},
                "nextFireAt": {
                    **NULLABLE_TIMESTAMP,
                    "description": "UTC; null while paused.",
                },
                "nextFireAtLocal": {
                    **NULLABLE_TIMESTAMP,
                    "description": "The next fire in the schedule's zone (with its offset).",
                },
                "nextFireDst": FIRE_TIME["properties"]["dst"],
                "lastFireAt": NULLABLE_TIMESTAMP,
                "createdAt": TIMESTAMP,
                "updatedAt": TIMESTAMP,
            },
        },
        "ScheduleList": {
            "type": "object",
            "required": ["schedules", "nextCursor"],
            "properties": {
                "schedules": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Schedule"},
                },
                "nextCursor": {"type": ["string", "null"]},
            },
        },
        "ScheduleDeleted": {
            "type": "object",
            "required": ["scheduleId", "deleted"],
            "properties": {"scheduleId": {"type": "string"}, "deleted": {"const": True}},
        },
        "FireTimes": {
            "type": "object",
            "required": ["fires"],
            "properties": {"fires": {"type": "array", "items": FIRE_TIME, "maxItems": 100}},
        },
        "ScheduleFires": {
            "type": "object",
            "required": ["scheduleId", "fires"],
            "properties": {
                "scheduleId": {"type": "string"},
                "fires": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["fireAt", "outcome", "jobId", "reason", "dst"],
                        "properties": {
                            "fireAt": TIMESTAMP,
                            "outcome": {"type": "string", "enum": ["created", "skipped"]},
                            "jobId": {"type": ["string", "null"]},
                            "reason": {"type": ["string", "null"]},
                            "dst": FIRE_TIME["properties"]["dst"],
                            "recordedAt": TIMESTAMP,
                        },
                    },
                },
            },
        },
    }
)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": RATE_HEADERS,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


COMMON_ERRORS = {
    "401": _error("Missing, unknown or revoked API key."),
    "429": _error("RATE_LIMITED (per-team request rate, with Retry-After)."),
}
JOB_ID = {
    "name": "jobId",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


PATHS: dict[str, Any] = {
    "/api/jobs/dispatch": {
        "post": {
            "operationId": "dispatchJob",
            "summary": "Create a job: deliver its payload to the project's webhook now or later.",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "A repeat within 24 h returns the original job with 200.",
                }
            ],
            "requestBody": _body("DispatchRequest"),
            "responses": {
                "201": _ok("Job accepted.", "DispatchResponse"),
                "200": _ok("Idempotent repeat: the original job.", "DispatchResponse"),
                "400": _error("Invalid body (the message names the field)."),
                "413": _error("Payload larger than the plan allows."),
                "415": _error("Content-Type is not application/json."),
                **COMMON_ERRORS,
                "429": _error("RATE_LIMITED, or LIMIT_REACHED when the monthly quota is used."),
            },
        }
    },
    "/api/jobs/dispatch/batch": {
        "post": {
            "operationId": "dispatchBatch",
            "summary": "Create up to 100 jobs in one request; each item succeeds or fails alone.",
            "description": "Items are created in order until the monthly quota is spent (later "
            "ones get LIMIT_REACHED); an invalid item never sinks the others. The request counts "
            "once toward the rate limit, each created job once toward the quota. The "
            "Idempotency-Key header does not apply: give items an idempotencyKey.",
            "requestBody": _body("BatchRequest"),
            "responses": {
                "200": _ok("One result per item, in order.", "BatchResponse"),
                "400": _error("No jobs array of 1-100 items, or not a JSON object."),
                "413": _error("The request body is over 1 MiB."),
                "415": _error("Content-Type is not application/json."),
                **COMMON_ERRORS,
            },
        }
    },
    "/api/project": {
        "get": {
            "operationId": "getProject",
            "summary": "The key's project: webhook URL, flow control, endpoint state.",
            "responses": {"200": _ok("The project.", "Project"), **COMMON_ERRORS},
        },
        "patch": {
            "operationId": "updateProject",
            "summary": "Change the webhook URL and flow control (an admin-scope key).",
            "requestBody": _body("ProjectPatch"),
            "responses": {
                "200": _ok("The project, changed.", "Project"),
                "400": _error("Unknown or read-only field, bad URL, value out of range."),
                "403": _error("FORBIDDEN: the key does not have the admin scope."),
                "415": _error("Content-Type is not application/json."),
                **COMMON_ERRORS,
            },
        },
    },
    "/api/project/resume": {
        "post": {
            "operationId": "resumeProject",
            "summary": "Resume the project's paused endpoint (an admin-scope key).",
            "description": "Held attempts are released again, starting at parallelism 1. "
            "Resuming an active endpoint changes nothing.",
            "responses": {
                "200": _ok("The project.", "Project"),
                "403": _error("FORBIDDEN: the key does not have the admin scope."),
                **COMMON_ERRORS,
            },
        }
    },
    "/api/jobs": {
        "get": {
            "operationId": "listJobs",
            "summary": "List the project's jobs, newest first.",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(JobStatus.ALL)},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                },
                {"name": "cursor", "in": "query", "schema": {"type": "string", "minLength": 1}},
            ],
            "responses": {
                "200": _ok("A page of jobs.", "JobList"),
                "400": _error("Bad status, limit or cursor."),
                **COMMON_ERRORS,
            },
        }
    },
    "/api/jobs/{jobId}": {
        "parameters": [JOB_ID],
        "get": {
            "operationId": "getJob",
            "summary": "Read a job.",
            "responses": {
                "200": _ok("The job.", "Job"),
                "404": _error("No such job in this project."),
                **COMMON_ERRORS,
            },
        },
        "delete": {
            "operationId": "cancelJob",
            "summary": "Cancel a QUEUED job.",
            "responses": {
                "200": _ok("Cancelled.", "Cancelled"),
                "404": _error("No such job in this project."),
                "409": _error("Job is not in QUEUED status."),
                **COMMON_ERRORS,
            },
        },
        "patch": {
            "operationId": "rescheduleJob",
            "summary": "Move a QUEUED job's delivery time (null = now).",
            "requestBody": _body("RescheduleRequest"),
            "responses": {
                "200": _ok("The rescheduled job.", "Job"),
                "400": _error("Invalid body."),
                "404": _error("No such job in this project."),
                "409": _error("Job is not in QUEUED status."),
                "415": _error("Content-Type is not application/json."),
                **COMMON_ERRORS,
            },
        },
    },
    "/api/jobs/{jobId}/attempts": {
        "parameters": [JOB_ID],
        "get": {
            "operationId": "listAttempts",
            "summary": "The job's delivery attempts, oldest first.",
            "responses": {
                "200": _ok("The attempt log.", "AttemptList"),
                "404": _error("No such job in this project."),
                **COMMON_ERRORS,
            },
        },
    },
    "/api/jobs/{jobId}/replay": {
        "parameters": [JOB_ID],
        "post": {
            "operationId": "replayJob",
            "summary": "Deliver a FAILED job again, with a fresh retry budget.",
            "description": "A replay counts as one job toward the monthly quota.",
            "responses": {
                "200": _ok("The job, QUEUED again.", "Job"),
                "404": _error("No such job in this project."),
                "409": _error("Job is not in FAILED status."),
                **COMMON_ERRORS,
                "429": _error("RATE_LIMITED, or LIMIT_REACHED when the monthly quota is used."),
            },
        },
    },
    "/api/usage": {
        "get": {
            "operationId": "getUsage",
            "summary": "This month's usage against the team's plan.",
            "responses": {"200": _ok("Usage.", "Usage"), **COMMON_ERRORS},
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness: the process is up (no dependency checked).",
            "security": [],
            "responses": {
                "200": {
                    "description": "Up.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {"status": {"const": "ok"}},
                            }
                        }
                    },
                }
            },
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: the database and Redis answer.",
            "security": [],
            "responses": {
                "200": {
                    "description": "Ready.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status", "checks"],
                                "properties": {
                                    "status": {"const": "ready"},
                                    "checks": {"type": "object"},
                                },
                            }
                        }
                    },
                },
                "503": _error("SERVICE_UNAVAILABLE: data.checks says which dependency failed."),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus text exposition.",
            "description": "Open unless the server sets METRICS_TOKEN; then it needs "
            "`Authorization: Bearer <METRICS_TOKEN>` (not an API key).",
            "security": [],
            "responses": {
                "200": {
                    "description": "Metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": _error("METRICS_TOKEN is set and the request does not carry it."),
            },
        }
    },
}


SCHEDULE_ID = {"name": "scheduleId", "in": "path", "required": True, "schema": {"type": "string"}}
PREVIEW_QUERY = [
    {
        "name": "count",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
    },
    {
        "name": "from",
        "in": "query",
        "schema": {"type": "string", "format": "date-time"},
        "description": "Start after this instant (default now); years 1970-2999.",
    },
]
LIST_QUERY = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
    {"name": "cursor", "in": "query", "schema": {"type": "string", "minLength": 1}},
]
NO_SCHEDULE = _error("No such schedule in this project (or it was deleted).")
PATHS.update(
    {
        "/api/schedules": {
            "post": {
                "operationId": "createSchedule",
                "summary": "Create a recurring schedule: each fire creates one job.",
                "requestBody": _body("ScheduleRequest"),
                "responses": {
                    "201": _ok("The schedule, with its next fire time.", "Schedule"),
                    "400": _error("Invalid body: the message names the field (and cron field)."),
                    "409": _error("CONFLICT: the plan's number of schedules is reached."),
                    "413": _error("Payload larger than the plan allows."),
                    "415": _error("Content-Type is not application/json."),
                    **COMMON_ERRORS,
                },
            },
            "get": {
                "operationId": "listSchedules",
                "summary": "List the project's schedules, newest first.",
                "parameters": LIST_QUERY,
                "responses": {
                    "200": _ok("A page of schedules.", "ScheduleList"),
                    "400": _error("Bad limit or cursor."),
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/schedules/preview": {
            "get": {
                "operationId": "previewCron",
                "summary": "The next fire times of an expression, without creating a schedule.",
                "parameters": [
                    {
                        "name": "cron",
                        "in": "query",
                        "required": True,
                        "schema": SCHEDULE_FIELDS["cron"],
                    },
                    {"name": "timezone", "in": "query", "schema": SCHEDULE_FIELDS["timezone"]},
                    *PREVIEW_QUERY,
                ],
                "responses": {
                    "200": _ok("Fire times, UTC and local, with DST notes.", "FireTimes"),
                    "400": _error("Bad cron, timezone, count or from."),
                    **COMMON_ERRORS,
                },
            }
        },
        "/api/schedules/{scheduleId}": {
            "parameters": [SCHEDULE_ID],
            "get": {
                "operationId": "getSchedule",
                "summary": "Read a schedule.",
                "responses": {
                    "200": _ok("The schedule.", "Schedule"),
                    "404": NO_SCHEDULE,
                    **COMMON_ERRORS,
                },
            },
            "patch": {
                "operationId": "updateSchedule",
                "summary": "Change a schedule; a new cron or timezone moves the next fire.",
                "requestBody": _body("SchedulePatch"),
                "responses": {
                    "200": _ok("The schedule.", "Schedule"),
                    "400": _error("Invalid body."),
                    "404": NO_SCHEDULE,
                    "413": _error("Payload larger than the plan allows."),
                    "415": _error("Content-Type is not application/json."),
                    **COMMON_ERRORS,
                },
            },
            "delete": {
                "operationId": "deleteSchedule",
                "summary": "Delete a schedule: it stops at once; its jobs stay.",
                "responses": {
                    "200": _ok("Deleted.", "ScheduleDeleted"),
                    "404": NO_SCHEDULE,
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/schedules/{scheduleId}/pause": {
            "parameters": [SCHEDULE_ID],
            "post": {
                "operationId": "pauseSchedule",
                "summary": "Pause: nothing fires until resumed (missed fires are not made up).",
                "responses": {
                    "200": _ok("The schedule.", "Schedule"),
                    "404": NO_SCHEDULE,
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/schedules/{scheduleId}/resume": {
            "parameters": [SCHEDULE_ID],
            "post": {
                "operationId": "resumeSchedule",
                "summary": "Resume from the next fire time after now.",
                "responses": {
                    "200": _ok("The schedule.", "Schedule"),
                    "404": NO_SCHEDULE,
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/schedules/{scheduleId}/preview": {
            "parameters": [SCHEDULE_ID],
            "get": {
                "operationId": "previewSchedule",
                "summary": "The schedule's next fire times, UTC and local, with DST notes.",
                "parameters": PREVIEW_QUERY,
                "responses": {
                    "200": _ok("Fire times.", "FireTimes"),
                    "400": _error("Bad count or from."),
                    "404": NO_SCHEDULE,
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/schedules/{scheduleId}/jobs": {
            "parameters": [SCHEDULE_ID],
            "get": {
                "operationId": "listScheduleJobs",
                "summary": "The jobs the schedule created, newest first.",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(JobStatus.ALL)},
                    },
                    *LIST_QUERY,
                ],
                "responses": {
                    "200": _ok("A page of jobs.", "JobList"),
                    "400": _error("Bad status, limit or cursor."),
                    "404": NO_SCHEDULE,
                    **COMMON_ERRORS,
                },
            },
        },
        "/api/schedules/{scheduleId}/fires": {
            "parameters": [SCHEDULE_ID],
            "get": {
                "operationId": "listScheduleFires",
                "summary": "The schedule's most recent fires: the job created, or why skipped.",
                "parameters": [LIST_QUERY[0]],
                "responses": {
                    "200": _ok("Fires, newest first.", "ScheduleFires"),
                    "400": _error("Bad limit."),
                    "404": NO_SCHEDULE,
                    **COMMON_ERRORS,
                },
            },
        },
    }
)


def document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Dispatched API",
            "version": __version__,
            "description": "Background jobs over webhooks. Every error is "
            '`{"error": CODE, "data": {"message": ...}}`.',
        },
        "servers": [{"url": current_app.config["PUBLIC_URL"]}],
        "security": [{"apiKey": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (disp_k1_…); it selects the project. Keys "
                    "have a scope: jobs (the default) or admin (also the project's settings).",
                }
            },
        },
    }


@bp.get("/openapi.json")
def openapi() -> dict[str, Any]:
    return document()

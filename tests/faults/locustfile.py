"""F15 load for `locust --headless -f tests/faults/locustfile.py` (never imported by pytest:
locust patches its process with gevent).

API users of one organization trigger a workflow's signal and read its execution without
pause; every answer's status is counted, and when locust quits the counts, the 429s without
Retry-After and the latency percentiles go to CARILLON_LOAD_REPORT as JSON.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

from locust import HttpUser, constant, events, task

ORG = os.environ["CARILLON_LOAD_ORG"]
WORKFLOW = os.environ["CARILLON_LOAD_WORKFLOW"]
SEGMENT = os.environ["CARILLON_LOAD_SEGMENT"]
REPORT = os.environ["CARILLON_LOAD_REPORT"]
HEADERS = {
    "Authorization": f"Bearer {os.environ['CARILLON_LOAD_TOKEN']}",
    "X-Api-Key": os.environ["CARILLON_LOAD_API_KEY"],
}
EXECUTION = f"/{ORG}/campaign/workflow/execution/{WORKFLOW}"

statuses: Counter[str] = Counter()
#: 429 answers without a Retry-After header (there must be none).
missing_retry_after: Counter[str] = Counter()


@events.request.add_listener
def count(response: Any = None, exception: Any = None, **_: Any) -> None:
    status = getattr(response, "status_code", None) or 0  # 0: no answer (connection error)
    statuses[str(status)] += 1
    if status == 429 and not response.headers.get("Retry-After"):
        missing_retry_after["429"] += 1


@events.quitting.add_listener
def report(environment: Any, **_: Any) -> None:
    total = environment.stats.total
    with open(REPORT, "w") as out:
        json.dump(
            {
                "statuses": dict(statuses),
                "missingRetryAfter": missing_retry_after["429"],
                "requests": total.num_requests,
                "p50": total.get_response_time_percentile(0.5),
                "p99": total.get_response_time_percentile(0.99),
                "max": total.max_response_time,
                "rps": total.total_rps,
            },
            out,
        )


class ApiUser(HttpUser):
    wait_time = constant(0)

    @task(3)
    def read_execution(self) -> None:
        self.client.get(EXECUTION, headers=HEADERS, name="GET execution")

    @task(1)
    def trigger(self) -> None:
        self.client.post(
            f"{EXECUTION}/activities/activity/signal1/trigger",
            json={"source": "locust", "parameters": {"segmentCode": SEGMENT}},
            headers=HEADERS,
            name="POST trigger",
        )

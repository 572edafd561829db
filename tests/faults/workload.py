"""The scenarios' workload: profiles and three workflow shapes with real side effects.

- `linear`: start, query a segment, email it (SMTP server), end.
- `fork_join`: start, fork into an email branch and an SMS branch (HTTP provider), and-join.
- `signal_wait`: an external signal, then an SMS to the segment, end.

Every workflow gets its own segment of profiles, so what its deliveries sent can be told
apart at the SMTP server and the provider.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from tests.integration.conftest import Stack
from tests.integration.test_delivery_live import seed

#: Profiles per segment (each receives one email and, in fork_join, one SMS).
PROFILES = 30
#: Messages per connector batch: small, so a fault lands mid-delivery.
BATCH = 5
#: A delivery big enough to be spread over the pool processes (delivery_batch.MIN_RECIPIENTS)
#: and its batch size: 12 batches that two processes send side by side.
SPREAD_PROFILES = 1_200
SPREAD_BATCH = 100


def seed_segment(stack: Stack, org: str, segment: str, count: int = PROFILES) -> None:
    seed(
        stack,
        org,
        [
            {
                "crmId": f"{segment}-{i}",
                "email": f"p{i}.{segment}@example.org",
                "mobilePhone": f"+3360{zlib.crc32(segment.encode()) % 10**5:05d}{i:03d}",
                "firstName": f"P{i}",
                "segmentCode": segment,
            }
            for i in range(count)
        ],
    )


def _query(name: str, segment: str, then: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "filter": {"field": "segmentCode", "op": "eq", "value": segment},
        "transitions": {"result": then},
    }


def _email(name: str, then: str, batch: int = BATCH) -> dict[str, Any]:
    return {
        "name": name,
        "type": "email",
        "subject": "Hello {{ profile.firstName }}",
        "text": "Dear {{ profile.firstName }}",
        "batchSize": batch,
        "transitions": {"done": then},
    }


def _sms(name: str, then: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "sms",
        "text": "Hi {{ profile.firstName }}",
        "batchSize": BATCH,
        "transitions": {"done": then},
    }


def linear(name: str, segment: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "query1"}},
            _query("query1", segment, "email1"),
            _email("email1", "end1"),
            {"name": "end1", "type": "end"},
        ],
    }


def linear_spread(name: str, segment: str) -> dict[str, Any]:
    """`linear` whose email is sent in SPREAD_BATCH batches: with SPREAD_PROFILES profiles
    (launch(..., profiles=SPREAD_PROFILES)) its batches spread over the pool processes."""
    workflow = linear(name, segment)
    workflow["activities"][2] = _email("email1", "end1", SPREAD_BATCH)
    return workflow


def fork_join(name: str, segment: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {"name": "start1", "type": "start", "transitions": {"done": "fork1"}},
            {"name": "fork1", "type": "fork", "transitions": {"done": ["queryA", "queryB"]}},
            _query("queryA", segment, "email1"),
            _email("email1", "join1"),
            _query("queryB", segment, "sms1"),
            _sms("sms1", "join1"),
            {"name": "join1", "type": "andJoin", "transitions": {"done": "end1"}},
            {"name": "end1", "type": "end"},
        ],
    }


def signal_wait(name: str, segment: str) -> dict[str, Any]:
    return {
        "id": name,
        "activities": [
            {
                "name": "signal1",
                "type": "externalSignal",
                "parameters": {"segmentCode": "string"},
                "transitions": {"done": "query1"},
            },
            _query("query1", segment, "sms1"),
            _sms("sms1", "end1"),
            {"name": "end1", "type": "end"},
        ],
    }


SHAPES = {
    "linear": linear,
    "linear_spread": linear_spread,
    "fork_join": fork_join,
    "signal_wait": signal_wait,
}


def unique(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{rng.getrandbits(40):010x}"

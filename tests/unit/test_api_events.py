"""The events, bounce, message template and tracking endpoints, hostile input included."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, insert, select, update

from tests import api_conftest
from tests.api_conftest import Rest, error_of
from worker import events
from worker.channels import tracking
from worker.db import utcnow
from worker.marketing import profile
from worker.messaging import delivery, delivery_log, event, message_template, tracking_log

make_rest_fixture = api_conftest.make_rest_fixture
rest_fixture = api_conftest.rest_fixture

EVENTS = "/acme/campaign/event"
TEMPLATES = "/acme/campaign/messageTemplate"
BOUNCE = "/acme/campaign/bounce"
ORDER = {
    "name": "orderConfirmation",
    "eventType": "orderPlaced",
    "channel": "email",
    "content": {
        "subject": "Order {{ ctx.orderId }}",
        "html": '<p>Hi {{ ctx.firstName }}</p><a href="https://shop.example.com/">shop</a>',
        "text": "Hi {{ ctx.firstName }}",
    },
    "expiryHours": 24,
}


def counts(rest: Rest) -> dict[str, int]:
    """Rows the endpoints under test may write: a refused request leaves them unchanged."""
    with rest.services.sessions() as s:
        return {
            table.name: s.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (event, delivery, delivery_log, tracking_log, message_template)
        }


def post_event(rest: Rest, body: Any, event_type: str = "orderPlaced") -> Any:
    return rest.post(f"{EVENTS}/{event_type}", body)


# ---------------------------------------------------------------------------------- events


def test_a_posted_event_is_stored_pending_and_published_after_commit(rest: Rest) -> None:
    # Given a dispatcher that can publish events and checks the row is committed
    seen: list[tuple[list[int], str | None]] = []

    def publish(ids: list[int]) -> None:
        with rest.services.sessions() as s:
            status = s.execute(select(event.c.status).where(event.c.id == ids[0])).scalar()
        seen.append((ids, status))

    rest.stub.process_events = publish  # type: ignore[attr-defined]

    # When an event is posted
    response = post_event(rest, {"email": "ada@example.com", "ctx": {"firstName": "Ada"}})

    # Then it is 201 pending with a link to itself, and was published once committed
    assert response.status_code == 201, response.json
    body = response.json
    assert body["status"] == "pending" and body["eventType"] == "orderPlaced"
    assert body["PKey"].startswith("@") and len(body["PKey"]) > 20
    assert body["href"] == f"{api_conftest.PUBLIC_URL}{EVENTS}/orderPlaced/{body['PKey']}"
    assert len(seen) == 1 and seen[0][1] == "pending"
    got = rest.get(body["href"][len(api_conftest.PUBLIC_URL) :])
    assert got.status_code == 200
    assert got.json["status"] == "pending" and got.json["ctx"] == {"firstName": "Ada"}


def test_a_failed_publish_still_answers_201_and_leaves_the_event_for_the_sweep(
    rest: Rest,
) -> None:
    def broken(ids: list[int]) -> None:
        raise ConnectionError("broker down")

    rest.stub.process_events = broken  # type: ignore[attr-defined]

    response = post_event(rest, {"mobilePhone": "+33 6 12 34 56 78"})

    assert response.status_code == 201
    report = events.sweep(rest.services.sessions, pending_after=0, processing_after=60)
    assert len(report.republish) == 1


@pytest.mark.parametrize(
    "event_type",
    ["a" * 65, "order-placed", "order.placed", "commande_é", "%00", "x%20y"],
)
def test_a_bad_event_type_is_refused_and_nothing_is_stored(rest: Rest, event_type: str) -> None:
    before = counts(rest)

    response = post_event(rest, {"email": "ada@example.com"}, event_type)

    error_of(response, 400)
    assert counts(rest) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "email"),
        ({"ctx": {"a": 1}}, "email"),
        ({"email": ""}, "email"),
        ({"email": 42}, "email"),
        ({"email": "no-at-sign"}, "email"),
        ({"email": "ada@example.com\r\nBcc: all@example.com"}, "email"),
        ({"email": "a" * 250 + "@example.com"}, "email"),
        ({"mobilePhone": "call me"}, "mobilePhone"),
        ({"pushToken": "tok\x00en"}, "pushToken"),
        ({"email": "ada@example.com", "ctx": []}, "ctx"),
        ({"email": "ada@example.com", "ctx": "text"}, "ctx"),
        ({"email": "ada@example.com", "ctx": {"k" * 200: 1}}, "ctx"),
    ],
)
def test_malformed_events_are_refused_naming_the_field(
    rest: Rest, body: dict[str, Any], field: str
) -> None:
    before = counts(rest)

    error = error_of(post_event(rest, body), 400)

    assert error["details"]["field"] == field
    assert counts(rest) == before


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_ctx_nested_past_ten_levels_is_refused_and_ten_is_accepted(rest: Rest) -> None:
    error = error_of(post_event(rest, {"email": "a@example.com", "ctx": nested(11)}), 400)
    assert "deep" in error["message"]

    assert post_event(rest, {"email": "a@example.com", "ctx": nested(10)}).status_code == 201


def test_ctx_with_too_many_items_is_refused(rest: Rest) -> None:
    ctx = {"items": list(range(events.MAX_CTX_NODES + 1))}

    error = error_of(post_event(rest, {"email": "a@example.com", "ctx": ctx}), 400)

    assert "2000" in error["message"]
    assert counts(rest)["event"] == 0


def test_other_hostile_bodies_get_a_clear_4xx_and_store_nothing(rest: Rest) -> None:
    path = f"{EVENTS}/orderPlaced"
    huge = json.dumps({"email": "a@example.com", "ctx": {"blob": "x" * 70_000}}).encode()
    cases = [
        (rest.raw("POST", path, huge), 413),
        (rest.raw("POST", path, b'{"email": "a@example.com"}', "text/plain"), 415),
        (rest.raw("POST", path, b'{"email": NaN}'), 400),
        (rest.raw("POST", path, b"[" * 30_000), 400),
        (rest.raw("POST", path, b"\xff\xfe"), 400),
        (rest.raw("POST", path, b'{"email": "a@example.com", "extra": 1}'), 400),
        (rest.raw("POST", path, b""), 400),
    ]

    for response, status in cases:
        error_of(response, status)
    assert counts(rest)["event"] == 0


def test_events_need_credentials_and_are_invisible_to_other_organizations(rest: Rest) -> None:
    created = post_event(rest, {"email": "ada@example.com"}).json
    path = f"{EVENTS}/orderPlaced/{created['PKey']}"

    error_of(rest.client.post(f"{EVENTS}/orderPlaced", json={"email": "a@b.c"}), 401)
    error_of(rest.get(path, headers=rest.globex), 404)
    error_of(rest.get(path.replace("/acme/", "/globex/"), headers=rest.globex), 404)
    error_of(rest.post("/nosuchorg/campaign/event/orderPlaced", {"email": "a@b.c"}), 404)
    error_of(rest.get(f"{EVENTS}/otherType/{created['PKey']}"), 404)
    error_of(rest.get(f"{EVENTS}/orderPlaced/@nosuchkey"), 404)
    error_of(rest.get(f"{EVENTS}/orderPlaced/@{'x' * 5000}"), 404)
    assert rest.get(path).status_code == 200
    assert rest.get(path.replace("/@", "/")).status_code == 200


# ---------------------------------------------------------------------------------- bounces


def sent_log(rest: Rest, org: str, address: str, message_id: str) -> int:
    """A sent email delivery log of `org`, written as a delivery would."""
    from worker import catalog

    with rest.services.sessions() as s, s.begin():
        org_id = catalog.ensure_org(s, org).id
        delivery_id = s.execute(
            insert(delivery)
            .values(org_id=org_id, channel="email", name="d1", content={})
            .returning(delivery.c.id)
        ).scalar_one()
        s.execute(insert(profile).values(org_id=org_id, email=address, crmId=f"crm-{message_id}"))
        return int(
            s.execute(
                insert(delivery_log)
                .values(
                    deliveryId=delivery_id,
                    org_id=org_id,
                    profileId=1,
                    address=address,
                    status="sent",
                    messageId=message_id,
                )
                .returning(delivery_log.c.id)
            ).scalar_one()
        )


def log_status(rest: Rest, log_id: int) -> str:
    with rest.services.sessions() as s:
        return str(
            s.execute(select(delivery_log.c.status).where(delivery_log.c.id == log_id)).scalar()
        )


def quarantined(rest: Rest, address: str) -> bool:
    with rest.services.sessions() as s:
        return bool(
            s.execute(select(profile.c.emailBlacklisted).where(profile.c.email == address)).scalar()
        )


def test_a_hard_bounce_marks_the_log_bounced_and_quarantines_the_address(rest: Rest) -> None:
    log_id = sent_log(rest, "acme", "gone@example.com", "m-1")

    response = rest.post(BOUNCE, {"messageId": "m-1", "kind": "hard", "detail": "550 no user"})

    assert response.status_code == 200, response.json
    assert response.json["recorded"] == 1 and response.json["bounced"] == 1
    assert log_status(rest, log_id) == "bounced"
    assert quarantined(rest, "gone@example.com")
    with rest.services.sessions() as s:
        hit = s.execute(select(tracking_log)).mappings().one()
    assert hit["kind"] == "bounce" and hit["detail"] == "hard: 550 no user"


def test_a_soft_bounce_does_not_quarantine_and_a_complaint_keeps_the_log_sent(
    rest: Rest,
) -> None:
    soft = sent_log(rest, "acme", "full@example.com", "m-soft")
    spam = sent_log(rest, "acme", "angry@example.com", "m-spam")

    response = rest.post(
        BOUNCE,
        [{"messageId": "m-soft", "kind": "soft"}, {"messageId": "m-spam", "kind": "complaint"}],
    )

    assert response.json["recorded"] == 2
    assert log_status(rest, soft) == "bounced" and not quarantined(rest, "full@example.com")
    assert log_status(rest, spam) == "sent" and quarantined(rest, "angry@example.com")


def test_a_bounce_for_another_organizations_message_changes_nothing(rest: Rest) -> None:
    log_id = sent_log(rest, "globex", "theirs@example.com", "globex-1")
    before = counts(rest)

    response = rest.post(BOUNCE, {"messageId": "globex-1", "kind": "hard"})

    assert response.status_code == 200
    assert response.json["unknown"] == ["globex-1"] and response.json["recorded"] == 0
    assert counts(rest) == before
    assert log_status(rest, log_id) == "sent" and not quarantined(rest, "theirs@example.com")


@pytest.mark.parametrize(
    "body",
    [
        [],
        [{"messageId": "m", "kind": "hard"}] * 1001,
        {"messageId": "m", "kind": "bogus"},
        {"messageId": "", "kind": "hard"},
        {"messageId": "m" * 256, "kind": "hard"},
        {"messageId": 5, "kind": "hard"},
        {"messageId": "m", "kind": "hard", "detail": {"x": 1}},
        {"messageId": "m", "kind": "hard", "extra": 1},
        [{"messageId": "m-ok", "kind": "hard"}, "not an object"],
        "text",
    ],
)
def test_malformed_bounce_reports_are_refused_whole(rest: Rest, body: Any) -> None:
    log_id = sent_log(rest, "acme", "ok@example.com", "m-ok")
    before = counts(rest)

    error_of(rest.post(BOUNCE, body), 400)

    assert counts(rest) == before and log_status(rest, log_id) == "sent"


# ---------------------------------------------------------------------------------- tracking


def test_the_pixel_records_an_open_and_a_bad_token_still_gets_the_pixel(rest: Rest) -> None:
    log_id = sent_log(rest, "acme", "reader@example.com", "m-open")
    settings = rest.services.settings
    path = tracking.open_url(settings, log_id)[len(settings.tracking_url.rstrip("/")) :]

    good = rest.client.get(path, headers={"User-Agent": "Mail/1.0"})
    bad = rest.client.get("/r/forged.token/o.gif")
    click_token = rest.client.get(
        "/r/"
        + tracking.click_url(settings, log_id, "https://a.example/").rsplit("/", 1)[1]
        + "/o.gif"
    )

    for response in (good, bad, click_token):
        assert response.status_code == 200 and response.mimetype == "image/gif"
        assert response.data.startswith(b"GIF89a")
    with rest.services.sessions() as s:
        hits = s.execute(select(tracking_log)).mappings().all()
    assert [(hit["kind"], hit["deliveryLogId"], hit["userAgent"]) for hit in hits] == [
        ("open", log_id, "Mail/1.0")
    ]


def test_a_click_records_and_redirects_only_to_the_signed_url(rest: Rest) -> None:
    log_id = sent_log(rest, "acme", "reader@example.com", "m-click")
    settings = rest.services.settings
    url = tracking.click_url(settings, log_id, "https://shop.example.com/p?x=1")
    token = url.rsplit("/", 1)[1]

    response = rest.client.get(f"/r/{token}")

    assert response.status_code == 302
    assert response.headers["Location"] == "https://shop.example.com/p?x=1"
    with rest.services.sessions() as s:
        hit = s.execute(select(tracking_log)).mappings().one()
    assert hit["kind"] == "click" and hit["url"] == "https://shop.example.com/p?x=1"


@pytest.mark.parametrize(
    "path",
    [
        "/r/forged.token",
        "/r/x",
        "/r/%2F%2Fevil.com",
        "/r/javascript:alert(1)",
        "/r/" + "a" * 10_000,
        "/r/?url=https://evil.com",
        "/r//evil.com",
    ],
)
def test_forged_or_open_redirect_links_are_404_and_never_redirect(rest: Rest, path: str) -> None:
    response = rest.client.get(path, follow_redirects=True)

    # werkzeug may first merge `//` with a redirect on this host; the end is a 404 anyway.
    assert response.status_code == 404
    assert all(urlsplit(r.location).netloc in ("", "localhost") for r in response.history)
    assert counts(rest)["tracking_log"] == 0


def test_a_modified_click_token_is_404(rest: Rest) -> None:
    log_id = sent_log(rest, "acme", "reader@example.com", "m-mod")
    token = tracking.click_url(rest.services.settings, log_id, "https://a.example/").rsplit("/", 1)[
        1
    ]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    extra = rest.client.get(f"/r/{token}?next=https://evil.com")

    assert rest.client.get(f"/r/{forged}").status_code == 404
    # Query strings are ignored: the target is the signed one.
    assert extra.headers["Location"] == "https://a.example/"


# ---------------------------------------------------------------------------------- templates


def test_a_message_template_is_created_listed_read_and_deleted(rest: Rest) -> None:
    created = rest.post(TEMPLATES, ORDER)
    assert created.status_code == 201, created.json
    assert created.json["PKey"] == "@orderConfirmation" and created.json["published"] is True

    listed = rest.get(f"{TEMPLATES}?_lineCount=1")
    assert listed.json["count"] == {"value": 1}
    assert [t["name"] for t in listed.json["content"]] == ["orderConfirmation"]
    assert "next" not in listed.json
    assert rest.get(f"{TEMPLATES}/@orderConfirmation").json["eventType"] == "orderPlaced"
    error_of(rest.get(f"{TEMPLATES}/orderConfirmation", headers=rest.globex), 404)
    error_of(rest.client.delete(f"{TEMPLATES}/orderConfirmation", headers=rest.globex), 404)

    assert rest.delete(f"{TEMPLATES}/orderConfirmation").status_code == 204
    error_of(rest.get(f"{TEMPLATES}/orderConfirmation"), 404)
    assert counts(rest)["delivery"] == 0


def event_status(rest: Rest, pkey: str) -> str:
    return str(rest.get(f"{EVENTS}/orderPlaced/{pkey}").json["status"])


def test_a_paused_template_holds_its_events_and_resuming_delivers_them(rest: Rest) -> None:
    # Given a template whose events a worker processes as soon as they are published
    published: list[list[int]] = []

    def process(ids: list[int]) -> None:
        published.append(ids)
        events.process(rest.services.sessions, rest.services.settings, ids)

    rest.stub.process_events = process  # type: ignore[attr-defined]
    assert rest.post(TEMPLATES, ORDER).status_code == 201

    # When it is paused, a new event waits `paused`, no message is sent
    paused = rest.post(f"{TEMPLATES}/@orderConfirmation/pause", {})
    assert paused.status_code == 200 and paused.json["paused"] is True
    assert paused.json["released"] == 0
    held = post_event(rest, {"email": "ada@example.com", "ctx": {"firstName": "A", "orderId": 1}})
    assert event_status(rest, held.json["PKey"]) == "paused"
    assert counts(rest)["delivery_log"] == 0
    # And a second pause changes nothing
    assert rest.post(f"{TEMPLATES}/orderConfirmation/pause", {}).json["released"] == 0

    # Then resuming releases it: published again, processed, one log
    resumed = rest.post(f"{TEMPLATES}/orderConfirmation/resume", {})
    assert resumed.status_code == 200 and resumed.json["paused"] is False
    assert resumed.json["released"] == 1
    assert event_status(rest, held.json["PKey"]) == "processed"
    assert counts(rest)["delivery_log"] == 1
    assert len(published) == 2
    # And a resume with nothing paused releases nothing
    assert rest.post(f"{TEMPLATES}/orderConfirmation/resume", {}).json["released"] == 0


def test_an_event_paused_past_the_expiry_ends_too_old_on_resume(rest: Rest) -> None:
    rest.stub.process_events = lambda ids: events.process(  # type: ignore[attr-defined]
        rest.services.sessions, rest.services.settings, ids
    )
    rest.post(TEMPLATES, {**ORDER, "expiryHours": 1})
    rest.post(f"{TEMPLATES}/orderConfirmation/pause", {})
    held = post_event(rest, {"email": "ada@example.com", "ctx": {"firstName": "A", "orderId": 1}})
    # Two hours pass while it waits (its creation is moved back rather than waited for)
    with rest.services.sessions() as s, s.begin():
        s.execute(update(event).values(created=utcnow() - dt.timedelta(hours=2)))
    assert rest.post(f"{TEMPLATES}/orderConfirmation/resume", {}).json["released"] == 1
    assert event_status(rest, held.json["PKey"]) == "tooOld"
    assert counts(rest)["delivery_log"] == 0


def test_pausing_another_organizations_or_an_unknown_template_is_404(rest: Rest) -> None:
    rest.post(TEMPLATES, ORDER)
    before = counts(rest)
    for path in (
        f"{TEMPLATES}/nope/pause",
        f"{TEMPLATES}/{'x' * 5000}/resume",
        f"{TEMPLATES}/%00/pause",
    ):
        error_of(rest.post(path, {}), 404)
    error_of(rest.client.post(f"{TEMPLATES}/orderConfirmation/pause", headers=rest.globex), 404)
    error_of(rest.client.post(f"{TEMPLATES}/orderConfirmation/pause"), 401)
    assert rest.get(f"{TEMPLATES}/orderConfirmation").json["paused"] is False
    assert counts(rest) == before


def test_a_template_name_is_unique_per_organization(rest: Rest) -> None:
    assert rest.post(TEMPLATES, ORDER).status_code == 201

    error_of(rest.post(TEMPLATES, ORDER), 409, "templateExists")
    assert rest.post(TEMPLATES.replace("acme", "globex"), ORDER, rest.globex).status_code == 201


def test_a_template_that_does_not_compile_is_422_naming_field_and_line(rest: Rest) -> None:
    body = {**ORDER, "content": {"subject": "ok", "html": "<p>\n{{ ctx.name \n</p>"}}

    error = error_of(rest.post(TEMPLATES, body), 422, "invalidTemplate")

    assert error["details"]["field"] == "content.html"
    assert isinstance(error["details"].get("line"), int)
    assert counts(rest)["message_template"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"eventType": "order-placed"}, "eventType"),
        ({"channel": "fax"}, "channel"),
        ({"expiryHours": 0}, "expiryHours"),
        ({"expiryHours": 10**9}, "expiryHours"),
        ({"expiryHours": "24"}, "expiryHours"),
        ({"published": "yes"}, "published"),
        ({"content": "text"}, "content"),
        ({"content": {"html": "<p>no subject</p>"}}, "content.subject"),
        ({"content": {"subject": "s"}}, "content.html"),
        ({"content": {"subject": "s", "body": "push field"}}, "content.body"),
        ({"content": {"subject": 1, "text": "t"}}, "content.subject"),
        ({"channel": "sms", "content": {"text": "{% for %}"}}, "content.text"),
    ],
)
def test_malformed_templates_are_422_naming_the_field(
    rest: Rest, change: dict[str, Any], field: str
) -> None:
    error = error_of(rest.post(TEMPLATES, {**ORDER, **change}), 422, "invalidTemplate")

    assert error["details"]["field"] == field
    assert counts(rest)["message_template"] == 0


def test_template_bodies_with_unknown_keys_or_hostile_shapes_are_400(rest: Rest) -> None:
    error_of(rest.post(TEMPLATES, {**ORDER, "sql": "drop table"}), 400)
    error_of(rest.post(TEMPLATES, [ORDER]), 400)
    error_of(rest.raw("POST", TEMPLATES, b"{" * 50_000), 400)
    assert counts(rest)["message_template"] == 0

"""Connectors: how a batch of rendered messages leaves, by SMTP, an HTTP provider or a file.

Every connector sends one batch over one connection and answers one SendResult per message:
a refusal of one message (an SMTP 550 for one recipient, a provider's 4xx) is a failed
result, not an exception. When the connection itself fails, `send` raises ConnectorError
carrying what is known: the results so far, and the message that was being handed over when
it failed (`in_flight`, whose fate is unknown). Messages after it were never handed over.

`idempotent` says whether handing a message over twice is harmless: the HTTP providers
receive the message id as Idempotency-Key, so an interrupted message may be sent again;
SMTP and the local files have no such key, so it must not.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import http.client
import json
import os
import re
import smtplib
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from worker.config import Settings
from worker.errors import ActivityError

CHANNELS = ("email", "sms", "push")
_LINE_BREAK = re.compile(r"[\r\n\x00]")
#: The largest provider answer read (and ignored beyond its status).
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Attachment:
    """A file joined to an email (reports); never to a personalised campaign message."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Message:
    """One rendered message for one address; `message_id` is stable across attempts."""

    message_id: str
    address: str
    subject: str = ""
    html: str = ""
    text: str = ""
    title: str = ""
    sender: str = ""
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class SendResult:
    """What the connector said about one message."""

    message_id: str
    ok: bool
    reason: str = ""


class ConnectorError(ActivityError):
    """Raised when a connector's connection fails mid-batch; says how far it got."""

    code = "connectorError"

    def __init__(
        self, message: str, *, results: Sequence[SendResult] = (), in_flight: str | None = None
    ) -> None:
        super().__init__(message)
        self.results = list(results)
        self.in_flight = in_flight


class Connector(Protocol):
    channel: str

    def send(self, messages: Sequence[Message]) -> list[SendResult]: ...

    def close(self) -> None: ...


class SmtpConnector:
    """Email over SMTP (smtplib): one connection per batch, STARTTLS/SSL and login optional."""

    channel = "email"
    idempotent = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.smtp_tls == "ssl":
            smtp = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.connector_timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.connector_timeout)
        try:
            if s.smtp_tls == "starttls":
                smtp.starttls(context=context)
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        if not messages:
            return []
        try:
            smtp = self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectorError(f"SMTP {self._where()}: cannot connect: {exc}") from None
        results: list[SendResult] = []
        try:
            for message in messages:
                results.append(self._send_one(smtp, message, results))
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        return results

    def _send_one(
        self, smtp: smtplib.SMTP, message: Message, results: list[SendResult]
    ) -> SendResult:
        sender = message.sender or self.settings.smtp_sender
        try:
            mime = build_email(message, sender)
        except (ValueError, TypeError, IndexError) as exc:
            return SendResult(message.message_id, False, f"invalid message: {exc}"[:255])
        try:
            smtp.send_message(mime, from_addr=sender, to_addrs=[message.address])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            return SendResult(message.message_id, False, _smtp_reason(code, text))
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return SendResult(
                message.message_id, False, _smtp_reason(exc.smtp_code, exc.smtp_error)
            )
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectorError(
                f"SMTP {self._where()}: {type(exc).__name__}: {exc}"[:500],
                results=results,
                in_flight=message.message_id,
            ) from None
        except UnicodeEncodeError as exc:  # a non-ASCII address the server cannot take
            return SendResult(message.message_id, False, f"invalid address: {exc}"[:255])
        return SendResult(message.message_id, True)

    def _where(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def close(self) -> None:
        """Nothing stays open between batches."""


def _smtp_reason(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kind = "temporary" if 400 <= code < 500 else "refused"
    return f"{kind}: {code} {text}".strip()[:255]


def build_email(message: Message, sender: str) -> MIMEBase:
    """The MIME message: text and/or HTML alternatives, a Message-ID made of the stable id.

    `X-Carillon-Message-Id` carries the id as stored in the delivery log, so bounces and
    receipts map back to their log row. Built with the `email.mime` classes, three times
    faster than `EmailMessage`; as they would let a line break through into the headers,
    any header value with one raises ValueError (a rendered subject cannot add a Bcc).
    """
    domain = sender.rpartition("@")[2] or "carillon.invalid"
    headers = {
        "From": sender,
        "To": message.address,
        "Subject": message.subject,
        "Message-ID": f"<{message.message_id}@{domain}>",
        "X-Carillon-Message-Id": message.message_id,
    }
    for name, value in headers.items():
        if _LINE_BREAK.search(value):
            raise ValueError(f"line break in the {name} header")
    mime: MIMEBase
    if message.html and message.text:
        mime = MIMEMultipart("alternative")
        mime.attach(MIMEText(message.text, "plain", "utf-8"))
        mime.attach(MIMEText(message.html, "html", "utf-8"))
    elif message.html:
        mime = MIMEText(message.html, "html", "utf-8")
    else:
        mime = MIMEText(message.text, "plain", "utf-8")
    if message.attachments:
        mime = _with_attachments(mime, message.attachments)
    for name, value in headers.items():
        mime[name] = value if value.isascii() else Header(value, "utf-8").encode()
    mime["Date"] = formatdate(usegmt=True)
    return mime


def _with_attachments(body: MIMEBase, attachments: Sequence[Attachment]) -> MIMEBase:
    mixed = MIMEMultipart("mixed")
    mixed.attach(body)
    for attachment in attachments:
        if _LINE_BREAK.search(attachment.filename) or "/" not in attachment.content_type:
            raise ValueError("bad attachment name or type")
        maintype, _, subtype = attachment.content_type.partition("/")
        part = MIMEApplication(attachment.data, subtype) if maintype == "application" else None
        if part is None:
            raise ValueError(f"attachments are application/* only, not {attachment.content_type}")
        part.add_header("Content-Disposition", "attachment", filename=attachment.filename)
        mixed.attach(part)
    return mixed


class HttpConnector:
    """An SMS or push provider: one POST of JSON per message, Idempotency-Key = message id,
    over one keep-alive connection per batch; no redirect is followed."""

    idempotent = True

    def __init__(self, channel: str, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ActivityError(f"the {channel} provider URL must be http(s)")
        self.channel = channel
        self.parts = parts
        self.timeout = timeout

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self.parts.hostname or "", self.parts.port
        if self.parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        results: list[SendResult] = []
        if not messages:
            return results
        conn = self._connect()
        path = self.parts.path or "/"
        if self.parts.query:
            path += "?" + self.parts.query
        try:
            for message in messages:
                body = json.dumps(_payload(self.channel, message)).encode("utf-8")
                try:
                    conn.request(
                        "POST",
                        path,
                        body=body,
                        headers={
                            "Content-Type": "application/json",
                            "Idempotency-Key": message.message_id,
                        },
                    )
                    answer = conn.getresponse()
                    answer.read(MAX_ANSWER_BYTES)
                except (OSError, http.client.HTTPException) as exc:
                    raise ConnectorError(
                        f"{self.channel} provider: {type(exc).__name__}: {exc}"[:500],
                        results=results,
                        in_flight=message.message_id,
                    ) from None
                if 200 <= answer.status < 300:
                    results.append(SendResult(message.message_id, True))
                elif answer.status in (408, 429) or answer.status >= 500:
                    # The provider may or may not have taken it: the same key makes a
                    # later resend harmless, so the batch is retried rather than failed.
                    raise ConnectorError(
                        f"{self.channel} provider answered {answer.status}",
                        results=results,
                        in_flight=message.message_id,
                    )
                else:
                    results.append(
                        SendResult(message.message_id, False, f"provider refused: {answer.status}")
                    )
                if answer.will_close:
                    conn.close()
                    conn = self._connect()
        finally:
            conn.close()
        return results

    def close(self) -> None:
        """Nothing stays open between batches."""


def _payload(channel: str, message: Message) -> dict[str, str]:
    payload = {"messageId": message.message_id, "channel": channel, "to": message.address}
    if channel == "push":
        payload.update(title=message.title, body=message.text)
    else:
        payload["text"] = message.text
    return payload


class FileConnector:
    """The local default: one JSON line per message appended to outbox/<channel>.jsonl.

    A batch is one write under an exclusive lock, then fsync: concurrent workers never
    interleave lines, and a batch reported sent is on disk.
    """

    idempotent = False

    def __init__(self, channel: str, folder: Path) -> None:
        self.channel = channel
        self.path = folder / f"{channel}.jsonl"

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        if not messages:
            return []
        at = dt.datetime.now(dt.UTC).isoformat()
        lines = "".join(
            json.dumps({**_file_record(self.channel, message), "at": at}, ensure_ascii=False) + "\n"
            for message in messages
        ).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, lines)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ConnectorError(
                f"{self.channel} outbox {self.path}: {exc}", in_flight=messages[0].message_id
            ) from None
        return [SendResult(message.message_id, True) for message in messages]

    def close(self) -> None:
        """Nothing stays open."""


def _file_record(channel: str, message: Message) -> dict[str, str]:
    record = _payload(channel, message)
    if channel == "email":
        record.update(subject=message.subject, html=message.html, sender=message.sender)
        if message.attachments:
            record["attachments"] = ", ".join(
                f"{a.filename} ({len(a.data):,} bytes)" for a in message.attachments
            )
    return record


def connector_for(channel: str, settings: Settings) -> Connector:
    """The configured connector of `channel`, or the local file default."""
    outbox = settings.home / "outbox"
    if channel == "email":
        return SmtpConnector(settings) if settings.smtp_host else FileConnector(channel, outbox)
    if channel in ("sms", "push"):
        url = settings.sms_url if channel == "sms" else settings.push_url
        if url:
            return HttpConnector(channel, url, settings.connector_timeout)
        return FileConnector(channel, outbox)
    raise ActivityError(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})")


def is_idempotent(connector: Connector) -> bool:
    """Whether handing a message over twice is harmless (see the module docstring)."""
    return bool(getattr(connector, "idempotent", False))

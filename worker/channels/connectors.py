"""Connectors: how a batch of rendered messages leaves, by SMTP, an HTTP provider or a file.

Every connector sends one batch (SMTP: over several connections at once) and answers one
SendResult per message, in the batch's order: a refusal of one message (an SMTP 550 for one
recipient, a provider's 4xx) is a failed result, not an exception. When a connection itself
fails, `send` raises ConnectorError carrying what is known: the results so far, and the
message that was being handed over when it failed (`in_flight`, whose fate is unknown).
Messages without a result were never handed over.

`idempotent` says whether handing a message over twice is harmless: the HTTP providers
receive the message id as Idempotency-Key, so an interrupted message may be sent again;
SMTP and the local files have no such key, so it must not.
"""

from __future__ import annotations

import binascii
import datetime as dt
import email.policy
import fcntl
import http.client
import json
import os
import re
import secrets
import smtplib
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from pathlib import Path
from typing import Protocol

from worker.channels import pipelining
from worker.config import Settings
from worker.errors import ActivityError

CHANNELS = ("email", "sms", "push")
_LINE_BREAK = re.compile(r"[\r\n\x00]")
#: The largest provider answer read (and ignored beyond its status).
MAX_ANSWER_BYTES = 64 * 1024
#: A batch gets one more SMTP connection per this many messages, up to smtp_connections.
MIN_MESSAGES_PER_CONNECTION = 10
_SMTP_POLICY = email.policy.SMTP
#: RFC 5322's limit on a line; an ASCII header value fitting in one is written as it is.
MAX_HEADER_LINE = 998


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
        self,
        message: str,
        *,
        results: Sequence[SendResult] = (),
        in_flight: str | None = None,
        also_in_flight: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.results = list(results)
        self.in_flight = in_flight
        #: Every message whose fate is unknown: `in_flight`, and those of other connections
        #: of the same batch that failed too (parallel SMTP connections).
        self.in_flight_ids = frozenset(
            [*([in_flight] if in_flight is not None else []), *also_in_flight]
        )


class Connector(Protocol):
    channel: str

    def send(self, messages: Sequence[Message]) -> list[SendResult]: ...

    def close(self) -> None: ...


class _ConnectionLost(Exception):
    """A connection failed while a message was being handed over (its fate is unknown)."""


class _Lanes:
    """Hands a batch's messages out, one at a time, to the connections sending it at once."""

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = messages
        self.results: list[SendResult | None] = [None] * len(messages)
        #: message id -> why its connection failed while handing it over (fate unknown).
        self.lost: dict[str, str] = {}
        self.unreachable: list[str] = []
        #: Why connections failed with nothing in flight (pipelining: a content never left).
        self.broken: list[str] = []
        self._next = 0
        #: Messages a failed connection took but never handed over: the others take them.
        self._returned: list[int] = []
        self._given_back: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._returned:
                return self._returned.pop()
            if self._next >= len(self.messages):
                return None
            self._next += 1
            return self._next - 1

    def give_back(self, index: int) -> bool:
        """Let another connection send it; False when it came back once already (a message
        whose envelope ends every connection is not passed around until none is left)."""
        with self._lock:
            if index in self._given_back:
                return False
            self._given_back.add(index)
            self._returned.append(index)
            return True


class SmtpConnector:
    """Email over SMTP (smtplib), STARTTLS/SSL and login optional.

    A batch goes out over up to `smtp_connections` connections at once (threads: the time
    is spent waiting for the server), each taking the next message not yet handed over, so
    a connection that fails leaves only the message it was handing over unknown: the others
    take what it did not reach. Results come back in the batch's order. Connections stay
    open between the batches of one sending pass (checked with NOOP before reuse) and are
    closed by `close()`. When a connection cannot be opened while others can (a server
    limiting connections per client), the connector keeps to the number it got. With a
    server advertising PIPELINING (Postfix does), a connection pipelines its transactions:
    one write and one round trip per message instead of smtplib's four (`_pipelined_lane`).
    """

    channel = "email"
    idempotent = False
    #: Pipeline the transactions when the server offers it (False: always smtplib's dialogue).
    pipelining = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections = max(1, settings.smtp_connections)
        self._idle: list[smtplib.SMTP] = []
        self._context: ssl.SSLContext | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _tls_context(self) -> ssl.SSLContext:
        # Built once: loading the system's CA store costs ~100 ms each time.
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP
        if s.smtp_tls == "ssl":
            smtp = smtplib.SMTP_SSL(
                s.smtp_host, s.smtp_port, timeout=s.connector_timeout, context=self._tls_context()
            )
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.connector_timeout)
        try:
            # EHLO now, so a server refusing this connection does it before any message.
            smtp.ehlo_or_helo_if_needed()
            if s.smtp_tls == "starttls":
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _reuse_or_connect(self, idle: smtplib.SMTP | None) -> smtplib.SMTP:
        if idle is not None:
            try:
                if idle.noop()[0] == 250:
                    return idle
            except (smtplib.SMTPException, OSError):
                pass
            idle.close()
        return self._connect()

    def send(self, messages: Sequence[Message]) -> list[SendResult]:
        if not messages:
            return []
        lanes = _Lanes(messages)
        # Small batches (proofs, reports) do not need several connections.
        count = max(1, min(self.connections, len(messages) // MIN_MESSAGES_PER_CONNECTION))
        idle = [self._idle.pop() if self._idle else None for _ in range(count)]
        if count == 1:
            kept = [self._lane(lanes, idle[0])]
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.connections, "carillon-smtp")
            futures = [self._executor.submit(self._lane, lanes, smtp) for smtp in idle]
            wait(futures)  # every lane has ended before anything is reported
            kept = [future.result() for future in futures]
        self._idle += [smtp for smtp in kept if smtp is not None]
        if lanes.unreachable and len(lanes.unreachable) < count:
            self.connections = count - len(lanes.unreachable)
        return self._outcome(lanes)

    def _lane(self, lanes: _Lanes, idle: smtplib.SMTP | None) -> smtplib.SMTP | None:
        """One connection's share: messages until none is left; returns the connection to
        keep, or None when it failed (closed)."""
        try:
            smtp = self._reuse_or_connect(idle)
        except (smtplib.SMTPException, OSError) as exc:
            lanes.unreachable.append(f"cannot connect: {exc}")
            return None
        if self.pipelining and smtp.has_extn("pipelining"):
            return self._pipelined_lane(lanes, smtp)
        while (index := lanes.take()) is not None:
            message = lanes.messages[index]
            try:
                lanes.results[index] = self._send_one(smtp, message)
            except Exception as exc:  # _ConnectionLost, or anything unforeseen: fate unknown
                lanes.lost[message.message_id] = str(exc) or type(exc).__name__
                smtp.close()
                return None
            if smtp.sock is None:  # smtplib closed it after a 421: the others go on
                lanes.unreachable.append("the server closed the connection (421)")
                return None
        return smtp

    def _outcome(self, lanes: _Lanes) -> list[SendResult]:
        if not lanes.lost and all(result is not None for result in lanes.results):
            return [result for result in lanes.results if result is not None]
        where = f"SMTP {self._where()}"
        answered = [result for result in lanes.results if result is not None]
        if not lanes.lost:  # no connection was left to send the rest: none handed over
            why = (lanes.unreachable or lanes.broken or ["no connection left"])[0]
            raise ConnectorError(f"{where}: {why}"[:500], results=answered)
        # Every connection that failed leaves the message it was handing over unknown.
        in_flight, why = next(iter(lanes.lost.items()))
        raise ConnectorError(
            f"{where}: {why}"[:500],
            results=[result for result in lanes.results if result is not None],
            in_flight=in_flight,
            also_in_flight=[lost for lost in lanes.lost if lost != in_flight],
        )

    def _prepare(self, message: Message) -> tuple[str, bytes] | SendResult:
        """The sender and the bytes of `message`, or its failed result when it cannot be
        sent (an address that is not plain ASCII, a line break in a header)."""
        sender = message.sender or self.settings.smtp_sender
        if not (sender.isascii() and message.address.isascii()):
            # SMTPUTF8 is not used: refused here, before a MAIL FROM leaves a half transaction.
            return SendResult(message.message_id, False, "invalid address: not ASCII")
        if pipelining.plain_address(sender) is None or not pipelining.plain_address(
            message.address
        ):
            return SendResult(message.message_id, False, "invalid address: not local@domain")
        try:
            return sender, email_bytes(message, sender)
        except (ValueError, TypeError, IndexError) as exc:
            return SendResult(message.message_id, False, f"invalid message: {exc}"[:255])

    def _send_one(self, smtp: smtplib.SMTP, message: Message) -> SendResult:
        prepared = self._prepare(message)
        if isinstance(prepared, SendResult):
            return prepared
        sender, data = prepared
        try:
            smtp.sendmail(sender, [message.address], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            return SendResult(message.message_id, False, _smtp_reason(code, text))
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return SendResult(
                message.message_id, False, _smtp_reason(exc.smtp_code, exc.smtp_error)
            )
        except (smtplib.SMTPException, OSError) as exc:
            raise _ConnectionLost(f"{type(exc).__name__}: {exc}") from None
        return SendResult(message.message_id, True)

    def _pipelined_lane(self, lanes: _Lanes, smtp: smtplib.SMTP) -> smtplib.SMTP | None:
        """`_lane` with the server's PIPELINING: each write carries the content of the
        message whose DATA was accepted and the MAIL, RCPT and DATA of the next one.

        Only a message whose content was written and whose final reply was not read is in
        flight (fate unknown); a message whose envelope went out without its content was
        never handed over (a server delivers nothing without the final dot), so when the
        connection fails it goes back to the other connections.
        """
        sock = smtp.sock
        assert sock is not None
        reader = smtp.file or sock.makefile("rb")
        smtp.file = reader
        waiting: int | None = None  # the message whose DATA got 354: its content goes next
        waiting_content = b""
        reset = False  # a refused envelope left a transaction open: RSET before the next
        index: int | None = None
        in_flight: int | None = None
        try:
            while True:
                index = lanes.take()
                commands = b""
                if index is not None:
                    prepared = self._prepare(lanes.messages[index])
                    if isinstance(prepared, SendResult):
                        lanes.results[index] = prepared
                        continue
                    sender, data = prepared
                    commands = (b"RSET\r\n" if reset else b"") + pipelining.envelope(
                        sender.encode("ascii"), lanes.messages[index].address.encode("ascii")
                    )
                if waiting is None and index is None:
                    return smtp
                in_flight = waiting
                sock.sendall(waiting_content + commands)
                if waiting is not None:
                    code, text = pipelining.read_reply(reader)
                    message_id = lanes.messages[waiting].message_id
                    ok = code == 250
                    lanes.results[waiting] = SendResult(
                        message_id, ok, "" if ok else _smtp_reason(code, text)
                    )
                    waiting, waiting_content, in_flight = None, b"", None
                    if code == 421:
                        self._closing(lanes, smtp, index)
                        return None
                if index is None:
                    return smtp
                if reset:
                    pipelining.read_reply(reader)  # RSET: whatever it says, MAIL decides
                    reset = False
                replies = [pipelining.read_reply(reader) for _ in range(3)]
                (mail, _), (rcpt, _), (start, _) = replies
                if mail == 250 and rcpt in (250, 251) and start == 354:
                    waiting, waiting_content = index, pipelining.content(data)
                    continue
                if start == 354:  # a server accepting DATA without a recipient: end it empty
                    sock.sendall(b".\r\n")
                    pipelining.read_reply(reader)
                refused = (reply for reply in replies if reply[0] not in (250, 251, 354))
                code, text = next(refused, replies[2])
                lanes.results[index] = SendResult(
                    lanes.messages[index].message_id, False, _smtp_reason(code, text)
                )
                reset = True
                if code == 421:
                    self._closing(lanes, smtp, None)
                    return None
        except Exception as exc:  # the connection failed (or anything unforeseen)
            why = f"{type(exc).__name__}: {exc}"
            if in_flight is not None:
                lanes.lost[lanes.messages[in_flight].message_id] = why
            else:
                lanes.broken.append(why)
            # A message whose content never left goes to another connection, or, when it
            # already ended one, fails (it was not delivered: no content, no final dot).
            untold = index is not None and lanes.results[index] is None
            if index is not None and untold and not lanes.give_back(index):
                message_id = lanes.messages[index].message_id
                reason = f"two connections failed at its envelope: {why}"[:255]
                lanes.results[index] = SendResult(message_id, False, reason)
            smtp.close()
            return None

    def _closing(self, lanes: _Lanes, smtp: smtplib.SMTP, untold: int | None) -> None:
        """After a 421 (the server closes): the message not yet answered goes to the others."""
        if untold is not None:
            lanes.give_back(untold)
        lanes.unreachable.append("the server closed the connection (421)")
        smtp.close()

    def _where(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def close(self) -> None:
        """Quit the connections kept between batches and stop the sending threads."""
        while self._idle:
            smtp = self._idle.pop()
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def _smtp_reason(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    kind = "temporary" if 400 <= code < 500 else "refused"
    return f"{kind}: {code} {text}".strip()[:255]


def _headers(message: Message, sender: str) -> dict[str, str]:
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
    return headers


def email_bytes(message: Message, sender: str) -> bytes:
    """The message as sent: what `build_email` describes, serialised directly.

    The `email` package takes about a millisecond per message to build and flatten one
    (header folding, a regular expression compiled per multipart boundary), more than the
    whole SMTP dialogue with a local server; a campaign message always has the same shape
    (text and/or HTML in UTF-8, base64, a few headers), so it is written here in tens of
    microseconds. Messages with attachments (reports) still go through `build_email`.
    """
    if message.attachments:
        return build_email(message, sender).as_bytes(policy=_SMTP_POLICY)
    lines = [_header_line(name, value) for name, value in _headers(message, sender).items()]
    lines += ["Date: " + _date_now(), "MIME-Version: 1.0"]
    if message.html and message.text:
        # `_` is outside the base64 alphabet: the boundary cannot occur in a base64 body.
        boundary = "=_carillon_" + secrets.token_hex(12)
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        delimiter = b"--" + boundary.encode("ascii") + b"\r\n"
        body = (
            delimiter
            + _text_part("plain", message.text)
            + b"\r\n"
            + delimiter
            + _text_part("html", message.html)
            + b"\r\n--"
            + boundary.encode("ascii")
            + b"--\r\n"
        )
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
    part = _text_part("html", message.html) if message.html else _text_part("plain", message.text)
    return ("\r\n".join(lines) + "\r\n").encode("ascii") + part


_DATE_CACHE: tuple[int, str] = (0, "")


def _date_now() -> str:
    """The Date header value, formatted once per second (not once per message)."""
    global _DATE_CACHE
    now = time.time()
    second, text = _DATE_CACHE
    if int(now) != second:
        text = formatdate(now, usegmt=True)
        _DATE_CACHE = (int(now), text)
    return text


def _header_line(name: str, value: str) -> str:
    if value.isascii() and len(name) + len(value) <= MAX_HEADER_LINE - 2:
        return f"{name}: {value}"
    # Non-ASCII or overlong values: RFC 2047 encoded words, folded into short lines.
    encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {encoded}"


def _base64_lines(raw: bytes) -> bytes:
    """What `base64.encodebytes` gives (lines of 76 characters) with CRLF line ends, encoded
    in one call instead of one per 57-byte line."""
    encoded = binascii.b2a_base64(raw, newline=False)
    if not encoded:
        return b""
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


def _text_part(subtype: str, text: str) -> bytes:
    body = _base64_lines(text.encode("utf-8"))
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii") + body


def build_email(message: Message, sender: str) -> MIMEBase:
    """The MIME message: text and/or HTML alternatives, a Message-ID made of the stable id.

    `X-Carillon-Message-Id` carries the id as stored in the delivery log, so bounces and
    receipts map back to their log row. Built with the `email.mime` classes, three times
    faster than `EmailMessage`; as they would let a line break through into the headers,
    any header value with one raises ValueError (a rendered subject cannot add a Bcc).
    """
    headers = _headers(message, sender)
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

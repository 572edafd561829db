"""SMTP PIPELINING (RFC 2920) pieces: envelope commands, dot-stuffed data, replies read raw.

smtplib makes four round trips per message (MAIL, RCPT, DATA, the content) and parses both
addresses with the `email` package each time; with a local server that is most of a
message's cost. When the server advertises PIPELINING, the SMTP connector writes a message's
content together with the next message's MAIL, RCPT and DATA, and reads the four replies in
order: one write and one round trip per message. These helpers work on the socket and reader
smtplib opened (after its EHLO, STARTTLS and AUTH), so TLS and login stay smtplib's.
"""

from __future__ import annotations

import re
from typing import BinaryIO

#: smtplib's limit on one reply line; a longer one means the peer is not an SMTP server.
MAX_LINE = 8192
#: Lines of one multi-line reply read before giving up on the peer.
MAX_REPLY_LINES = 100
#: A plain ASCII addr-spec: what goes between the angle brackets of MAIL FROM and RCPT TO.
#: No space, angle bracket or control character can reach the command line.
_ADDRESS = re.compile(rb"[\x21-\x3b\x3d\x3f-\x7e]{1,64}@[A-Za-z0-9.\[\]:-]{1,253}")


class ProtocolError(Exception):
    """The connection ended or answered something that is not an SMTP reply."""


def plain_address(address: str) -> bytes | None:
    """The address as bytes for MAIL FROM / RCPT TO, or None when it is not a plain
    ASCII `local@domain` of at most 254 characters (refused before anything is written)."""
    if len(address) > 254 or not address.isascii():
        return None
    raw = address.encode("ascii")
    return raw if _ADDRESS.fullmatch(raw) else None


def envelope(sender: bytes, recipient: bytes) -> bytes:
    """MAIL, RCPT and DATA of one message, sent in one write (DATA ends the group)."""
    return b"MAIL FROM:<" + sender + b">\r\nRCPT TO:<" + recipient + b">\r\nDATA\r\n"


def content(data: bytes) -> bytes:
    """The message content as sent after a 354: CRLF line ends, dot-stuffed, terminated."""
    if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
        # A bare CR or LF (never from email_bytes): normalised like smtplib does.
        data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", data)
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def read_reply(reader: BinaryIO) -> tuple[int, bytes]:
    """One reply (all its lines): its code and text; ProtocolError if the connection ended
    or the peer answered something else."""
    lines = []
    for _ in range(MAX_REPLY_LINES):
        line = reader.readline(MAX_LINE + 1)
        if not line:
            raise ProtocolError("connection closed by the server")
        if len(line) > MAX_LINE or not line[:3].isdigit():
            raise ProtocolError("malformed reply from the server")
        lines.append(line[4:].strip())
        if line[3:4] != b"-":
            return int(line[:3]), b"\n".join(lines)
    raise ProtocolError(f"a reply of more than {MAX_REPLY_LINES} lines")

"""SSRF-safe HTTP(S) downloads: public addresses only, pinned connections, size and time limits.

A URL is parsed (http/https only, no credentials), its host resolved once, and every address
it resolves to must be public unless CARILLON_TRANSFER_ALLOW_HOSTS covers the host name or the
address. The connection goes to that checked address (a second DNS answer is never used, so
DNS rebinding cannot redirect it), with the original Host header and, for https, SNI and
certificate verification on the host name. Redirects are followed by hand, each new URL
checked again. The body streams to a temporary file renamed at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urljoin, urlsplit

from worker.errors import ActivityError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
MAX_URL_LENGTH = 8192
CHUNK_BYTES = 64 * 1024
#: Progress is reported about this often (in bytes), not on every chunk.
PROGRESS_BYTES = 1 << 20
USER_AGENT = "Carillon transferFile"
#: Every printable ASCII character: what may stay unescaped in a request target.
_PRINTABLE = "".join(chr(code) for code in range(0x21, 0x7F))
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: NAT64's well-known prefix embeds an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TransferError(ActivityError):
    """Raised when a download is refused or fails; says whether trying again may help.

    `not_found` marks a missing file (HTTP 404/410), which the activity may route to an
    outlet instead of failing.
    """

    code = "transferError"

    def __init__(self, message: str, *, retryable: bool = False, not_found: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.not_found = not_found


@dataclass(frozen=True)
class AllowList:
    """Host names and networks that may be reached although they are not public.

    An entry with a port (`127.0.0.1:8443`, `[::1]:8443`, `files.lan:8080`) allows that
    port only: allowing a file server on loopback then does not open Redis or PostgreSQL
    on the same address to downloads (and to redirects).
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    network_ports: tuple[tuple[IPNetwork, int], ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        host_ports: set[tuple[str, int]] = set()
        network_ports: list[tuple[IPNetwork, int]] = []
        for entry in entries:
            text, port = _split_port(entry.strip())
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                if port is None:
                    hosts.add(_normal_host(text))
                else:
                    host_ports.add((_normal_host(text), port))
                continue
            if port is None:
                networks.append(network)
            else:
                network_ports.append((network, port))
        return cls(frozenset(hosts), tuple(networks), frozenset(host_ports), tuple(network_ports))

    def covers_host(self, host: str, port: int | None = None) -> bool:
        name = _normal_host(host)
        return name in self.hosts or (name, port) in self.host_ports

    def covers_address(self, address: IPAddress, port: int | None = None) -> bool:
        candidates = [address, *_embedded_ipv4(address)]
        return any(a in network for a in candidates for network in self.networks) or any(
            a in network and port == allowed
            for a in candidates
            for network, allowed in self.network_ports
        )


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:port` or `[v6]:port` as (host, port); anything else as (itself, None)."""
    found = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", entry)
    if found is None:
        return entry.strip("[]"), None
    host = found.group(1) or found.group(3)
    port = int(found.group(2) or found.group(4))
    if not 0 < port < 65536:
        raise TransferError(f"invalid port in allowed host '{entry}'")
    return host, port


@dataclass(frozen=True)
class Url:
    """A parsed, acceptable URL: nothing resolved yet."""

    url: str
    scheme: str
    host: str
    port: int
    target: str

    @property
    def file_name(self) -> str:
        """The last segment of the path, decoded, without control characters."""
        last = unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])
        return "".join(c for c in last if c.isprintable())[:255]


@dataclass(frozen=True)
class Endpoint:
    """A URL with the checked addresses to connect to, as getaddrinfo gave them."""

    url: Url
    addresses: tuple[tuple[int, tuple[object, ...]], ...]


@dataclass(frozen=True)
class Download:
    """A file downloaded: where it is, its size, its name, and the host it came from."""

    path: Path
    size: int
    name: str
    host: str
    redirects: int


def parse_url(url: object) -> Url:
    """Check a URL's shape without any network access (usable when a workflow is saved)."""
    if not isinstance(url, str) or not url:
        raise TransferError("the URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise TransferError(f"the URL is longer than {MAX_URL_LENGTH:,} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise TransferError("the URL contains spaces or control characters (escape them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TransferError(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"'{scheme}:'" if scheme else "none"
        raise TransferError(f"URL scheme {shown} is not allowed: http and https only")
    if "@" in parts.netloc:
        # Credentials in a URL end up in definitions, logs and Referer headers: refuse them.
        raise TransferError("credentials in the URL (user@host) are not allowed")
    host = parts.hostname or ""
    if not host:
        raise TransferError("the URL has no host")
    if "%" in host:
        raise TransferError("IPv6 zone identifiers are not allowed in URLs")
    if port == 0:
        raise TransferError("port 0 is not allowed")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Url(
        url=url,
        scheme=scheme,
        host=_normal_host(host),
        port=port or SCHEMES[scheme],
        target=quote(target, safe=_PRINTABLE),
    )


def resolve(url: Url, allow: AllowList) -> Endpoint:
    """Resolve the host once and refuse it unless every address is public or allowed."""
    try:
        infos = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TransferError(
            f"cannot resolve host '{url.host}': {exc.strerror}",
            retryable=exc.errno == socket.EAI_AGAIN,
        ) from None
    except (UnicodeError, ValueError) as exc:
        raise TransferError(f"invalid host name '{url.host}': {exc}") from None
    if not infos:
        raise TransferError(f"host '{url.host}' has no address")
    host_allowed = allow.covers_host(url.host, url.port)
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        problem = None if host_allowed else non_public_reason(address)
        if problem is not None and not allow.covers_address(address, url.port):
            raise TransferError(
                f"refused: host '{url.host}' resolves to {address}, a {problem} address "
                "(only public addresses may be reached; see CARILLON_TRANSFER_ALLOW_HOSTS)"
            )
        addresses.append((int(family), tuple(sockaddr)))
    return Endpoint(url, tuple(addresses))


def non_public_reason(address: IPAddress) -> str | None:
    """Why an address is not a public one (loopback, private...); None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return non_public_reason(address.ipv4_mapped)
    for flag in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{flag}"):
            return flag.replace("_", "-")
    if not address.is_global:
        return "non-public"
    for embedded in _embedded_ipv4(address):
        reason = non_public_reason(embedded)
        if reason is not None:
            return f"{reason} (embedded {embedded})"
    return None


def download(
    url: str,
    folder: Path,
    *,
    max_bytes: int,
    timeout: float,
    allow_hosts: Iterable[str] = (),
    tls: ssl.SSLContext | None = None,
    max_redirects: int = MAX_REDIRECTS,
    progress: Callable[[int, int | None], None] | None = None,
) -> Download:
    """Download `url` into `folder` (created only once a body arrives); TransferError if not.

    Nothing is left in `folder` when it fails.
    """
    allow = AllowList.parse(allow_hosts)
    current = parse_url(url)
    for hop in range(max_redirects + 1):
        endpoint = resolve(current, allow)
        connection = _PinnedConnection(endpoint, timeout, tls)
        response: http.client.HTTPResponse | None = None
        try:
            response = _get(connection, endpoint.url)
            if response.status in REDIRECT_STATUSES:
                current = _redirect_target(response, current)
                continue
            _check_status(response, current)
            path, size = _save(response, current, folder, max_bytes, progress)
        finally:
            if response is not None:
                response.close()
            connection.close()
        return Download(path, size, current.file_name or path.name, current.host, hop)
    raise TransferError(f"too many redirects (more than {max_redirects})")


def safe_name(raw: str, default: str = "file") -> str:
    """A file name safe to create in a folder: base name only, plain characters, no dot first."""
    base = re.split(r"[/\\]", raw)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).lstrip(".-")
    if len(cleaned) > 200:
        stem, ext = os.path.splitext(cleaned)
        cleaned = stem[: 200 - len(ext[:20])] + ext[:20]
    return cleaned or default


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to addresses checked beforehand, never to a fresh DNS answer."""

    def __init__(self, endpoint: Endpoint, timeout: float, tls: ssl.SSLContext | None) -> None:
        super().__init__(endpoint.url.host, endpoint.url.port, timeout=timeout)
        # The Host header omits the port when it is the scheme's default.
        self.default_port = SCHEMES[endpoint.url.scheme]
        self._endpoint = endpoint
        self._tls: ssl.SSLContext | None = None
        if endpoint.url.scheme == "https":
            self._tls = tls or ssl.create_default_context()

    def connect(self) -> None:
        sock = self._connect_any()
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self._endpoint.url.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock

    def _connect_any(self) -> socket.socket:
        failure: OSError | None = None
        for family, sockaddr in self._endpoint.addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            return sock
        assert failure is not None
        raise failure


def _get(connection: _PinnedConnection, url: Url) -> http.client.HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
    with _network_errors(url, "connecting to"):
        connection.request("GET", url.target, headers=headers)
        return connection.getresponse()


def _redirect_target(response: http.client.HTTPResponse, current: Url) -> Url:
    location = response.getheader("Location")
    if not location or not location.strip():
        raise TransferError(f"HTTP {response.status} from {current.host} without a Location")
    return parse_url(urljoin(current.url, location.strip()))


def _check_status(response: http.client.HTTPResponse, url: Url) -> None:
    status = response.status
    if status == 200:
        return
    where = f"{url.host}{urlsplit(url.url).path or '/'}"
    if status in (404, 410):
        raise TransferError(f"no file at {where} (HTTP {status})", not_found=True)
    retryable = status >= 500 or status in (408, 429)
    raise TransferError(f"HTTP {status} {response.reason} from {where}"[:500], retryable=retryable)


def _save(
    response: http.client.HTTPResponse,
    url: Url,
    folder: Path,
    limit: int,
    progress: Callable[[int, int | None], None] | None,
) -> tuple[Path, int]:
    declared = response.length
    if declared is not None and declared > limit:
        raise TransferError(
            f"the file is {declared:,} bytes, over the {limit:,}-byte limit (not downloaded)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            size = _copy_body(response, out, url, limit, declared, progress)
            out.flush()
            os.fsync(out.fileno())
        final = folder / safe_name(url.file_name, "download")
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return final, size


def _copy_body(
    response: http.client.HTTPResponse,
    out: BinaryIO,
    url: Url,
    limit: int,
    declared: int | None,
    progress: Callable[[int, int | None], None] | None,
) -> int:
    size = 0
    reported = 0
    while True:
        with _network_errors(url, "reading from"):
            chunk = response.read(CHUNK_BYTES)
        if not chunk:
            if declared is not None and size < declared:
                # http.client returns the short body without complaint: the download is cut.
                raise TransferError(
                    f"network error reading from {url.host}: connection closed after "
                    f"{size:,} of {declared:,} bytes",
                    retryable=True,
                )
            return size
        size += len(chunk)
        if size > limit:
            raise TransferError(f"the file is over the {limit:,}-byte limit: download stopped")
        out.write(chunk)
        if progress is not None and size - reported >= PROGRESS_BYTES:
            progress(size, declared)
            reported = size


@contextlib.contextmanager
def _network_errors(url: Url, doing: str) -> Iterator[None]:
    """Turn socket, TLS and HTTP protocol errors into TransferErrors that say what happened."""
    try:
        yield
    except TransferError:
        raise
    except TimeoutError:
        raise TransferError(f"timed out {doing} {url.host}", retryable=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise TransferError(
            f"TLS certificate of {url.host} refused: {exc.verify_message}"
        ) from None
    except ssl.SSLError as exc:
        raise TransferError(f"TLS error with {url.host}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        detail = str(exc) or type(exc).__name__
        raise TransferError(f"network error {doing} {url.host}: {detail}", retryable=True) from None


def _normal_host(host: str) -> str:
    """Lower case, no trailing dot, IDNA-encoded: the form resolved and compared."""
    host = host.strip().rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as exc:
        raise TransferError(f"invalid host name '{host}': {exc}") from None


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [a for a in found if a is not None]

"""The SSRF-safe downloader against a real HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from worker import transfer
from worker.transfer import AllowList, TransferError, download, non_public_reason, safe_name

Route = Callable[[BaseHTTPRequestHandler], None]
LOOPBACK = ("127.0.0.1",)


class FileServer:
    """A real HTTP server on 127.0.0.1 answering scripted routes; it records every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[dict[str, Any]] = []
        #: Stalled handlers wait for this; closing the server sets it.
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append({"path": self.path, "host": self.headers.get("Host")})
                route = server.routes.get(self.path.split("?", 1)[0])
                self.close_connection = True
                if route is None:
                    send(self, b"missing", status=404)
                else:
                    route(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeout tests) is expected

        self.httpd = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def send(
    handler: BaseHTTPRequestHandler,
    body: bytes,
    status: int = 200,
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.send_header("Connection", "close")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def body(data: bytes, status: int = 200) -> Route:
    return lambda handler: send(handler, data, status)


def redirect(location: str, status: int = 302) -> Route:
    return lambda handler: send(handler, b"", status, {"Location": location})


def chunked(total: int, chunk: int = 64 * 1024) -> Route:
    """A body without Content-Length, sent in chunks (the size is only known by reading)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()
        sent = 0
        while sent < total:
            size = min(chunk, total - sent)
            handler.wfile.write(f"{size:x}\r\n".encode() + b"x" * size + b"\r\n")
            sent += size
        handler.wfile.write(b"0\r\n\r\n")

    return route


def stall(server: FileServer, after_headers: bool = False) -> Route:
    """Say nothing (or only the headers) until the test ends."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        if after_headers:
            handler.send_response(200)
            handler.send_header("Content-Length", "100")
            handler.end_headers()
            handler.wfile.write(b"partial")
            handler.wfile.flush()
        server.release.wait(10)

    return route


def failing(times: int, status: int, then: Route) -> Route:
    """Answer `status` the first `times` requests, then behave like `then`."""
    calls = {"n": 0}

    def route(handler: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        if calls["n"] <= times:
            send(handler, b"try later", status)
        else:
            then(handler)

    return route


@pytest.fixture
def server() -> Iterator[FileServer]:
    built = FileServer()
    yield built
    built.close()


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def fetch(url: str, folder: Path, **options: Any) -> transfer.Download:
    options.setdefault("max_bytes", 1 << 20)
    options.setdefault("timeout", 5.0)
    options.setdefault("allow_hosts", LOOPBACK)
    return download(url, folder, **options)


# ----------------------------------------------------------------- downloads


def test_a_download_is_streamed_to_its_final_name_with_the_original_host_header(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/exports/orders%20may.csv"] = body(b"id,name\n1,Ann\n")

    got = fetch(server.url("/exports/orders%20may.csv?token=1"), tmp_path / "out")

    assert got.path == tmp_path / "out" / "orders_may.csv"
    assert got.path.read_bytes() == b"id,name\n1,Ann\n"
    assert (got.size, got.name, got.host, got.redirects) == (14, "orders may.csv", "127.0.0.1", 0)
    assert files_in(tmp_path) == [got.path]  # no temporary file left beside it
    assert server.requests == [
        {"path": "/exports/orders%20may.csv?token=1", "host": f"127.0.0.1:{server.port}"}
    ]


def test_an_allowed_host_name_is_sent_as_the_host_header(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/a"] = body(b"hello")

    got = fetch(server.url("/a", host="localhost"), tmp_path, allow_hosts=("localhost",))

    assert got.path.name == "a" and got.size == 5
    assert server.requests[0]["host"] == f"localhost:{server.port}"


def test_a_body_without_content_length_within_the_limit_is_downloaded(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/big"] = chunked(300_000)

    got = fetch(server.url("/big"), tmp_path, max_bytes=300_000)

    assert got.size == 300_000 and got.path.stat().st_size == 300_000


def test_a_content_length_over_the_limit_is_refused_before_reading(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/huge"] = lambda h: send(h, b"", length=10 << 30)

    with pytest.raises(TransferError, match=r"10,737,418,240 bytes, over the 1,000-byte") as info:
        fetch(server.url("/huge"), tmp_path / "out", max_bytes=1000)

    assert not info.value.retryable
    assert not (tmp_path / "out").exists()


def test_a_chunked_body_over_the_limit_stops_and_leaves_no_partial_file(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/endless"] = chunked(5 << 20)

    with pytest.raises(
        TransferError, match="over the 100,000-byte limit: download stopped"
    ) as info:
        fetch(server.url("/endless"), tmp_path / "out", max_bytes=100_000)

    assert not info.value.retryable
    assert files_in(tmp_path) == []


def test_a_body_cut_short_is_a_retryable_error_and_leaves_no_partial_file(
    server: FileServer, tmp_path: Path
) -> None:
    server.routes["/cut"] = lambda h: send(h, b"only this", length=1000)

    with pytest.raises(TransferError, match=r"network error reading from 127\.0\.0\.1") as info:
        fetch(server.url("/cut"), tmp_path)

    assert info.value.retryable
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------- statuses and redirects


@pytest.mark.parametrize("status", [404, 410])
def test_a_missing_file_is_reported_as_not_found(
    server: FileServer, tmp_path: Path, status: int
) -> None:
    server.routes["/gone"] = body(b"no", status)

    with pytest.raises(TransferError, match=rf"no file at 127.0.0.1/gone \(HTTP {status}\)") as e:
        fetch(server.url("/gone?secret=1"), tmp_path)

    assert e.value.not_found and not e.value.retryable
    assert "secret" not in e.value.message  # the query string may hold a token
    assert files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (403, False), (400, False)]
)
def test_server_errors_are_retryable_and_client_errors_are_not(
    server: FileServer, tmp_path: Path, status: int, retryable: bool
) -> None:
    server.routes["/x"] = body(b"oops", status)

    with pytest.raises(TransferError, match=f"HTTP {status}") as info:
        fetch(server.url("/x"), tmp_path)

    assert info.value.retryable is retryable and not info.value.not_found
    assert files_in(tmp_path) == []


def test_relative_and_absolute_redirects_are_followed(server: FileServer, tmp_path: Path) -> None:
    server.routes["/start"] = redirect("next/step", 301)
    server.routes["/next/step"] = redirect(server.url("/final/data.csv"), 307)
    server.routes["/final/data.csv"] = body(b"a,b\n")

    got = fetch(server.url("/start"), tmp_path)

    assert (got.path.name, got.redirects) == ("data.csv", 2)
    assert [r["path"] for r in server.requests] == ["/start", "/next/step", "/final/data.csv"]


def test_a_redirect_to_a_refused_address_is_not_followed(
    server: FileServer, tmp_path: Path
) -> None:
    # Given a host that may be reached (allowed by name) redirecting to a loopback address
    server.routes["/r"] = redirect(server.url("/secret", host="127.0.0.1"))
    server.routes["/secret"] = body(b"internal")

    # When it is downloaded, the redirect target is checked like the first URL
    with pytest.raises(
        TransferError, match=r"refused: host '127\.0\.0\.1' resolves to 127\.0\.0\.1"
    ):
        fetch(server.url("/r", host="localhost"), tmp_path, allow_hosts=("localhost",))

    # Then the loopback address was never asked
    assert [r["path"] for r in server.requests] == ["/r"]
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://127.0.0.1/x", ""])
def test_a_redirect_to_another_scheme_or_nowhere_is_refused(
    server: FileServer, tmp_path: Path, location: str
) -> None:
    server.routes["/r"] = redirect(location)

    with pytest.raises(TransferError, match=r"not allowed|without a Location"):
        fetch(server.url("/r"), tmp_path)

    assert len(server.requests) == 1


def test_more_than_five_redirects_are_refused(server: FileServer, tmp_path: Path) -> None:
    server.routes["/loop"] = redirect("/loop", 308)

    with pytest.raises(TransferError, match=r"too many redirects \(more than 5\)") as info:
        fetch(server.url("/loop"), tmp_path)

    assert not info.value.retryable
    assert len(server.requests) == 6  # the first request and five redirects


# ----------------------------------------------------------------- timeouts


@pytest.mark.parametrize("after_headers", [False, True])
def test_a_stalled_server_times_out_as_a_retryable_error(
    server: FileServer, tmp_path: Path, after_headers: bool
) -> None:
    server.routes["/slow"] = stall(server, after_headers)

    with pytest.raises(TransferError, match="timed out") as info:
        fetch(server.url("/slow"), tmp_path, timeout=0.5)

    assert info.value.retryable
    assert files_in(tmp_path) == []


def test_a_closed_port_is_a_retryable_connection_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens once it is closed

    with pytest.raises(TransferError, match=r"network error connecting to 127\.0\.0\.1") as info:
        fetch(f"http://127.0.0.1:{port}/x", tmp_path)

    assert info.value.retryable


# ----------------------------------------------------------------- SSRF


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("[::1]", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("2130706433", "loopback"),
        ("0x7f000001", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("[fc00::1]", "private"),
        ("[fe80::1]", "link-local"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-public"),
        ("[2002:7f00:1::]", "embedded 127.0.0.1"),
    ],
)
def test_non_public_addresses_are_refused_without_any_request(
    server: FileServer, tmp_path: Path, host: str, reason: str
) -> None:
    with pytest.raises(TransferError, match="refused: host") as info:
        fetch(server.url("/x", host=host), tmp_path, allow_hosts=())

    assert reason in info.value.message
    assert not info.value.retryable
    assert server.requests == []
    assert not tmp_path.joinpath("x").exists() and files_in(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "scheme 'file:' is not allowed"),
        ("gopher://127.0.0.1:70/_GET", "scheme 'gopher:' is not allowed"),
        ("ftp://example.com/x", "scheme 'ftp:' is not allowed"),
        ("data:text/plain,hello", "scheme 'data:' is not allowed"),
        ("//example.com/x", "scheme none is not allowed"),
        ("http://user:pw@127.0.0.1/x", "credentials in the URL"),
        ("http://127.0.0.1/a\r\nX-Injected: 1", "spaces or control characters"),
        ("http://127.0.0.1:99999/x", "malformed URL"),
        ("http:///x", "the URL has no host"),
        ("http://[fe80::1%25eth0]/x", "zone identifiers"),
        ("http://127.0.0.1:0/x", "port 0"),
        ("http://" + "a" * 9000, "longer than 8,192"),
    ],
)
def test_urls_that_cannot_be_safe_are_refused_before_any_lookup(
    server: FileServer, tmp_path: Path, url: str, message: str
) -> None:
    with pytest.raises(TransferError, match=message) as info:
        fetch(url, tmp_path)

    assert not info.value.retryable
    assert server.requests == [] and files_in(tmp_path) == []


def test_the_checked_address_is_the_one_connected_to(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a DNS that answers loopback (allowed) first, then an address that is not allowed
    answers = ["127.0.0.1", "10.9.9.9"]
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        address = answers[min(len(lookups), len(answers)) - 1]
        return real(address, port, *args, **kwargs)

    monkeypatch.setattr(transfer.socket, "getaddrinfo", rebinding)
    server.routes["/a"] = body(b"pinned")

    # When the file is downloaded
    got = fetch(server.url("/a", host="rebind.example"), tmp_path, allow_hosts=("127.0.0.0/8",))

    # Then the host was resolved once, the checked address used, the name kept in Host
    assert got.path.read_bytes() == b"pinned"
    assert lookups == ["rebind.example"]
    assert server.requests[0]["host"] == f"rebind.example:{server.port}"


def test_an_unknown_host_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=r"cannot resolve host 'no-such-host\.invalid'"):
        fetch("http://no-such-host.invalid/x", tmp_path)


def test_the_allow_list_takes_host_names_addresses_and_networks() -> None:
    allow = AllowList.parse(["Files.Example.", "10.0.0.0/8", "::1", "[fd00::/8]"])

    assert allow.covers_host("files.example") and not allow.covers_host("example")
    for address in ["10.2.3.4", "::1", "fd12::1", "::ffff:10.0.0.1"]:
        assert allow.covers_address(ipaddress.ip_address(address)), address
    for address in ["11.0.0.1", "127.0.0.1", "fe80::1"]:
        assert not allow.covers_address(ipaddress.ip_address(address)), address


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("::ffff:8.8.8.8", None),
        ("2606:4700::1111", None),
        ("198.18.0.1", "private"),
        ("240.0.0.1", "private"),
        ("255.255.255.255", "private"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
        ("64:ff9b::a00:1", "reserved"),
        ("2002:a00:1::", "private (embedded 10.0.0.1)"),
    ],
)
def test_public_addresses_are_told_apart(address: str, reason: str | None) -> None:
    assert non_public_reason(ipaddress.ip_address(address)) == reason


# ----------------------------------------------------------------- https


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path / "tls"
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    subprocess.run(
        [
            *command.split(),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[FileServer, list[str]]]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    names: list[str] = []

    def remember(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(str(name))

    context.sni_callback = remember
    built = FileServer(tls=context)
    yield built, names
    built.close()


def test_https_verifies_the_certificate_against_the_host_name_sent_by_sni(
    tls_server: tuple[FileServer, list[str]], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    server, names = tls_server
    server.routes["/secure.csv"] = body(b"tls")
    trusting = ssl.create_default_context(cafile=str(certificate[0]))

    got = fetch(
        server.url("/secure.csv", host="localhost", scheme="https"),
        tmp_path,
        allow_hosts=("localhost",),
        tls=trusting,
    )

    assert got.path.read_bytes() == b"tls"
    assert names == ["localhost"]
    assert server.requests[0]["host"] == f"localhost:{server.port}"


def test_https_refuses_a_certificate_it_cannot_verify(
    tls_server: tuple[FileServer, list[str]], tmp_path: Path
) -> None:
    server, _names = tls_server
    server.routes["/secure.csv"] = body(b"tls")

    with pytest.raises(TransferError, match="TLS certificate of localhost refused") as info:
        fetch(
            server.url("/secure.csv", host="localhost", scheme="https"),
            tmp_path / "out",
            allow_hosts=("localhost",),
        )

    assert not info.value.retryable
    assert server.requests == [] and files_in(tmp_path / "out") == []


# ----------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("orders.csv", "orders.csv"),
        ("../../etc/passwd", "passwd"),
        ("C:\\temp\\evil.csv", "evil.csv"),
        ("..", "file"),
        ("", "file"),
        (".hidden", "hidden"),
        ("-rf", "rf"),
        ("a b?*.csv", "a_b_.csv"),
        ("résumé.csv", "r_sum_.csv"),
        ("x\x00y", "x_y"),
    ],
)
def test_safe_names_keep_only_a_plain_base_name(raw: str, expected: str) -> None:
    assert safe_name(raw) == expected


def test_a_very_long_name_is_shortened_and_keeps_its_extension() -> None:
    name = safe_name("a" * 1000 + ".csv")
    assert len(name) == 200 and name.endswith("a.csv")


def test_an_https_redirect_to_http_is_checked_and_followed_in_plain_http(
    tls_server: tuple[FileServer, list[str]],
    server: FileServer,
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    secure, _names = tls_server
    secure.routes["/moved"] = redirect(server.url("/plain.csv", host="localhost"))
    server.routes["/plain.csv"] = body(b"plain")

    got = fetch(
        secure.url("/moved", host="localhost", scheme="https"),
        tmp_path,
        allow_hosts=("localhost",),
        tls=ssl.create_default_context(cafile=str(certificate[0])),
    )

    assert (got.path.read_bytes(), got.redirects) == (b"plain", 1)

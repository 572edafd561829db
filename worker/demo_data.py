"""Data for the demo: a generated CRM extract (gzipped CSV) served over HTTP on loopback."""

from __future__ import annotations

import csv
import functools
import gzip
import random
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIRST_NAMES = ("Anna", "Louis", "Chloé", "Hugo", "Inès", "Jules", "Léa", "Noah", "Zoé", "Adam")
LAST_NAMES = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy")
CITIES = {"FR": ("Paris", "Lyon", "Nantes"), "DE": ("Berlin", "Köln"), "ES": ("Madrid",)}
#: Lines a real extract would have: they go to loadFile's reject outlet, with their reason.
BAD_LINES = (
    "CRM-BAD-1;bad.date@example.com;Eve;Adams;31/02/1990;FR;Paris",
    "CRM-BAD-2;too;few;columns",
)


def write_profiles(path: Path, rows: int, seed: int = 7) -> Path:
    """A `;`-separated, gzipped CSV of `rows` profiles plus a few malformed lines."""
    rng = random.Random(seed)
    countries = list(CITIES)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as raw:
        out = csv.writer(raw, delimiter=";", lineterminator="\n")
        out.writerow(["crmId", "email", "firstName", "lastName", "birthDate", "country", "city"])
        for number in range(rows):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            country = rng.choices(countries, weights=(6, 3, 1))[0]
            # One profile in twenty has no e-mail address: the query leaves it out.
            email = "" if number % 20 == 0 else f"{first}.{last}.{number}@example.com".lower()
            birth = f"{rng.randint(1950, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            out.writerow(
                [
                    f"CRM-{number:06d}",
                    email,
                    first,
                    last,
                    birth,
                    country,
                    rng.choice(CITIES[country]),
                ]
            )
        for line in BAD_LINES:
            raw.write(line + "\n")
    return path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    """Serve `folder` on 127.0.0.1 (a free port) from a thread; returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="demo-http", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def sample_lines(path: Path, limit: int = 3) -> list[str]:
    """The first lines of a produced CSV, for the demo's summary."""
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n") for line, _ in zip(handle, range(limit), strict=False)]


def gz_size(path: Path) -> str:
    return f"{path.stat().st_size:,} bytes"

"""importSharedAudience: synchronise shared audiences from a source connector.

A shared audience is a CSV list of profile keys (`crmId` or `email` column) published by
another system. The connector is a directory (the local default,
CARILLON_HOME/shared_audiences/<org>/<audience>.csv) or HTTP (CARILLON_SHARED_AUDIENCE_URL:
`GET <url>/audiences` answers `{"audiences": [{"org", "name", "version"}]}` and
`GET <url>/audiences/<org>/<name>` the CSV). Each audience whose version changed replaces
its members with the org's profiles matching the keys; unknown keys are counted, not created.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from worker.activities.base import ActivityType, Context, Outcome
from worker.config import Settings
from worker.db import utcnow
from worker.definitions import NAME_RE
from worker.errors import ActivityError
from worker.marketing import audience, audience_member, profile
from worker.models import Organization
from worker.registry import register
from worker.technical import http
from worker.technical.indicators import read_pointer, write_pointer

#: Keys resolved per query.
CHUNK = 5_000
#: The largest shared audience file read.
MAX_BYTES = 200 * 1024 * 1024
KEY_COLUMNS = ("crmId", "email")


@dataclass(frozen=True)
class SharedAudience:
    org: str
    name: str
    #: Changes whenever the content does (file mtime and size, or the source's version).
    version: int


class AudienceSource(Protocol):
    def list(self) -> list[SharedAudience]: ...

    def open(self, shared: SharedAudience) -> io.TextIOBase: ...


class DirectorySource:
    """<root>/<org>/<name>.csv; symlinks and badly named entries are skipped."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self) -> list[SharedAudience]:
        if not self.root.is_dir():
            return []
        found = []
        for org_dir in sorted(self.root.iterdir()):
            if org_dir.is_symlink() or not org_dir.is_dir() or not NAME_RE.match(org_dir.name):
                continue
            for path in sorted(org_dir.glob("*.csv")):
                if path.is_symlink() or not path.is_file() or not NAME_RE.match(path.stem):
                    continue
                stat = path.stat()
                found.append(
                    SharedAudience(org_dir.name, path.stem, stat.st_mtime_ns ^ stat.st_size)
                )
        return found

    def open(self, shared: SharedAudience) -> io.TextIOBase:
        path = self.root / shared.org / f"{shared.name}.csv"
        if path.stat().st_size > MAX_BYTES:
            raise ActivityError(f"shared audience {shared.name}: larger than {MAX_BYTES} bytes")
        return open(path, encoding="utf-8", newline="")


class HttpSource:
    def __init__(self, base_url: str) -> None:
        self.base_url = http.checked_base_url(base_url, "CARILLON_SHARED_AUDIENCE_URL")

    def list(self) -> list[SharedAudience]:
        raw = http.call(urllib.request.Request(f"{self.base_url}/audiences"), "audience source")
        try:
            entries = json.loads(raw)["audiences"]
            found = [
                SharedAudience(str(e["org"]), str(e["name"]), int(e["version"])) for e in entries
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise ActivityError(f"audience source: unreadable list ({exc})") from None
        return [a for a in found if NAME_RE.match(a.org) and NAME_RE.match(a.name)]

    def open(self, shared: SharedAudience) -> io.TextIOBase:
        path = "/".join(urllib.parse.quote(part, safe="") for part in (shared.org, shared.name))
        raw = http.call(
            urllib.request.Request(f"{self.base_url}/audiences/{path}"), "audience source"
        )
        return io.StringIO(raw.decode("utf-8", errors="replace"), newline="")


def source_for(settings: Settings) -> AudienceSource:
    if settings.shared_audience_url:
        return HttpSource(settings.shared_audience_url)
    return DirectorySource(Path(settings.home) / "shared_audiences")


def _keys(stream: io.TextIOBase, where: str) -> Iterator[tuple[str, list[str]]]:
    """(column, keys) chunks of the CSV's key column."""
    reader = csv.DictReader(stream)
    column = next((c for c in KEY_COLUMNS if c in (reader.fieldnames or [])), None)
    if column is None:
        raise ActivityError(f"{where}: the header needs a crmId or email column")
    chunk: list[str] = []
    for row in reader:
        value = (row.get(column) or "").strip()
        if value:
            chunk.append(value[:255])
        if len(chunk) >= CHUNK:
            yield column, chunk
            chunk = []
    if chunk:
        yield column, chunk


def sync(s: Session, org_id: int, shared: SharedAudience, stream: io.TextIOBase) -> tuple[int, int]:
    """Replace the audience's members; returns (members, unknown keys)."""
    found = s.execute(
        select(audience.c.id).where(audience.c.org_id == org_id, audience.c.name == shared.name)
    ).scalar()
    if found is None:
        found = s.execute(
            insert(audience)
            .values(
                org_id=org_id,
                name=shared.name,
                label=f"Shared audience {shared.name}",
                resource="profile",
            )
            .returning(audience.c.id)
        ).scalar_one()
    s.execute(delete(audience_member).where(audience_member.c.audienceId == found))
    members: set[int] = set()
    unknown = 0
    for column, keys in _keys(stream, f"shared audience {shared.name}"):
        wanted = set(keys)
        rows = s.execute(
            select(profile.c.id, profile.c[column]).where(
                profile.c.org_id == org_id, profile.c[column].in_(wanted)
            )
        ).all()
        unknown += len(wanted - {key for _, key in rows})
        fresh = [{"audienceId": found, "memberId": pid} for pid, _ in rows if pid not in members]
        members.update(pid for pid, _ in rows)
        if fresh:
            s.execute(insert(audience_member), fresh)
    s.execute(
        update(audience)
        .where(audience.c.id == found)
        .values(count=len(members), lastModified=utcnow())
    )
    return len(members), unknown


@register
class ImportSharedAudience(ActivityType):
    """Synchronises the shared audiences whose content changed since the last run."""

    name = "importSharedAudience"
    family = "data"

    def run(self, ctx: Context) -> Outcome:
        source = source_for(ctx.settings)
        synced = 0
        for shared in source.list():
            # One pointer per audience: the version it was last synchronised at.
            digest = hashlib.sha256(f"{shared.org}/{shared.name}".encode()).hexdigest()
            pointer = f"importSharedAudience:{digest[:40]}"
            if read_pointer(ctx.session, pointer) == shared.version:
                continue
            org_id = ctx.session.scalars(
                select(Organization.id).where(Organization.name == shared.org)
            ).first()
            if org_id is None:
                ctx.log(f"audience {shared.org}/{shared.name}: no such organization", "warning")
                continue
            with source.open(shared) as stream:
                members, unknown = sync(ctx.session, org_id, shared, stream)
            write_pointer(ctx.session, pointer, shared.version)
            synced += 1
            ctx.log(
                f"audience {shared.org}/{shared.name}: {members:,} member(s)"
                + (f", {unknown:,} unknown key(s)" if unknown else "")
            )
        ctx.log(f"{synced:,} shared audience(s) synchronised")
        return Outcome(counts={ctx.activity.name: synced})

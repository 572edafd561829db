"""Data management on files: transferFile (HTTP(S) download or inbox) and decompress.

Files live in one folder per task attempt, `<files>/<workflow id>/<task id>.<attempt>`, and
appear there only under their final name (written to a temporary name, then renamed). A run
that fails removes its folder. The database transaction that records a task may still roll
back after a run moved a file out of the inbox: the next attempt of the same task first takes
over what an earlier attempt picked, so a file is neither lost nor imported twice.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import gzip
import lzma
import os
import random
import shutil
import stat as stat_module
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from worker import expressions, transfer
from worker.activities.base import Activity, ActivityType, Context, Option, Outcome
from worker.errors import ActivityError, DefinitionError
from worker.registry import register
from worker.transfer import TransferError, safe_name

#: Jitter from a generator of our own: a background thread drawing from the shared
#: `random` module would change its state under anyone else (Hypothesis refuses that).
_JITTER = random.Random()

DEFAULT_RETRIES = 2
DEFAULT_BACKOFF = 1.0
#: One wait between two download attempts is at most this long (seconds)...
MAX_BACKOFF = 60.0
#: ...and all of a task's waits together at most this long.
MAX_TOTAL_WAIT = 300.0
DEFAULT_MAX_RATIO = 200
#: The ratio limit applies past this many decompressed bytes: small, very regular files
#: (a page of blanks) compress far better than 200:1 and are no threat.
RATIO_FLOOR = 1 << 20
#: Archives listing more members are refused before their directory is loaded in memory.
MAX_MEMBERS = 10_000
CHUNK_BYTES = 64 * 1024
PROGRESS_BYTES = 1 << 20
#: Prefix of inbox files claimed by a task while they are copied to another file system.
CLAIM_PREFIX = ".carillon-claim."
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
GZIP_MAGIC = b"\x1f\x8b"
URL_ONLY_OPTIONS = ("timeout", "retries", "backoffSeconds")


# ----------------------------------------------------------------- option checks


def _check_url(value: Any) -> str | None:
    if expressions.find_placeholders(value):
        return None  # checked once substituted, at run time
    try:
        transfer.parse_url(value)
    except TransferError as exc:
        return exc.message
    return None


def inbox_name_problem(name: str) -> str | None:
    """Why `name` cannot name files of the inbox (a name or glob pattern, no folders)."""
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if "/" in name or "\\" in name:
        return "it must be a file name or pattern inside the inbox, without folders"
    if name in (".", ".."):
        return "it names a folder"
    if any(not c.isprintable() for c in name):
        return "it contains control characters"
    if len(name) > 255:
        return "it is longer than 255 characters"
    return None


def _check_inbox_file(value: Any) -> str | None:
    # Placeholders stand for a plain name here; the substituted value is checked again.
    return inbox_name_problem(expressions.PLACEHOLDER.sub("x", value))


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be between {low:g} and {high:g}"

    return check


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in allowed else f"must be one of {', '.join(allowed)}"

    return check


# ----------------------------------------------------------------- files of a task


def task_folder(ctx: Context) -> Path:
    """The folder of this attempt of this task: unique, so a redelivery never mixes files."""
    return ctx.settings.files / str(ctx.workflow_id) / f"{ctx.task_id}.{ctx.attempt}"


def _earlier_attempt_folders(ctx: Context) -> list[Path]:
    parent = ctx.settings.files / str(ctx.workflow_id)
    prefix = f"{ctx.task_id}."
    try:
        entries = list(parent.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        number = entry.name[len(prefix) :]
        if entry.name.startswith(prefix) and number.isdigit() and int(number) < ctx.attempt:
            found.append(entry)
    return sorted(found, key=lambda p: int(p.name[len(prefix) :]))


def _clear_earlier_attempts(ctx: Context) -> None:
    """Remove what crashed attempts of this task left (their transaction rolled back)."""
    for folder in _earlier_attempt_folders(ctx):
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _discarded_on_error(folder: Path) -> Iterator[None]:
    """Remove this attempt's folder when the run fails: a failed run leaves no file."""
    try:
        yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@contextlib.contextmanager
def _removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Remove this attempt's folder if nothing was moved into it (never a picked file)."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()


def file_descriptor(path: Path, size: int, name: str) -> dict[str, Any]:
    return {"kind": "file", "path": str(path), "size": size, "name": name}


def _no_file(ctx: Context, message: str) -> Outcome:
    """Fire `noFile` when it has a transition; otherwise it is an error."""
    if "noFile" not in ctx.activity.transitions:
        raise ActivityError(message)
    ctx.log(f"{message}: noFile outlet", "warning")
    return Outcome(outlets=("noFile",))


def _byte_limit(ctx: Context) -> int:
    limit = ctx.settings.transfer_max_bytes
    return min(limit, int(ctx.activity.options.get("maxBytes", limit)))


def _progress(ctx: Context) -> Callable[[int, int | None], None]:
    return lambda done, total: ctx.progress(done, total, unit="bytes")


# ----------------------------------------------------------------- transferFile


@register
class TransferFile(ActivityType):
    """Downloads a file over HTTP(S) (public hosts only) or picks the oldest from the inbox."""

    name = "transferFile"
    family = "data"
    data = True
    options = {
        "url": Option((str,), check=_check_url),
        "inboxFile": Option((str,), check=_check_inbox_file),
        "maxBytes": Option((int,), check=_between(1, 1 << 40)),
        "timeout": Option((int, float), check=_between(0.05, 3600)),
        "retries": Option((int,), check=_between(0, 10)),
        "backoffSeconds": Option((int, float), check=_between(0, MAX_BACKOFF)),
    }

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        options = activity.options
        if ("url" in options) == ("inboxFile" in options):
            raise DefinitionError(
                "give exactly one of 'url' or 'inboxFile'", activity=activity.name
            )
        misplaced = [key for key in URL_ONLY_OPTIONS if key in options and "url" not in options]
        if misplaced:
            raise DefinitionError(
                f"option(s) {', '.join(misplaced)} only apply to a download ('url')",
                activity=activity.name,
            )

    def outlets(self, activity: Activity) -> frozenset[str]:
        return frozenset({"done", "noFile"})

    def run(self, ctx: Context) -> Outcome:
        if "url" in ctx.activity.options:
            return self._download(ctx)
        return self._pick(ctx)

    # -- download

    def _download(self, ctx: Context) -> Outcome:
        options = ctx.activity.options
        url = expressions.substitute(options["url"], ctx.vars)
        if not isinstance(url, str) or not url:
            raise ActivityError(f"option 'url' gives {url!r}, not a URL (is the variable set?)")
        _clear_earlier_attempts(ctx)
        folder = task_folder(ctx)
        with _discarded_on_error(folder):
            try:
                got = self._download_with_retries(ctx, url, folder)
            except TransferError as exc:
                if exc.not_found:
                    return _no_file(ctx, exc.message)
                raise
        ctx.log(f"downloaded {got.size:,} bytes from {got.host}")
        return Outcome(outputs={"done": file_descriptor(got.path, got.size, got.name)})

    def _download_with_retries(self, ctx: Context, url: str, folder: Path) -> transfer.Download:
        options = ctx.activity.options
        retries = int(options.get("retries", DEFAULT_RETRIES))
        backoff = float(options.get("backoffSeconds", DEFAULT_BACKOFF))
        waited = 0.0
        for attempt in range(1, retries + 2):
            try:
                return transfer.download(
                    url,
                    folder,
                    max_bytes=_byte_limit(ctx),
                    timeout=float(options.get("timeout", ctx.settings.transfer_timeout)),
                    allow_hosts=ctx.settings.transfer_allow_hosts,
                    progress=_progress(ctx),
                )
            except TransferError as exc:
                delay = _backoff_delay(backoff, attempt, waited)
                if not exc.retryable or attempt > retries or delay is None:
                    raise
                ctx.log(
                    f"download attempt {attempt} failed: {exc.message}; "
                    f"trying again in {delay:.2f} s",
                    "warning",
                )
                # A bounded wait inside the task (at most MAX_TOTAL_WAIT in all): the heartbeat
                # keeps the lease fresh meanwhile.
                time.sleep(delay)
                waited += delay
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- inbox

    def _pick(self, ctx: Context) -> Outcome:
        pattern = expressions.substitute(ctx.activity.options["inboxFile"], ctx.vars)
        if not isinstance(pattern, str):
            raise ActivityError(f"option 'inboxFile' gives {pattern!r}, not a file name")
        problem = inbox_name_problem(pattern)
        if problem:
            raise ActivityError(f"inboxFile {pattern!r} refused: {problem}")
        folder = task_folder(ctx)
        with _removed_if_left_empty(folder):
            picked = _take_over(ctx, folder) or _pick_from_inbox(ctx, pattern, folder)
        _clear_earlier_attempts(ctx)
        if picked is None:
            return _no_file(ctx, f"no file matching {pattern!r} in the inbox")
        path, name = picked
        size = path.stat().st_size
        ctx.log(f"picked inbox file {name} ({size:,} bytes)")
        return Outcome(outputs={"done": file_descriptor(path, size, name)})


def _backoff_delay(base: float, attempt: int, waited: float) -> float | None:
    """Exponential backoff with jitter; None once the total wait would pass MAX_TOTAL_WAIT."""
    remaining = MAX_TOTAL_WAIT - waited
    if remaining <= 0 and base > 0:
        return None
    delay = min(MAX_BACKOFF, base * 2 ** (attempt - 1)) * _JITTER.uniform(0.5, 1.0)
    return max(0.0, min(delay, remaining))


def _take_over(ctx: Context, folder: Path) -> tuple[Path, str] | None:
    """The file an earlier attempt of this task picked, moved into this attempt's folder."""
    for earlier in _earlier_attempt_folders(ctx):
        for entry in sorted(earlier.iterdir()):
            if entry.is_file() and not entry.is_symlink() and not entry.name.startswith("."):
                folder.mkdir(parents=True, exist_ok=True)
                moved = folder / entry.name
                os.replace(entry, moved)
                ctx.log(f"taking over {entry.name}, picked by an earlier attempt of this task")
                return moved, entry.name
    claim = f"{CLAIM_PREFIX}{ctx.task_id}."
    with contextlib.suppress(FileNotFoundError):
        for claimed in os.scandir(ctx.settings.inbox):
            if claimed.name.startswith(claim) and claimed.is_file(follow_symlinks=False):
                name = claimed.name[len(claim) :]
                destination = folder / safe_name(name, "inbox-file")
                ctx.log(f"taking over {name}, claimed by an earlier attempt")
                return _copy_claimed(Path(claimed.path), destination), name
    return None


def _pick_from_inbox(ctx: Context, pattern: str, folder: Path) -> tuple[Path, str] | None:
    """Move the oldest regular file matching `pattern` out of the inbox; None if there is none."""
    limit = _byte_limit(ctx)
    for _mtime, name, size in _inbox_candidates(ctx, pattern):
        if size > limit:
            raise ActivityError(
                f"inbox file {name} is {size:,} bytes, over the {limit:,}-byte limit "
                "(left in the inbox)"
            )
        moved = _move_out_of_inbox(ctx, name, folder)
        if moved is not None:
            return moved, name
        # Another task took it between the listing and the move: try the next one.
    return None


def _inbox_candidates(ctx: Context, pattern: str) -> list[tuple[int, str, int]]:
    """(mtime, name, size) of the regular files matching `pattern`, oldest first."""
    inbox = ctx.settings.inbox
    try:
        entries = list(os.scandir(inbox))
    except FileNotFoundError:
        ctx.log(f"the inbox folder {inbox} does not exist", "warning")
        return []
    root = inbox.resolve()
    found: list[tuple[int, str, int]] = []
    refused: list[str] = []
    for entry in entries:
        if not _listed(entry.name, pattern):
            continue
        if entry.is_symlink():
            refused.append(f"{entry.name!r} (symbolic link)")
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # picked by another task meanwhile
        if stat.st_nlink > 1 or Path(entry.path).resolve().parent != root:
            # A hard link could expose a file the uploader cannot read: only plain files.
            refused.append(f"{entry.name!r} (linked from elsewhere)")
            continue
        found.append((stat.st_mtime_ns, entry.name, stat.st_size))
    for reason in refused:
        ctx.log(f"inbox entry {reason} refused: only regular files are picked", "warning")
    if refused and not found:
        raise ActivityError(f"inbox file(s) matching {pattern!r} refused: {', '.join(refused)}")
    return sorted(found)


def _listed(name: str, pattern: str) -> bool:
    """Hidden files (uploads in progress, our claims) only match a pattern that asks for them."""
    if name.startswith(CLAIM_PREFIX) or (name.startswith(".") and not pattern.startswith(".")):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _move_out_of_inbox(ctx: Context, name: str, folder: Path) -> Path | None:
    """Rename the inbox file into `folder` (atomic: one task wins); None if it is gone."""
    source = ctx.settings.inbox / name
    destination = folder / safe_name(name, "inbox-file")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, destination)
        return _still_regular(destination, source)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # Another file system: claim the file inside the inbox first (atomic), then copy it.
    claimed = ctx.settings.inbox / f"{CLAIM_PREFIX}{ctx.task_id}.{name[:150]}"
    try:
        os.rename(source, claimed)
    except FileNotFoundError:
        return None
    return _copy_claimed(_still_regular(claimed, source), destination)


def _still_regular(moved: Path, source: Path) -> Path:
    """The file listed may have been swapped for a link before the rename: put that back."""
    stat = os.lstat(moved)
    if stat_module.S_ISREG(stat.st_mode) and stat.st_nlink == 1:
        return moved
    os.rename(moved, source)
    raise ActivityError(f"inbox file {source.name} changed while it was picked: refused")


def _copy_claimed(claimed: Path, destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(claimed, "rb") as source:
        _write_atomically(destination, lambda out: shutil.copyfileobj(source, out, CHUNK_BYTES))
    os.unlink(claimed)
    return destination


def _write_atomically(destination: Path, write: Callable[[IO[bytes]], Any]) -> Any:
    """Write through a temporary file in the same folder, synced, then renamed."""
    handle, temporary = tempfile.mkstemp(
        dir=destination.parent, prefix=".carillon-", suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            result = write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return result


# ----------------------------------------------------------------- decompress


def _check_member_option(value: Any) -> str | None:
    if expressions.find_placeholders(value):
        return None
    return _member_name_problem(value)


def _member_name_problem(name: str) -> str | None:
    """Why an archive member name is unsafe to act on (absolute, drive letter, `..`)."""
    if not name or "\x00" in name:
        return "empty or NUL byte"
    if name[0] in "/\\" or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        return "absolute path or drive letter"
    if ".." in name.replace("\\", "/").split("/"):
        return "'..' in its path"
    return None


@register
class Decompress(ActivityType):
    """Extracts one zip member or a gzip file, streaming with size and ratio limits."""

    name = "decompress"
    family = "data"
    data = True
    options = {
        "format": Option((str,), check=_one_of("auto", "zip", "gzip")),
        "member": Option((str,), check=_check_member_option),
        "maxBytes": Option((int,), check=_between(1, 1 << 40)),
        "maxRatio": Option((int, float), check=_between(1, 1_000_000)),
    }

    def validate(self, activity: Activity) -> None:
        super().validate(activity)
        if "member" in activity.options and activity.options.get("format") == "gzip":
            raise DefinitionError(
                "option 'member' only applies to zip archives", activity=activity.name
            )

    def run(self, ctx: Context) -> Outcome:
        source = ctx.input("file")
        path = _input_path(ctx, source)
        source_name = str(source.get("name") or path.name)
        found = _sniff(path)
        wanted = ctx.activity.options.get("format", "auto")
        if wanted == "auto" and found is None:
            ctx.log(f"{source_name} is not a zip or gzip archive: passed on unchanged")
            return Outcome(outputs={"done": dict(source)})
        kind = found if wanted == "auto" else wanted
        if kind != found:
            raise ActivityError(f"{source_name} is not a {wanted} archive")
        if kind == "gzip" and "member" in ctx.activity.options:
            raise ActivityError(
                f"{source_name} is a gzip file: option 'member' is for zip archives"
            )
        _clear_earlier_attempts(ctx)
        folder = task_folder(ctx)
        limits = _Limits.of(ctx, path.stat().st_size)
        with _discarded_on_error(folder):
            if kind == "zip":
                out, size, name = _unzip(ctx, path, source_name, folder, limits)
            else:
                out, size, name = _gunzip(ctx, path, source_name, folder, limits)
        ctx.log(f"decompressed {name} from {source_name}: {size:,} bytes ({kind})")
        return Outcome(outputs={"done": file_descriptor(out, size, name)})


class _Limits:
    """The decompressed size limit and the ratio limit for one input."""

    def __init__(self, max_bytes: int, max_ratio: float, compressed: int) -> None:
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.compressed = max(1, compressed)

    @classmethod
    def of(cls, ctx: Context, compressed: int) -> _Limits:
        ratio = float(ctx.activity.options.get("maxRatio", DEFAULT_MAX_RATIO))
        return cls(_byte_limit(ctx), ratio, compressed)

    def problem(self, size: int) -> str | None:
        if size > self.max_bytes:
            return f"over the {self.max_bytes:,}-byte limit"
        if size > RATIO_FLOOR and size > self.max_ratio * self.compressed:
            return (
                f"more than {self.max_ratio:g} times its compressed size of "
                f"{self.compressed:,} bytes"
            )
        return None


def _input_path(ctx: Context, source: dict[str, Any]) -> Path:
    """The inbound file, which must be one of ours: inside the files folder."""
    raw = source.get("path")
    if not isinstance(raw, str) or not raw:
        raise ActivityError("the inbound file descriptor has no path")
    path = Path(raw)
    if not path.resolve().is_relative_to(ctx.settings.files.resolve()):
        raise ActivityError(f"the inbound file {raw} is outside the files folder: refused")
    if not path.is_file():
        raise ActivityError(f"the inbound file {raw} no longer exists")
    return path


def _sniff(path: Path) -> str | None:
    with open(path, "rb") as file:
        head = file.read(4)
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    return None


def _unzip(
    ctx: Context, path: Path, source_name: str, folder: Path, limits: _Limits
) -> tuple[Path, int, str]:
    what = f"zip archive {source_name}"
    _check_member_count(path, what)
    with _corrupt_as_error(what):
        archive = zipfile.ZipFile(path)
    with archive:
        info = _choose_member(ctx, archive, source_name)
        # Never trust the header's sizes, but they may refuse early (checked again while reading).
        limits.compressed = max(1, min(info.compress_size, limits.compressed))
        declared = limits.problem(info.file_size)
        if declared:
            raise ActivityError(f"member {info.filename!r} declares a size {declared}: refused")
        name = os.path.basename(info.filename.replace("\\", "/"))
        with _corrupt_as_error(what):
            stream = archive.open(info)
        with stream:
            out, size = _inflate(ctx, stream, folder / safe_name(name, "member"), limits, what)
    return out, size, name


def _check_member_count(path: Path, what: str) -> None:
    """Refuse huge member counts from the end record, before zipfile loads the directory."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:
        return
    with open(path, "rb") as file:
        record = end_record(file)
    if record is None:
        raise ActivityError(f"corrupt {what}: no end of central directory record")
    total = record[4]  # zipfile._ECD_ENTRIES_TOTAL
    if total > MAX_MEMBERS:
        raise ActivityError(f"{what} lists {total:,} members, over the limit of {MAX_MEMBERS:,}")


def _choose_member(ctx: Context, archive: zipfile.ZipFile, source_name: str) -> zipfile.ZipInfo:
    members = [info for info in archive.infolist() if not info.is_dir()]
    wanted = expressions.substitute(ctx.activity.options.get("member"), ctx.vars)
    if wanted is not None:
        members = [info for info in members if info.filename == wanted]
        if len(members) != 1:
            found = "no" if not members else "several"
            raise ActivityError(f"{source_name} has {found} member named {wanted!r}")
    elif not members:
        raise ActivityError(f"{source_name} is an empty archive")
    elif len(members) > 1:
        listed = ", ".join(repr(info.filename) for info in members[:10])
        more = "" if len(members) <= 10 else f" and {len(members) - 10:,} more"
        raise ActivityError(
            f"{source_name} has {len(members):,} members ({listed}{more}): "
            "choose one with the 'member' option"
        )
    info = members[0]
    problem = _member_name_problem(info.filename)
    if problem:
        raise ActivityError(f"member {info.filename!r} refused: unsafe name ({problem})")
    if info.flag_bits & 0x1:
        raise ActivityError(f"member {info.filename!r} is encrypted: refused")
    return info


def _gunzip(
    ctx: Context, path: Path, source_name: str, folder: Path, limits: _Limits
) -> tuple[Path, int, str]:
    name = _gunzipped_name(source_name)
    destination = folder / safe_name(name, "decompressed")
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        out, size = _inflate(ctx, stream, destination, limits, f"gzip file {source_name}")
    return out, size, name


def _gunzipped_name(name: str) -> str:
    lowered = name.lower()
    for suffix, replacement in ((".tgz", ".tar"), (".gzip", ""), (".gz", "")):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)] + replacement
    return f"{name}.out"


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


#: What decompressors raise on bad input (bz2 raises OSError, zipfile a bad CRC...).
DECOMPRESSION_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    NotImplementedError,
    ValueError,
    OSError,
)


@contextlib.contextmanager
def _corrupt_as_error(what: str) -> Iterator[None]:
    try:
        yield
    except DECOMPRESSION_ERRORS as exc:
        raise ActivityError(f"corrupt {what}: {exc}") from None


def _inflate(
    ctx: Context, stream: _Readable, destination: Path, limits: _Limits, what: str
) -> tuple[Path, int]:
    """Stream decompressed bytes to `destination`, stopping as soon as a limit is passed."""
    destination.parent.mkdir(parents=True, exist_ok=True)

    def copy(out: IO[bytes]) -> int:
        size = reported = 0
        while True:
            with _corrupt_as_error(what):
                chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                return size
            size += len(chunk)
            problem = limits.problem(size)
            if problem:
                raise ActivityError(f"decompressed data is {problem}: stopped (a zip bomb?)")
            out.write(chunk)
            if size - reported >= PROGRESS_BYTES:
                ctx.progress(size, None, unit="bytes")
                reported = size

    return destination, _write_atomically(destination, copy)

"""The benchmarks' SMTP sink: Postfix's smtp-sink (C) in its own process, counting messages."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from bench.common import ROOT

SMTP_SINK = "/usr/sbin/smtp-sink"
#: How long a sink may take to listen or to stop.
START_SECONDS = 10.0
STOP_SECONDS = 30.0
_COUNTER = re.compile(rb"mesg=(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Sink:
    """A local SMTP server that accepts everything and says how many messages it took.

    Postfix's `smtp-sink` when installed (`make bench` installs it): an event-driven C
    server with `-c` counters (`sess=N quit=N mesg=N` after every message), so the benchmark
    measures the client's side rather than the server's. Without it, the aiosmtpd sink of
    tests/smtp_server.py (about 500 messages/s on its own: it then is the bottleneck).
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.kind = "smtp-sink" if os.access(SMTP_SINK, os.X_OK) else "aiosmtpd"
        if self.kind == "smtp-sink":
            self._start_smtp_sink()
        else:
            self._start_aiosmtpd()

    def _start_smtp_sink(self) -> None:
        command = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without a user to become
            command += ["-u", "nobody"]
        # 1000: the listen backlog; -m: the most concurrent sessions it serves.
        command += ["-m", "256", f"127.0.0.1:{self.port}", "1000"]
        # The counters go to a file: a pipe nobody reads would fill up and block the sink.
        self.counters = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            command, stdout=self.counters, stderr=subprocess.STDOUT, cwd=ROOT
        )
        deadline = time.monotonic() + START_SECONDS
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait(timeout=STOP_SECONDS)
                self.counters.seek(0)
                said = self.counters.read(2000).decode(errors="replace")
                raise SystemExit(f"smtp-sink did not start: {said}")
            time.sleep(0.05)  # polling the port with a deadline: it has no readiness signal

    def _start_aiosmtpd(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.smtp_server", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise SystemExit("the SMTP sink did not start")

    def stop(self) -> int:
        """Stop it; returns how many messages it accepted."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=STOP_SECONDS)
        if self.kind == "smtp-sink":
            self.counters.seek(0)
            counts = _COUNTER.findall(self.counters.read())
            self.counters.close()
            return int(counts[-1]) if counts else 0
        return int(out.strip().splitlines()[-1])


def describe() -> str:
    """Which sink a run will use, for the benchmark's first lines."""
    if os.access(SMTP_SINK, os.X_OK):
        return f"sink: {SMTP_SINK} (Postfix)"
    found = shutil.which("smtp-sink")
    hint = f" ({found} is not {SMTP_SINK})" if found else ""
    return f"sink: aiosmtpd (slow: install postfix for smtp-sink){hint}"

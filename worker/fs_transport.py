"""The embedded broker: kombu's filesystem transport, with messages published atomically.

kombu writes a message file in place (create, then write), and a consumer polling the
folder can move and read it in between: it gets an empty file and its consumer dies on
the JSON error. Here a message is written to a side folder, then renamed into the queue
folder, which is atomic on one filesystem, so a consumer only ever sees whole messages.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    # kombu's two bases name the second parameter differently; we follow filesystem's.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        staging = os.path.join(os.path.dirname(self.data_folder_out.rstrip("/")), "staging")
        os.makedirs(staging, exist_ok=True)
        temporary = os.path.join(staging, name)
        with open(temporary, "wb") as f:
            f.write(str_to_bytes(dumps(payload)))
        os.replace(temporary, os.path.join(self.data_folder_out, name))


class Transport(filesystem.Transport):
    Channel = Channel

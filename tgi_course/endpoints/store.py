"""Endpoint state on disk, so a notebook kernel restart does not forget what was deployed.

Layout under the state folder::

    control-plane.lock        held (flock) by the control plane that owns this folder
    control-plane.json        {"pid", "url"} of that owner, so a second Python session can find it
    <namespace>/<name>.json   one record per endpoint (written atomically)
    <namespace>/<name>.log    the server process's stdout and stderr, and the control plane's notes
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from .records import EndpointRecord

log = logging.getLogger(__name__)


class StateDirBusy(RuntimeError):
    """Another live control plane owns the state folder; ``owner`` says where it listens."""

    def __init__(self, state_dir: Path, owner: dict[str, Any]) -> None:
        super().__init__(
            f"{state_dir} is used by another local control plane (pid {owner.get('pid')}, {owner.get('url')}); "
            f"stop it, or give this one another folder (TGI_COURSE_ENDPOINTS_DIR)"
        )
        self.owner = owner


class EndpointStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock_fd: int | None = None

    # --- ownership -------------------------------------------------------------------------------
    def acquire(self, url: str) -> None:
        """Become the folder's only owner, or raise :class:`StateDirBusy`."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "control-plane.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(self.root, read_owner(self.root) or {}) from None
        self._lock_fd = fd
        _atomic_write(self.root / "control-plane.json", {"pid": os.getpid(), "url": url})

    def release(self) -> None:
        if self._lock_fd is None:
            return
        (self.root / "control-plane.json").unlink(missing_ok=True)
        os.close(self._lock_fd)  # closing the descriptor drops the flock
        self._lock_fd = None

    # --- records ---------------------------------------------------------------------------------
    def load_all(self) -> list[EndpointRecord]:
        records = []
        for path in sorted(self.root.glob("*/*.json")):
            try:
                records.append(EndpointRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError, KeyError) as exc:
                # A corrupt file should not take every other endpoint down with it.
                log.warning("ignoring unreadable endpoint state %s: %s", path, exc)
        return records

    def save(self, record: EndpointRecord) -> None:
        _atomic_write(self._path(record.namespace, record.name, ".json"), record.to_json())

    def delete(self, namespace: str, name: str) -> None:
        for suffix in (".json", ".log"):
            self._path(namespace, name, suffix).unlink(missing_ok=True)

    def log_path(self, namespace: str, name: str) -> Path:
        return self._path(namespace, name, ".log")

    def note(self, namespace: str, name: str, text: str) -> None:
        """Append a control-plane line to the endpoint's log, where the learner looks first."""
        with open(self.log_path(namespace, name), "a", encoding="utf-8") as handle:
            handle.write(f"[control plane] {text}\n")

    def log_tail(self, namespace: str, name: str, lines: int = 15) -> str:
        try:
            text = self.log_path(namespace, name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _path(self, namespace: str, name: str, suffix: str) -> Path:
        folder = self.root / namespace
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}{suffix}"


def read_owner(root: Path) -> dict[str, Any] | None:
    """The ``{"pid", "url"}`` of the control plane that owns ``root``, if it left one."""
    try:
        return json.loads((Path(root) / "control-plane.json").read_text())
    except (OSError, ValueError):
        return None


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    # Write-then-rename: a crash mid-write leaves the previous version, never half a file.
    # 0600 because records may hold secrets the learner passed for the server's environment.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

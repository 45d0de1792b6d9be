"""Endpoint state on disk, so a notebook kernel restart does not forget what was deployed.

Layout under the state folder::

    control-plane.lock        held (flock) by the control plane that owns this folder
    control-plane.json        {"pid", "url"} of that owner, so a second Python session can find it
    control-plane.token       the user's token for the control plane's API (random, made on first use)
    <namespace>/<name>.json   one record per endpoint (written atomically)
    <namespace>/<name>.log    the server process's stdout and stderr, and the control plane's notes

Everything the control plane creates here is readable by its owner only (folders 0700, files 0600): the
token and each record's server API key are secrets, and the records may hold the payload's secrets.
Namespaces and names are checked (:func:`.spec.check_names`) before they become paths, so no request can
reach a file outside the folder, or one of the folder's own files.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

from . import spec as specs
from .errors import InvalidPayload
from .records import EndpointRecord

log = logging.getLogger(__name__)

TOKEN_FILE = "control-plane.token"


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
        _private_dir(self.root)
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

    def user_token(self) -> str:
        """The token the control plane's API accepts (see :func:`user_token`)."""
        return user_token(self.root)

    # --- records ---------------------------------------------------------------------------------
    def load_all(self) -> list[EndpointRecord]:
        records = []
        for path in sorted(self.root.glob("*/*.json")):
            try:
                record = EndpointRecord.from_json(json.loads(path.read_text()))
                if (record.namespace, record.name) != (path.parent.name, path.stem):
                    raise ValueError(f"it names {record.namespace}/{record.name}")
                specs.check_names(record.namespace, record.name)
                records.append(record)
            except (OSError, ValueError, TypeError, KeyError, InvalidPayload) as exc:
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
        with open(self.log_path(namespace, name), "a", encoding="utf-8", opener=_private_file) as handle:
            handle.write(f"[control plane] {text}\n")

    def log_tail(self, namespace: str, name: str, lines: int = 15) -> str:
        try:
            text = self.log_path(namespace, name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _path(self, namespace: str, name: str, suffix: str) -> Path:
        specs.check_names(namespace, name)  # the API checked already; this is the last line of defence
        folder = self.root / namespace
        path = folder / f"{name}{suffix}"
        if path.resolve().parent != self.root.resolve() / namespace:
            raise InvalidPayload(f"namespace {namespace!r} or name {name!r} leads outside the state folder")
        _private_dir(folder)
        return path


def read_owner(root: Path) -> dict[str, Any] | None:
    """The ``{"pid", "url"}`` of the control plane that owns ``root``, if it left one."""
    try:
        return json.loads((Path(root) / "control-plane.json").read_text())
    except (OSError, ValueError):
        return None


def user_token(root: Path) -> str:
    """The per-user token of the control plane that owns ``root``: made on first use, kept in ``control-plane.token``.

    The file is created complete or not at all (written aside, then hard-linked into place), so two Python
    sessions starting together agree on one token. Mode 0600: only its owner can read it.
    """
    root = Path(root)
    path = root / TOKEN_FILE
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    _private_dir(root)
    token = secrets.token_urlsafe(32)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{TOKEN_FILE}.")  # mkstemp files are 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(token + "\n")
        try:
            os.link(tmp, path)  # fails if another session made the token first: then that one counts
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: create it exclusively instead
            try:
                with open(path, "x", encoding="ascii", opener=_private_file) as handle:
                    handle.write(token + "\n")
            except FileExistsError:
                pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    return _read_token(path)


def _read_token(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        path.chmod(0o600)  # someone loosened it: a token others can read is no secret
        log.warning("%s was readable by other users; it is 0600 again", path)
    token = path.read_text(encoding="ascii").strip()
    if not token:
        raise RuntimeError(f"{path} is empty: delete it, and a new token is made on the next start")
    return token


def _private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) readable by its owner only; an existing folder is left as it is."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _private_file(path: str, flags: int) -> int:
    """``open(..., opener=_private_file)``: a new file is readable by its owner only."""
    return os.open(path, flags, 0o600)


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

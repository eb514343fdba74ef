"""What the data source looks like right now, so DVC sees fresh data (stage ``remote``).

DVC decides whether to re-run a stage from the hashes of its local deps; a file that
changed on a web server is invisible to it. The ``remote`` stage (``always_changed``) asks
the source each time and writes the answer to ``data/remote.json``, a dep of the ``data``
stage: when the answer changes, ``data`` and everything after it run again; when it does
not, DVC skips them.

- ``places365``: an HTTP ``HEAD`` per configured URL (after ``url_base``), recording the
  server's validators: ``ETag``, ``Last-Modified`` and ``Content-Length``.
- ``sample``: a SHA-256 per photograph the sample is cut from (they ship with the locked
  dependencies, so a dependency upgrade that changes one is fresh data too).

The same record, kept beside each downloaded file (:func:`validators_path`), tells the data
stage whether a file (or a partial ``.part``) on disk still matches the server's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import requests

from inpnet.config import DataConfig
from inpnet.errors import DownloadError

__all__ = ["VALIDATOR_HEADERS", "head_validators", "remote_state", "validators_path", "write_remote_state"]

log = logging.getLogger(__name__)

VALIDATOR_HEADERS = ("ETag", "Last-Modified", "Content-Length")


def head_validators(url: str, *, timeout_s: float = 60.0) -> dict[str, str | None]:
    """The validators an HTTP ``HEAD`` of ``url`` returns (redirects followed), by header name.

    Raises:
        DownloadError: the server cannot be reached or does not answer 200.
    """
    headers = {"Accept-Encoding": "identity"}  # the length of the file itself, not of a gzip of it
    try:
        resp = requests.head(url, allow_redirects=True, timeout=(timeout_s, timeout_s), headers=headers)
    except requests.RequestException as err:
        raise DownloadError(f"{url}: cannot ask the server whether the file changed (HEAD failed: {err})") from None
    if resp.status_code != 200:
        raise DownloadError(
            f"{url}: HEAD answered HTTP {resp.status_code} {resp.reason}; check the URL (or data.fetch.url_base)"
        )
    found = {name: resp.headers.get(name) for name in VALIDATOR_HEADERS}
    if found["ETag"] is None and found["Last-Modified"] is None:
        log.warning("%s: the server sends neither ETag nor Last-Modified; only a size change is noticed", url)
    return found


def _sample_state() -> dict[str, str]:
    from inpnet.data.sample import SAMPLE_CATEGORIES

    out: dict[str, str] = {}
    for category in SAMPLE_CATEGORIES:
        for photo in category.sources:
            pixels = photo.load()
            digest = hashlib.sha256(f"{pixels.dtype}|{pixels.shape}\n".encode())
            digest.update(pixels.tobytes())
            out[photo.name] = digest.hexdigest()
    return out


def remote_state(data: DataConfig) -> dict[str, Any]:
    """``{"source": ..., "files": {part: {...}}}`` for ``data.source``; JSON-serialisable."""
    from inpnet.data.fetch import places365_files

    if data.source == "sample":
        return {"source": "sample", "photos": _sample_state()}
    files: dict[str, Any] = {}
    for part, remote in places365_files("all", data.fetch):
        files[part] = {"url": remote.url, **head_validators(remote.url, timeout_s=data.fetch.timeout_s)}
    return {"source": "places365", "files": files}


def write_remote_state(data: DataConfig, path: Path) -> dict[str, Any]:
    """Write :func:`remote_state` to ``path`` (sorted keys: same source, same bytes); return it."""
    from inpnet.outputs import write_atomic

    state = remote_state(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())
    log.info("remote state of %s written to %s", data.source, path)
    return state


def validators_path(dest: Path) -> Path:
    """Where the validators that ``dest`` (or ``dest.part``) was downloaded under are kept."""
    return dest.with_name(dest.name + ".remote.json")

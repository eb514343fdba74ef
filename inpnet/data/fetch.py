"""Resumable, verified HTTP downloads: the Places365 archives and pretrained weights.

:func:`download` streams into ``<dest>.part``, resumes it with an HTTP ``Range`` request
after an interruption, retries with exponential backoff, and renames the part to ``dest``
only after its size and checksum verify. So a file at its final name is always complete;
a partial one always ends in ``.part``. The checksum is computed while the bytes arrive
(and over the prefix already on disk when a previous run is resumed), so a 105 GB tar is
read once, not twice.

Given the server's current validators (ETag, Last-Modified, Content-Length; see
:mod:`inpnet.data.remote`), :func:`download` keeps them in ``<dest>.remote.json`` and
drops a file or partial file that came from another version of the remote file, so a
resume never splices two versions and a changed file is fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
from tqdm.auto import tqdm

from inpnet.config import FetchConfig, RemoteFile
from inpnet.data.remote import validators_path
from inpnet.errors import DownloadError

__all__ = ["PLACES365_PARTS", "download", "fetch_places365", "places365_files", "rebase_url"]

log = logging.getLogger(__name__)

PLACES365_PARTS: tuple[str, ...] = ("filelist", "val", "train")  # "all" fetches the small ones first
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_HTML_MARKERS = (b"<!doctype", b"<html")
_MAX_BACKOFF_S = 120.0


@dataclass
class _Expected:
    """What a complete copy must look like; checks whatever is known."""

    url: str
    size: int | None = None
    digests: dict[str, str] = field(default_factory=dict)  # algorithm -> full hex digest or its prefix

    def new_hashers(self) -> dict[str, hashlib._Hash]:
        return {alg: hashlib.new(alg) for alg in self.digests}

    def problem(self, got_size: int, hashers: dict[str, hashlib._Hash]) -> str | None:
        """Why a copy of ``got_size`` bytes with these running hashes is not the file, else None."""
        if self.size is not None and got_size != self.size:
            return f"size {got_size} bytes, expected {self.size}"
        for alg, want in self.digests.items():
            got = hashers[alg].hexdigest()
            if not got.startswith(want):
                return f"{alg} {got}, expected {want}{'...' if len(want) < len(got) else ''}"
        return None


def download(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    md5_prefix: str | None = None,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
    progress: bool = True,
    validators: dict[str, Any] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` with resume, retries and verification; return ``dest``.

    Args:
        url: http(s) URL of the file.
        dest: final path. Bytes go to ``<dest>.part`` first; ``dest`` appears only verified.
        size: expected size in bytes, if known.
        md5, sha256: full expected digests (hex), if known.
        sha256_prefix, md5_prefix: leading hex digits of the digest, for files whose name or
            documentation only carries a prefix (``pt_inception-2015-12-05-6726825d.pth``).
        retries: attempts after the first that may fail without receiving any byte; an
            attempt that makes progress resets the count, so a flaky link still finishes.
        backoff_s: first wait between attempts; doubles after each failure.
        timeout_s: connect and per-read timeout.
        chunk_bytes: bytes per read and write.
        progress: show a tqdm bar on stderr.
        validators: what the server says about the file now (:func:`inpnet.data.remote.head_validators`).
            Recorded in ``<dest>.remote.json``; a ``dest`` or ``.part`` recorded under other
            validators is deleted first (the remote file changed), one with no record is kept.

    Raises:
        DownloadError: refused (404, HTML instead of the file), out of retries, or the
            finished file does not match ``size`` / the checksums. A corrupt part is deleted.
    """
    dest = Path(dest)
    digests = {
        alg: value.lower() for alg, value in (("md5", md5 or md5_prefix), ("sha256", sha256 or sha256_prefix)) if value
    }
    expected = _Expected(url=url, size=size, digests=digests)
    part_path = dest.with_name(dest.name + ".part")
    if validators is not None:
        _drop_if_remote_changed(dest, part_path, validators)
    if dest.is_file():
        _check_existing(dest, expected, chunk_bytes)
        _record_validators(dest, validators)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _record_validators(dest, validators)  # before the first byte: a killed run's part is attributable
    part = _Part(part_path, expected, chunk_bytes)
    for fresh_retry_allowed in (True, False):
        # A resumed prefix that turns out corrupt gets one fresh download; a fresh one that
        # does not verify means the server's file is not the one expected.
        resumed = part.size > 0
        _fetch_to_part(
            url,
            part,
            retries=retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
            chunk_bytes=chunk_bytes,
            progress=progress,
            label=dest.name,
        )
        problem = expected.problem(part.size, part.hashers)
        if problem is None:
            os.replace(part.path, dest)
            log.info("downloaded and verified %s", dest)
            return dest
        part.reset()
        if not (fresh_retry_allowed and resumed):
            break
        log.warning("%s: resumed download does not verify (%s); downloading again from the start", dest, problem)
    raise DownloadError(
        f"{url}: downloaded file does not verify ({problem}); the partial file was deleted. "
        f"Check that the URL/mirror serves the official file, or fix the expected checksum"
    )


def _check_existing(dest: Path, expected: _Expected, chunk_bytes: int) -> Path:
    if not expected.digests and expected.size is None:
        log.info("%s already present (nothing to verify it against); not downloading again", dest)
        return dest
    problem = expected.problem(dest.stat().st_size, _hash_file(dest, expected.new_hashers(), chunk_bytes))
    if problem is not None:
        raise DownloadError(f"{dest}: already present but does not verify ({problem}); delete it and fetch again")
    log.info("%s already present and verified; not downloading again", dest)
    return dest


def _drop_if_remote_changed(dest: Path, part: Path, validators: dict[str, Any]) -> None:
    record = validators_path(dest)
    try:
        recorded = json.loads(record.read_text())
    except FileNotFoundError:
        return
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable (%s); treating %s as downloaded from another version", record, err, dest)
        recorded = None
    if recorded == validators:
        return
    stale = [p for p in (dest, part) if p.is_file()]
    if stale:
        log.warning(
            "%s changed on the server (was %s, now %s); deleting %s and downloading it again",
            dest.name,
            recorded,
            validators,
            ", ".join(str(p) for p in stale),
        )
    for path in (*stale, record):
        path.unlink(missing_ok=True)


def _record_validators(dest: Path, validators: dict[str, Any] | None) -> None:
    if validators is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        validators_path(dest).write_text(json.dumps(validators, indent=2, sort_keys=True) + "\n")


def _hash_file(path: Path, hashers: dict[str, hashlib._Hash], chunk_bytes: int) -> dict[str, hashlib._Hash]:
    if hashers:
        with path.open("rb") as fh:
            while chunk := fh.read(chunk_bytes):
                for h in hashers.values():
                    h.update(chunk)
    return hashers


class _Part:
    """``<dest>.part`` and the running hashes of exactly the bytes it holds."""

    def __init__(self, path: Path, expected: _Expected, chunk_bytes: int) -> None:
        self.path = path
        self.expected = expected
        self.hashers = expected.new_hashers()
        self.size = 0
        if path.is_file():
            # resuming a previous run: the prefix on disk must be part of the checksum too
            _hash_file(path, self.hashers, chunk_bytes)
            self.size = path.stat().st_size
            log.info("resuming %s at byte %d", path, self.size)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.hashers = self.expected.new_hashers()
        self.size = 0

    def append(self, chunks: Iterator[bytes], bar: tqdm, url: str) -> int:
        """Write ``chunks`` at the end; returns the bytes written. A failed write is undone."""
        written = 0
        with self.path.open("ab") as fh:
            for chunk in chunks:
                if self.size == 0 and chunk.lstrip()[:16].lower().startswith(_HTML_MARKERS):
                    self.reset()
                    raise DownloadError(
                        f"{url}: the response is an HTML page, not the file; "
                        f"open the URL in a browser and pass the direct file URL"
                    )
                try:
                    fh.write(chunk)
                    fh.flush()
                except OSError as err:
                    fh.truncate(self.size)  # keep the part equal to what the hashes cover
                    raise DownloadError(
                        f"{self.path}: cannot write ({err}); free disk space and re-run to resume"
                    ) from None
                for h in self.hashers.values():
                    h.update(chunk)
                self.size += len(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        return written


class _Retryable(Exception):
    """A server answer worth trying again (5xx, 429, a Range reply that does not fit)."""


def _fetch_to_part(
    url: str,
    part: _Part,
    *,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    chunk_bytes: int,
    progress: bool,
    label: str,
) -> None:
    """Grow ``part`` until the server says it is complete; retries transient failures."""
    expected_size = part.expected.size
    failures = 0
    with requests.Session() as session:
        while True:
            if expected_size is not None and part.size >= expected_size:
                if part.size == expected_size:
                    return
                log.warning("%s is longer than the expected %d bytes; starting over", part.path, expected_size)
                part.reset()
            before = part.size
            try:
                if _one_attempt(
                    session, url, part, timeout_s=timeout_s, chunk_bytes=chunk_bytes, progress=progress, label=label
                ):
                    return
                reason = "connection closed before the end of the file"
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,
                _Retryable,
            ) as err:
                reason = str(err)
            # progress resets the count: a flaky link should not exhaust the retries
            failures = 0 if part.size > before else failures + 1
            if failures > retries:
                todo = (
                    f"re-run the same command to resume from {part.path} ({part.size} bytes)"
                    if part.size
                    else "check the network connection and the URL, then re-run"
                )
                raise DownloadError(f"{url}: gave up after {retries + 1} attempts without progress ({reason}); {todo}")
            wait = min(backoff_s * 2 ** max(failures - 1, 0), _MAX_BACKOFF_S)
            log.warning("%s: attempt interrupted at byte %d (%s); retrying in %.1fs", label, part.size, reason, wait)
            time.sleep(wait)


def _one_attempt(
    session: requests.Session, url: str, part: _Part, *, timeout_s: float, chunk_bytes: int, progress: bool, label: str
) -> bool:
    """One GET from the end of ``part``, appending to it. Returns whether the part is complete."""
    offset = part.size
    headers = {"Accept-Encoding": "identity"}  # byte ranges must count bytes of the file itself
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=(timeout_s, timeout_s)) as resp:
        status = resp.status_code
        if status == 416 and offset:
            return _handle_416(resp, part)
        if status in _RETRYABLE_STATUS:
            raise _Retryable(f"HTTP {status}")
        if status not in (200, 206):
            raise DownloadError(
                f"{url}: server answered HTTP {status} {resp.reason}; check the URL "
                f"(or --url-base / the mirror) and that the file is published there"
            )
        if resp.headers.get("Content-Type", "").lower().startswith("text/html"):
            raise DownloadError(
                f"{url}: server sent an HTML page instead of the file (a login, error or "
                f"moved-page notice); open the URL in a browser and pass the direct file URL"
            )
        if status == 206:
            start, total = _content_range(resp)
            if start != offset:
                part.reset()
                raise _Retryable(f"server resumed at byte {start} instead of {offset}; starting over")
        else:
            if offset:
                log.warning("%s: server ignored the Range request; downloading from the start", label)
                part.reset()
            length = resp.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        expected_size = part.expected.size
        if total is not None and expected_size is not None and total != expected_size:
            raise DownloadError(
                f"{url}: server reports {total} bytes, expected {expected_size}; "
                f"the mirror serves a different file (check the URL or the expected size)"
            )
        with tqdm(
            total=total,
            initial=part.size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress,
            leave=False,
        ) as bar:
            part.append(_raw_chunks(resp, chunk_bytes), bar, url)
        # without a length the server's clean close is the only end marker; checksums decide
        return total is None or part.size == total


def _raw_chunks(resp: requests.Response, chunk_bytes: int) -> Iterator[bytes]:
    """The body as it arrives; unlike ``iter_content``, bytes read before a drop are kept."""
    while chunk := resp.raw.read1(chunk_bytes, decode_content=False):
        yield chunk


def _handle_416(resp: requests.Response, part: _Part) -> bool:
    """Range not satisfiable: the part is already whole, or longer than the file (corrupt)."""
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]  # "bytes */TOTAL"
    if total.isdigit() and int(total) == part.size:
        return True
    log.warning(
        "%s: server cannot resume at byte %d (file is %s bytes); starting over", part.path, part.size, total or "?"
    )
    part.reset()
    raise _Retryable("HTTP 416 for the partial file")


def _content_range(resp: requests.Response) -> tuple[int | None, int | None]:
    """(start, total) of a 206 reply's ``Content-Range: bytes START-END/TOTAL``."""
    _, _, rest = resp.headers.get("Content-Range", "").partition(" ")
    span, _, total = rest.partition("/")
    start = span.partition("-")[0]
    return (int(start) if start.isdigit() else None), (int(total) if total.isdigit() else None)


# -------------------------------------------------------------------------- Places365


def rebase_url(url: str, url_base: str) -> str:
    """``url`` with everything before its file name replaced by ``url_base`` (a mirror)."""
    return f"{url_base.rstrip('/')}/{url.rstrip('/').rpartition('/')[2]}"


def places365_files(
    what: str, cfg: FetchConfig, url_overrides: dict[str, str] | None = None, url_base: str | None = None
) -> list[tuple[str, RemoteFile]]:
    """The (part, RemoteFile) pairs that ``what`` names, with mirror/override URLs applied."""
    if what not in (*PLACES365_PARTS, "all"):
        raise DownloadError(f"unknown Places365 part {what!r}; choose one of {', '.join(PLACES365_PARTS)}, all")
    unknown = sorted(set(url_overrides or {}) - set(PLACES365_PARTS))
    if unknown:
        raise DownloadError(f"url_overrides names unknown parts {unknown}; allowed: {', '.join(PLACES365_PARTS)}")
    base = url_base or cfg.url_base
    out = []
    for name in PLACES365_PARTS if what == "all" else (what,):
        remote: RemoteFile = getattr(cfg, name)
        url = (url_overrides or {}).get(name) or (rebase_url(remote.url, base) if base else remote.url)
        out.append((name, remote.model_copy(update={"url": url})))
    return out


def fetch_places365(
    what: str,
    dest: str | Path,
    cfg: FetchConfig,
    url_overrides: dict[str, str] | None = None,
    *,
    url_base: str | None = None,
    progress: bool = True,
    validators: dict[str, dict[str, Any]] | None = None,
) -> list[Path]:
    """Download the official Places365 ``train``, ``val``, ``filelist`` tar (or ``all``) into ``dest``.

    URLs and checksums come from ``cfg`` (``params.yaml: data.fetch``); ``url_overrides``
    replaces a part's URL, ``url_base`` (or ``cfg.url_base``) points every part at a mirror.
    Files already complete are verified and kept. ``validators`` (part -> the server's
    current validators, as ``data/remote.json`` holds them) makes a changed remote file be
    fetched again. Returns the final paths.
    """
    dest = Path(dest)
    paths = []
    for name, remote in places365_files(what, cfg, url_overrides, url_base):
        log.info("fetching Places365 %s from %s", name, remote.url)
        paths.append(
            download(
                remote.url,
                dest / remote.filename,
                size=remote.size,
                md5=remote.md5,
                sha256=remote.sha256,
                retries=cfg.retries,
                backoff_s=cfg.backoff_s,
                timeout_s=cfg.timeout_s,
                chunk_bytes=cfg.chunk_bytes,
                progress=progress,
                validators=(validators or {}).get(name),
            )
        )
    return paths

"""Shards that are not local files: ``s3://``, ``http(s)://`` (any fsspec URL) and ``pipe:``.

The loader keeps its fast path for a local split folder (a header index plus one ``pread``
a member); this module is the other path, for shards on object storage, which WebDataset
users expect and multi-node training needs without a shared POSIX file system.

Forms of a shard spec (``make_loader(shards=...)``), several joined by ``::`` as in
WebDataset, braces expanded as WebDataset does (``train-{000000..000011}.tar``):

- a split prefix, ``s3://bucket/shards/train``: the shards that ``<prefix>/manifest.json``
  lists, in its order, exactly as for a local split folder;
- shard URLs ending in ``.tar``: those shards, in the given order; each must be listed in
  the ``manifest.json`` beside it (same prefix), so the loader gets the same settings
  (``max_pixels``) and can check each shard it reads;
- ``pipe:CMD``: the tar that ``CMD`` writes to stdout (``pipe:aws s3 cp s3://b/k.tar -``);
  there is no prefix to read a manifest from, so these are checked only by the tar format
  and the command's exit status.

Upload a split folder as the shard stage wrote it (``aws s3 sync data/shards/train
s3://bucket/shards/train``), manifest included. A remote shard is streamed front to back
(Python's ``tarfile``, which is fine at network speed) and, where the manifest has its
record, its size and sha256 are checked when it ends: a truncated or altered object is a
:class:`~inpnet.errors.DataError` naming the URL, as are a missing object and refused
credentials. Credentials and endpoints come from the usual places of each file system
(for S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role;
``AWS_ENDPOINT_URL_S3`` for an S3-compatible server).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from inpnet.data.jpeg import DEFAULT_MAX_PIXELS
from inpnet.data.manifest import MANIFEST_NAME, Manifest, ShardRecord, parse_manifest
from inpnet.errors import DataError

__all__ = ["ShardList", "is_url", "manifest_url", "read_url", "resolve_remote", "stream_members"]

_URL = re.compile(r"^(?:pipe:|[A-Za-z][A-Za-z0-9+.-]*://)")
_BLOCK = 8 << 20  # bytes a range request fetches ahead: few round trips, little memory per worker


def is_url(spec: str) -> bool:
    """Whether ``spec`` is a URL (``scheme://...`` or ``pipe:...``) rather than a local path."""
    return bool(_URL.match(spec))


@dataclass(frozen=True)
class ShardList:
    """Shards in reading order and the decode limit they were written with. ``records`` holds
    the remote ones (URLs), each with its manifest record (None: nothing to check it
    against); a shard not in it is a local file, read by the loader's fast path."""

    urls: list[str]
    max_pixels: int
    records: dict[str, ShardRecord | None] = field(default_factory=dict)


def resolve_remote(spec: str) -> ShardList:
    """The shards a URL spec names (see the module docstring for the forms).

    Raises:
        DataError: a manifest is missing, unreadable or invalid; a shard URL is not listed
            in the manifest beside it; the spec expands to no shard.
    """
    from webdataset.shardlists import expand_urls

    urls: list[str] = []
    records: dict[str, ShardRecord | None] = {}
    manifests: dict[str, Manifest] = {}

    def manifest(prefix: str) -> Manifest:
        if prefix not in manifests:
            manifests[prefix] = _read_manifest(prefix)
        return manifests[prefix]

    for url in expand_urls(spec):
        if url.startswith("pipe:"):
            shards: list[tuple[str, ShardRecord | None]] = [(url, None)]
        elif _path(url).endswith(".tar"):
            prefix, name = posixpath.split(_path(url))
            listed = {s.name: s for s in manifest(prefix).shards}
            if name not in listed:
                raise DataError(
                    f"{url}: not listed in {_join(prefix, MANIFEST_NAME)} (it lists {len(listed)} shards, e.g. "
                    f"{sorted(listed)[:2]}); upload the split folder as the shard stage wrote it"
                )
            shards = [(url, listed[name])]
        else:
            prefix = url.rstrip("/")
            shards = [(_join(prefix, s.name), s) for s in manifest(prefix).shards]
        for shard_url, record in shards:
            urls.append(shard_url)
            records[shard_url] = record
    if not urls:
        raise DataError(f"{spec}: names no shards")
    # Each shard run validated its images under its own limit; the loosest of them admits them all.
    limits = [int(m.settings.get("max_pixels", DEFAULT_MAX_PIXELS)) for m in manifests.values()]
    return ShardList(urls, max(limits, default=DEFAULT_MAX_PIXELS), records)


def _path(url: str) -> str:
    """``url`` without its query or fragment (``https://h/a.tar?sig=...`` -> ``https://h/a.tar``)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}"


def manifest_url(spec: str) -> str | None:
    """The manifest.json a URL spec's shards are listed in: beside the first shard (a ``.tar``
    URL or brace pattern) or inside the prefix; None for ``pipe:`` (nothing to list them)."""
    from webdataset.shardlists import expand_urls

    first = next(iter(expand_urls(spec)), "")
    if not first or first.startswith("pipe:"):
        return None
    path = _path(first)
    prefix = posixpath.split(path)[0] if path.endswith(".tar") else first.rstrip("/")
    return _join(prefix, MANIFEST_NAME)


def read_url(url: str) -> bytes:
    """The whole object at ``url`` (a small one: a manifest).

    Raises:
        FileNotFoundError: there is no such object.
        DataError: the storage refused or failed the read (the reason names the URL).
    """
    try:
        with _open(url) as handle:
            return handle.read()
    except FileNotFoundError:
        raise
    except _storage_errors() as err:
        raise DataError(f"{url}: {_problem(err, None)}") from None


def _read_manifest(prefix: str) -> Manifest:
    url = _join(prefix, MANIFEST_NAME)
    try:
        text = read_url(url).decode("utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{url}: no shard manifest; upload the split folder with its {MANIFEST_NAME} "
            f"(e.g. `aws s3 sync data/shards/train {prefix}`)"
        ) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{url}: the shard manifest is not UTF-8 text ({err})") from None
    return parse_manifest(text, url)


def _open(url: str, size: int | None = None) -> IO[bytes]:
    """A binary stream of ``url``, read front to back. ``size`` (the manifest's) spares an
    HTTP server the HEAD request fsspec would make to learn it."""
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        piped: IO[bytes] = gopen(url, "rb")  # checks the command's exit status as it reads
        return piped
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(url)
    if url.startswith(("http://", "https://")):
        # one streamed GET, no Range needed; aiohttp fails a body shorter than its Content-Length
        options: dict[str, object] = {"block_size": 0, "size": size}
    else:  # object stores: ranged reads of _BLOCK ahead, after a HEAD that gives the real size
        options = {"block_size": _BLOCK, "cache_type": "readahead"}
    opened: IO[bytes] = fs.open(path, "rb", **options)
    return opened


class _Hashed:
    """A read-only stream that counts and hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.size = 0
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.size += len(data)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        """Read to the end (the end-of-archive blocks and padding count in the shard's size and hash)."""
        while self.read(1 << 20):
            pass


def stream_members(url: str, record: ShardRecord | None) -> Iterator[tuple[str, bytes]]:
    """``(name, data)`` of every regular file of the tar at ``url``, streamed in tar order.

    When the stream ends, its size and sha256 are compared with ``record`` (the shard's
    manifest entry), so a shard cut at a member boundary, which ``tarfile`` would take for a
    complete one, is found too.

    Raises:
        DataError: the object is missing, access is refused, the tar is truncated or
            corrupt, or it is not the shard the manifest describes; the message names ``url``.
    """
    stream: _Hashed | None = None
    abandoned = False
    try:
        with _open(url, record.bytes if record else None) as raw:
            stream = _Hashed(raw)
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]  # _Hashed has the read() stream mode uses
                for info in tar:
                    if not info.isreg():
                        continue
                    handle = tar.extractfile(info)
                    assert handle is not None  # a regular file always has data
                    try:
                        yield info.name, handle.read()
                    except GeneratorExit:
                        abandoned = True
                        raise
            stream.drain()
    except GeneratorExit:
        raise
    except Exception as err:
        if abandoned:  # the consumer stopped early: a pipe's command ended by SIGPIPE is no error
            return
        problem = _problem(err, stream)
        if problem is None:
            raise
        raise DataError(f"{url}: {problem}") from None
    if record is None or stream is None:
        return
    if stream.size != record.bytes:
        raise DataError(
            f"{url}: {stream.size} bytes, the manifest says {record.bytes}: the shard is truncated or another "
            "version; re-upload it with its manifest"
        )
    if stream.sha.hexdigest() != record.sha256:
        raise DataError(f"{url}: its sha256 differs from the manifest's; re-upload the shard with its manifest")


def _problem(err: BaseException, stream: _Hashed | None) -> str | None:
    """What went wrong reading a shard, in words, or None for an error that is not about the shard."""
    if isinstance(err, FileNotFoundError):
        return "no such shard (object or file not found); check the bucket, prefix and name"
    if isinstance(err, PermissionError):
        return f"access refused ({_reason(err)}); check the credentials and the endpoint"
    if isinstance(err, tarfile.TarError):
        at = f" after {stream.size} bytes" if stream is not None else ""
        return f"truncated or corrupt tar{at} ({err}); re-upload the shard"
    if isinstance(err, _storage_errors()):
        return f"cannot read it: {_reason(err)}"
    return None


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What reading remote storage raises besides ``OSError``: botocore's own errors (missing
    credentials, an unreachable endpoint) and aiohttp's."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        errors += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover - botocore comes with s3fs
        pass
    try:
        from aiohttp import ClientError as HTTPClientError

        errors.append(HTTPClientError)
    except ImportError:  # pragma: no cover - aiohttp comes with s3fs
        pass
    return tuple(errors)


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__

"""``<split dir>/manifest.json``: what a shard run produced, and how to read it back.

The manifest is written last, atomically, so its presence means every shard it lists is
complete. It records, per shard, the tar member range it covers, its sample count, size
and sha256; the totals; every rejected member with its reason; and a fingerprint of the
inputs and settings, so a re-run can tell finished work from work done with other inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inpnet.errors import DataError
from inpnet.outputs import fsync_dir, write_atomic

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TAIL_BYTES",
    "Manifest",
    "ShardRecord",
    "fsync_dir",
    "load_manifest",
    "parse_manifest",
    "shard_mismatch",
    "tail_sha256",
    "write_json_atomic",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TAIL_BYTES = 1 << 16  # the quick resume check hashes this much of a shard's end


@dataclass(frozen=True)
class ShardRecord:
    """One finished shard. ``member_start``/``member_end`` are tar ordinals, end exclusive."""

    index: int
    name: str
    member_start: int
    member_end: int
    first_member: str
    last_member: str
    samples: int
    bytes: int
    sha256: str
    rejected: list[dict[str, str]] = field(default_factory=list)
    tail_sha256: str = ""  # of the last TAIL_BYTES; "" in manifests written before it was recorded

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        return cls(**data)


@dataclass(frozen=True)
class Manifest:
    split: str
    fingerprint: str
    source: dict[str, Any]
    settings: dict[str, Any]
    shards: list[ShardRecord]
    rejected: list[dict[str, str]]
    format: int = FORMAT_VERSION

    @property
    def totals(self) -> dict[str, int]:
        return {
            "shards": len(self.shards),
            "samples": sum(s.samples for s in self.shards),
            "bytes": sum(s.bytes for s in self.shards),
            "rejected": len(self.rejected),
        }

    def to_dict(self) -> dict[str, Any]:
        shards = [{k: v for k, v in asdict(s).items() if k != "rejected"} for s in self.shards]
        return {
            "format": self.format,
            "split": self.split,
            "fingerprint": self.fingerprint,
            "source": self.source,
            "settings": self.settings,
            "totals": self.totals,
            "shards": shards,
            "rejected": self.rejected,
        }

    def write(self, split_dir: str | Path) -> Path:
        return write_json_atomic(Path(split_dir) / MANIFEST_NAME, self.to_dict())


def tail_sha256(path: Path) -> str:
    """sha256 of the last :data:`TAIL_BYTES` of ``path`` (all of it when smaller)."""
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
        return hashlib.sha256(handle.read()).hexdigest()


def shard_mismatch(path: Path, record: ShardRecord, *, written_ns: int, full: bool = False) -> str | None:
    """Why the file at ``path`` is not the shard ``record`` describes, else None.

    The quick check compares the size and the hash of the last :data:`TAIL_BYTES`, and
    trusts the rest only if the file has not been modified since ``written_ns`` (when the
    record was written, after the shard). A later mtime (an edit, or a copy that did not
    keep times), a record without a tail hash, or ``full=True`` compares the sha256 of
    the whole file instead, so a byte changed anywhere is found.
    """
    try:
        stat = path.stat()
        if stat.st_size != record.bytes:
            return f"it has {stat.st_size} bytes, the manifest says {record.bytes}"
        if full or not record.tail_sha256 or stat.st_mtime_ns > written_ns:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            return None if digest == record.sha256 else "its sha256 differs from the manifest"
        return (
            None if tail_sha256(path) == record.tail_sha256 else f"its last {TAIL_BYTES} bytes differ from the manifest"
        )
    except FileNotFoundError:
        return "it is missing"
    except OSError as err:
        return f"it cannot be read ({err.strerror})"


def write_json_atomic(path: Path, data: Any) -> Path:
    """Write JSON under a temporary name, fsync, rename: readers see all of it or nothing."""
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    return write_atomic(path, text.encode("utf-8"), durable=True)


def load_manifest(split_dir: str | Path) -> Manifest:
    """Read ``<split_dir>/manifest.json``; a missing or foreign file is a :class:`DataError`."""
    path = Path(split_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: no shard manifest (run `inpnet data shard --out {split_dir}` first)")
    return parse_manifest(path.read_text(encoding="utf-8"), str(path))


def parse_manifest(text: str, where: str) -> Manifest:
    """A manifest from its JSON ``text``; ``where`` (its path or URL) heads every error."""
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT_VERSION:
            raise DataError(
                f"{where}: manifest format {data.get('format')!r}, expected {FORMAT_VERSION}; re-run the shard stage"
            )
        rejected = data["rejected"]
        shards = [ShardRecord.from_dict({**s, "rejected": []}) for s in data["shards"]]
        return Manifest(
            split=data["split"],
            fingerprint=data["fingerprint"],
            source=data["source"],
            settings=data["settings"],
            shards=shards,
            rejected=rejected,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{where}: not a valid shard manifest ({err}); re-run the shard stage") from None

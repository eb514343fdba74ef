"""Exceptions the library raises for bad input. Only the CLI turns them into exit codes.

Every message names the file, key or value at fault and says what to do.
"""

from __future__ import annotations


class InpnetError(Exception):
    """Base class: an expected failure caused by input, environment or data, not a bug."""


class ConfigError(InpnetError, ValueError):
    """``params.yaml`` (or an override) does not describe a valid configuration.

    Also a ``ValueError``, so pydantic validators that raise it report it as a validation error."""


class DataError(InpnetError):
    """A data file (tar, file list, shard, image, mask) is missing, corrupt or inconsistent."""


class DownloadError(InpnetError):
    """A download failed, was refused, or produced a file that does not verify."""


class MaskError(InpnetError):
    """A mask has the wrong size, values or layout."""


class ShapeError(InpnetError, ValueError):
    """An image or prediction tensor has a shape the model or the call cannot take (channels,
    rank, a size that is not a multiple of the patch size or not the size a model was built for)."""


class CheckpointError(InpnetError):
    """A checkpoint is missing, incomplete, or does not match the model."""


class RegistryError(InpnetError):
    """A registered model, version or alias is missing or cannot be loaded."""


class OutputError(InpnetError):
    """An output file or folder cannot be created or written (permissions, a read-only or
    virtual file system, a folder where a file belongs, or a file where a folder belongs)."""


class OutputLockedError(OutputError):
    """Another run holds the exclusive lock of the output folder this one would write."""


class TrainingInterrupted(InpnetError):
    """Training stopped on SIGTERM after saving a checkpoint; resume with ``--resume``."""

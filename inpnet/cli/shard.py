"""`inpnet` commands for this area (registered on the apps in :mod:`inpnet.cli.app`)."""

from __future__ import annotations

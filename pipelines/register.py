"""DVC stage ``register``: log every trained variant to the MLflow registry, then promote.

Each variant's logged model (logged in its training run) becomes a new version of its
family's registered model (alias ``challenger``), its evaluation logged as metrics of the
model linked to the mask bank dataset, the version tagged with the hashes of the shard
manifest and the mask bank (register refuses metrics whose report scored other weights or
another mask bank than ``masks.out_dir``); then ``promote`` moves ``champion`` where the gates in
``registry.gates`` hold. ``reports/registry.json`` summarises the decisions.

With ``registry.export_onnx`` each version also carries its ONNX export (``onnx/model.onnx``
of its logged model, :func:`inpnet.export.export_variant_onnx`).

A variant whose weights and metrics are byte-identical to what the previous summary
recorded for the same tracking URI (and whose version still exists there) is not logged
again: when one variant changes, only that one becomes a new version.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from inpnet.config import Params, load_params, resolve_tracking_uri
from inpnet.stages.reports import report_dir
from pipelines.common import base_parser, run_entry

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import State, TaskRun


def _tracking_uri(params: Params) -> str:
    return resolve_tracking_uri(params.registry)


def _transient(task: Task[..., Any], task_run: TaskRun, state: State) -> bool:
    """Retry a registration that failed on the store (e.g. a busy sqlite), never one that
    refused its input (metrics of other weights or another mask bank stay refused)."""
    from inpnet.errors import InpnetError  # ConfigError included

    return not isinstance(getattr(state, "data", None), InpnetError)


@task(name="register-variant", retries=2, retry_delay_seconds=5, retry_condition_fn=_transient, cache_policy=NO_CACHE)
def register_task(params: Params, variant: str) -> dict[str, Any]:
    from inpnet.registry.register import register

    resolved = params.variant(variant)
    version = register(
        Path(resolved.train.out_dir) / variant,
        report_dir(params, variant) / "metrics.json",
        tracking_uri=_tracking_uri(params),
        model_names=params.registry.model_names,
        experiment=params.registry.experiment,
        shard_manifest=Path(params.data.shards_dir) / "train" / "manifest.json",
        bank_manifest=Path(params.masks.out_dir) / "manifest.json",
        export_onnx=params.registry.export_onnx,
    )
    return dataclasses.asdict(version)


def fingerprint(params: Params, variant: str) -> str:
    """SHA-256 over the variant's weights and its evaluation metrics (what a version carries),
    and whether it carries an ONNX export (``registry.export_onnx``): turning that on makes
    new versions that have one."""
    digest = hashlib.sha256()
    if params.registry.export_onnx:  # off leaves the digests of summaries written before the key
        digest.update(b"export_onnx\n")
    ckpt = Path(params.variant(variant).train.out_dir) / variant
    for path in (
        ckpt / "model.safetensors",
        ckpt / "model_ema.safetensors",
        report_dir(params, variant) / "metrics.json",
    ):
        if path.is_file():
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _previous(out: Path, tracking_uri: str) -> dict[str, dict[str, Any]]:
    """Variants recorded in the last summary for this tracking URI:
    {variant: {"version": {...}, "fingerprint": str, "decision": {...}}}."""
    try:
        summary = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}
    if summary.get("tracking_uri") != tracking_uri:
        return {}
    return {
        v: {
            "version": entry,
            "fingerprint": summary.get("fingerprints", {}).get(v),
            "decision": summary.get("decisions", {}).get(v),
        }
        for v, entry in summary.get("registered", {}).items()
    }


@task(name="find-registered", cache_policy=NO_CACHE)
def still_registered(params: Params, version: dict[str, Any]) -> bool:
    from inpnet.errors import InpnetError
    from inpnet.registry.store import resolve_version

    try:
        resolve_version(f"models:/{version['name']}/{version['version']}", tracking_uri=_tracking_uri(params))
    except InpnetError:
        return False
    return True


@task(name="promote-model", cache_policy=NO_CACHE)
def promote_task(params: Params, name: str) -> dict[str, Any]:
    from inpnet.registry.promote import load_reference, promote

    gates = params.registry.gates
    reference = None
    if gates.reference is not None:
        reference = load_reference(Path(params.evaluate.out_dir) / "baselines" / gates.reference, gates.reference)
    decision = promote(name, tracking_uri=_tracking_uri(params), gates=gates, reference=reference)
    return {**dataclasses.asdict(decision), "champion": decision.champion}


@flow(name="register", log_prints=True)
def register_flow(params: Params, out: str = "reports/registry.json") -> dict[str, Any]:
    from inpnet.registry.store import init_store

    uri = _tracking_uri(params)
    init_store(uri)  # schema upgrade once, before any writer
    previous = _previous(Path(out), uri)
    registered, decisions, fingerprints, reused = {}, {}, {}, []
    # Variants of one family are versions of one registered model: register and promote
    # them in order, so each is judged against the champion that the previous one left.
    for variant in params.pipeline.variants:
        fingerprints[variant] = fingerprint(params, variant)
        old = previous.get(variant, {})
        if (
            old.get("fingerprint") == fingerprints[variant]
            and old.get("decision")
            and still_registered(params, old["version"])
        ):
            # already judged: promoting again would re-judge whatever the alias now points at
            registered[variant], decisions[variant] = old["version"], old["decision"]
            reused.append(variant)
            continue
        registered[variant] = register_task(params, variant)
        decisions[variant] = promote_task(params, registered[variant]["name"])
    summary = {
        "tracking_uri": uri,
        "registered": registered,
        "reused": reused,
        "fingerprints": fingerprints,
        "decisions": decisions,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for variant, d in decisions.items():
        verdict = "promoted to champion" if d["promoted"] else "not promoted"
        print(f"{variant}: {d['name']} v{d['challenger']} {verdict}: {'; '.join(d['reasons'])}")
    return summary


def main(args: argparse.Namespace) -> None:
    register_flow(load_params(args.params))


if __name__ == "__main__":
    raise SystemExit(run_entry(main, base_parser(__doc__)))

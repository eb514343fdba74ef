"""Promotion: the challenger becomes champion only when it beats the champion on the same holes.

The comparison reads each version's evaluation metrics from its logged model (``eval/psnr``,
``eval/<pattern>/psnr``, logged by :func:`inpnet.registry.register.register` linked to the
model id and the mask bank dataset) and its provenance tags (``mask_bank_sha256``,
``weights_sha256``, ``evaluation.weights_sha256``). Gates
(:class:`inpnet.config.PromotionGates`):

* the challenger's metrics come from an evaluation of its own weights (its
  ``evaluation.weights_sha256`` tag equals its ``weights_sha256``; register checks this);
* both versions were evaluated on the same mask bank (equal ``mask_bank_sha256``);
* the challenger beats the champion on the primary metric by at least ``min_improvement``
  (and strictly, when ``min_improvement`` is 0);
* no pattern the champion was scored on loses more than ``max_pattern_psnr_drop`` dB;
* the absolute gate, which first versions must pass too: in no pattern does the challenger
  trail the reference method (``gates.reference``, e.g. ``telea``, scored on the same mask
  bank, read from its ``metrics.json`` and ``report.json``) by more than
  ``max_gap_to_reference_db`` dB. A missing or foreign-bank reference fails the gate: a
  gate that cannot be checked does not pass.

Without a champion, the first version that records its primary metric and passes the
absolute gate becomes champion; one that fails it stays ``challenger``.
The decision and its reasons are written as ``promotion.*`` tags on the challenger version.
Re-running is safe: a challenger that already is champion is reported as such and nothing
changes; a rejected one is judged again with the same result.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from inpnet.config import PromotionGates
from inpnet.errors import RegistryError
from inpnet.registry.store import CHALLENGER, CHAMPION, client, resolve_version

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

__all__ = ["Decision", "Reference", "judge", "load_reference", "promote", "version_record"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    name: str
    challenger: str
    champion_before: str | None
    promoted: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def champion(self) -> str | None:
        """The champion version after the decision."""
        return self.challenger if self.promoted else self.champion_before


@dataclass(frozen=True)
class Reference:
    """A reference method's scores (``eval/...`` metrics), and the bank they were scored on."""

    name: str
    metrics: Mapping[str, float]
    mask_bank_sha256: str | None


def load_reference(folder: str | Path, name: str) -> Reference | None:
    """The reference report in ``folder`` (``metrics.json`` + ``report.json``), None if absent."""
    from inpnet.registry.lineage import eval_metrics

    folder = Path(folder)
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise RegistryError(f"{folder / 'metrics.json'}: unreadable reference metrics ({err})") from None
    try:
        masks = json.loads((folder / "report.json").read_text()).get("masks", {})
    except (OSError, json.JSONDecodeError):
        masks = {}  # no report: the bank is unknown, and the gate will say so
    bank = masks.get("manifest_sha256")
    if bank is None and masks.get("source"):  # reports written before the hash was recorded
        from inpnet.registry.tracking import file_sha256

        manifest = Path(masks["source"]) / "manifest.json"
        bank = file_sha256(manifest) if manifest.is_file() else None
    return Reference(name, eval_metrics(metrics), bank)


Record = Mapping[str, str | float]  # a version's provenance tags and its ``eval/...`` metrics


def _reference_gate(challenger: Record, reference: Reference | None, gates: PromotionGates, reasons: list[str]) -> bool:
    if gates.reference is None:
        return True
    if reference is None:
        reasons.append(
            f"absolute gate: no {gates.reference} report to compare with (run the baselines stage, "
            f"`inpnet evaluate --method {gates.reference}`): fail"
        )
        return False
    bank = challenger.get("mask_bank_sha256")
    if not bank or bank != reference.mask_bank_sha256:
        reasons.append(
            f"absolute gate: {reference.name} was scored on another or an unknown mask bank "
            f"({reference.mask_bank_sha256} vs {bank}): fail"
        )
        return False
    passes = True
    for pattern in sorted(_patterns(reference.metrics)):
        ref, new = _metric(reference.metrics, f"{pattern}/psnr"), _metric(challenger, f"{pattern}/psnr")
        if ref is None:
            continue
        if new is None:
            passes = False
            reasons.append(f"absolute gate: pattern {pattern}: challenger has no PSNR recorded: fail")
        elif ref - new > gates.max_gap_to_reference_db:
            passes = False
            reasons.append(
                f"absolute gate: pattern {pattern}: PSNR {new:.3f} dB trails {reference.name} {ref:.3f} by "
                f"{ref - new:.3f} dB (max gap {gates.max_gap_to_reference_db}): fail"
            )
    if passes:
        reasons.append(
            f"absolute gate: within {gates.max_gap_to_reference_db} dB of {reference.name} in every pattern: pass"
        )
    return passes


def _metric(record: Record, key: str) -> float | None:
    value = record.get(f"eval/{key}")
    number = value if isinstance(value, float | int) else None
    return float(number) if number is not None and math.isfinite(number) else None


def _patterns(record: Record) -> set[str]:
    """Patterns with a PSNR: ``eval/<pattern>/psnr`` (not the ratio buckets ``eval/<p>/<r>/psnr``)."""
    return {parts[1] for k in record if len(parts := k.split("/")) == 3 and parts[0] == "eval" and parts[2] == "psnr"}


def _unproven(tags: Record) -> str | None:
    """Why a version's metrics cannot be trusted to be its own, or None."""
    weights, evaluated = tags.get("weights_sha256"), tags.get("evaluation.weights_sha256")
    if weights and evaluated == weights:
        return None
    return (
        f"challenger has no evaluation of its own weights (weights {weights or 'unknown'}, evaluated weights "
        f"{evaluated or 'none recorded'}): evaluate its checkpoint and register it again with that metrics.json: fail"
    )


def judge(
    challenger: Record,
    champion: Record | None,
    gates: PromotionGates,
    reference: Reference | None = None,
) -> tuple[bool, list[str]]:
    """Apply the gates to two versions' records (provenance tags and ``eval/...`` metrics, as
    :func:`version_record` reads them) and the reference; returns (passes, reasons). Pure."""
    primary = gates.primary_metric
    new = _metric(challenger, primary)
    if new is None:
        return False, [f"challenger has no recorded {primary} (register it with the evaluator's metrics.json)"]
    if (unproven := _unproven(challenger)) is not None:
        return False, [unproven]
    reasons: list[str] = []
    passes = _reference_gate(challenger, reference, gates, reasons)
    if champion is None:
        return passes, [f"no champion yet; challenger {primary} {new:.4f} is recorded", *reasons]
    bank_new, bank_old = challenger.get("mask_bank_sha256"), champion.get("mask_bank_sha256")
    if not bank_new or bank_new != bank_old:
        passes = False
        reasons.append(
            f"mask banks differ or are unknown (challenger {bank_new}, champion {bank_old}); re-evaluate both on one bank"
        )
    old = _metric(champion, primary)
    if old is None:
        reasons.append(f"champion has no recorded {primary}; challenger {new:.4f} wins by default")
    else:
        delta = new - old
        better = delta >= gates.min_improvement and delta > 0
        passes &= better
        reasons.append(
            f"{primary} {new:.4f} vs champion {old:.4f} (delta {delta:+.4f}, needs > 0 and >= {gates.min_improvement}): "
            + ("pass" if better else "fail")
        )
    for pattern in sorted(_patterns(champion)):
        p_old, p_new = _metric(champion, f"{pattern}/psnr"), _metric(challenger, f"{pattern}/psnr")
        if p_new is None:
            passes = False
            reasons.append(f"pattern {pattern}: challenger has no PSNR recorded: fail")
        elif p_old is not None and p_old - p_new > gates.max_pattern_psnr_drop:
            passes = False
            reasons.append(
                f"pattern {pattern}: PSNR {p_new:.3f} dB is {p_old - p_new:.3f} dB below the champion's {p_old:.3f} "
                f"(max drop {gates.max_pattern_psnr_drop}): fail"
            )
    return passes, reasons


def version_record(version: ModelVersion, *, tracking_uri: str | None) -> dict[str, str | float]:
    """A version's tags and the ``eval/...`` metrics of its logged model, scored on the version's
    mask bank (metrics of the model on other datasets are left out; the latest value wins)."""
    from inpnet.registry.lineage import DIGEST_CHARS, model_id_of

    record: dict[str, str | float] = dict(version.tags)
    model_id = model_id_of(version)
    if model_id is None:  # registered before versions came from logged models: no metrics
        return record
    bank = version.tags.get("mask_bank_sha256")
    metrics = client(tracking_uri).get_logged_model(model_id).metrics or []
    for m in sorted(metrics, key=lambda m: (m.timestamp, m.step)):
        if m.key.startswith("eval/") and (not bank or m.dataset_digest == bank[:DIGEST_CHARS]):
            record[m.key] = float(m.value)
    return record


def promote(
    name: str, *, tracking_uri: str | None, gates: PromotionGates, reference: Reference | None = None
) -> Decision:
    """Compare ``name@challenger`` with ``name@champion`` and the reference; move ``champion`` if the gates hold."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    challenger = resolve_version(f"models:/{name}@{CHALLENGER}", tracking_uri=tracking_uri)
    try:
        champion = c.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None and champion.version == challenger.version:
        log.info("%s version %s is already the champion; nothing to do", name, challenger.version)
        return Decision(name, str(challenger.version), str(champion.version), True, ["already champion"])
    passes, reasons = judge(
        version_record(challenger, tracking_uri=tracking_uri),
        version_record(champion, tracking_uri=tracking_uri) if champion else None,
        gates,
        reference,
    )
    before = str(champion.version) if champion else None
    tags = {
        "promotion.decision": "promoted" if passes else "rejected",
        "promotion.reasons": "; ".join(reasons),
        "promotion.champion_before": before or "none",
        "promotion.gates": gates.model_dump_json(),
        "promotion.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        for key, value in tags.items():
            c.set_model_version_tag(name, challenger.version, key, value)
        if passes:
            c.set_registered_model_alias(name, CHAMPION, challenger.version)
            if champion is not None:
                c.set_model_version_tag(name, champion.version, "promotion.superseded_by", str(challenger.version))
    except MlflowException as err:
        raise RegistryError(f"cannot record the promotion of {name} version {challenger.version}: {err}") from None
    decision = Decision(name, str(challenger.version), before, passes, reasons)
    log.info(
        "%s v%s %s (champion before: %s): %s",
        name,
        challenger.version,
        tags["promotion.decision"],
        before,
        "; ".join(reasons),
    )
    return decision

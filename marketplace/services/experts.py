"""Experts, their immutable versions and license terms (writes).

Upload: stage the files -> every check that needs no weights loaded (config, safetensors header,
names and shapes against the registered base model) -> move to the content address -> rows and
ledger entries in one transaction. The caller queues the validation task once that commits
(marketplace.tasks.validate_after_commit). A refusal at any step leaves no files
and no rows. The task reads every tensor and sets the version valid or failed; the expert's
alias `current_version` follows the newest valid version.

Uploading content identical to one of the expert's versions is refused (409) naming that version.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from ledger.services import record_event
from marketplace import uploads
from marketplace.model_cards import parse_model_card, reconcile
from marketplace.models import BaseModel, Contributor, Expert, ExpertVersion, LicenseTerms
from marketplace.services.accounts import clean_priorities
from marketplace.validation import (
    AdapterRejected,
    check_against_base_model,
    inspect_adapter,
    verify_adapter_weights,
)
from domain.errors import Conflict, DomainError
from marketplace.ledger_refs import VALIDATION_ACTOR

logger = logging.getLogger(__name__)

SPDX_ID = re.compile(r"^(LicenseRef-)?[A-Za-z0-9][A-Za-z0-9.+-]{0,99}$")
TAG = re.compile(r"[a-z0-9][a-z0-9._+:-]{0,39}")  # ":" for namespaced tags such as skill:add
SLUG = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
MAX_TAGS = 20
LICENSE_FLAGS = ("commercial_use", "derivatives_allowed", "attribution_required", "share_alike")
LICENSE_DEFAULTS = {"commercial_use": True, "derivatives_allowed": True, "attribution_required": False,
                    "share_alike": False}


@dataclass
class AdapterUpload:
    """The adapter as uploaded: two files, or one .zip/.tar.gz archive (Django UploadedFile objects)."""

    config_file: Any = None
    weights_file: Any = None
    archive: Any = None


def clean_tags(tags, *, param: str = "tags") -> list[str]:
    if not tags:
        return []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise DomainError("Tags must be a list of words.", param=param)
    cleaned = sorted({word.lower() for tag in tags for word in re.split(r"[,\s]+", tag) if word})
    if len(cleaned) > MAX_TAGS or not all(TAG.fullmatch(t) for t in cleaned):
        raise DomainError(
            f"Tags are at most {MAX_TAGS} words of letters, digits, '.', '_', '+', ':' or '-' "
            "(40 characters each).",
            param=param,
        )
    return cleaned


def clean_domains(domains, *, param: str) -> list[str]:
    if not domains:
        return []
    if isinstance(domains, str):
        domains = [domains]
    if not isinstance(domains, (list, tuple)) or not all(isinstance(d, str) for d in domains):
        raise DomainError("Domains must be a list of short names.", param=param)
    cleaned = sorted({" ".join(d.split()).lower() for item in domains for d in item.split(",") if d.strip()})
    if any(len(d) > 60 for d in cleaned):
        raise DomainError("Each domain name is at most 60 characters.", param=param)
    return cleaned


def clean_license_terms(terms: dict) -> dict:
    """Normalised license terms: an SPDX id plus the structured terms, with defaults filled in."""
    if not isinstance(terms, dict):
        raise DomainError("License terms must be an object.", param="license")
    spdx_id = str(terms.get("spdx_id") or "").strip()
    if not spdx_id:
        raise DomainError("Give the license as an SPDX id (for example Apache-2.0 or CC-BY-4.0).",
                          param="spdx_id")
    if not SPDX_ID.match(spdx_id):
        raise DomainError(f"{spdx_id!r} is not an SPDX license id (for example Apache-2.0).", param="spdx_id")
    cleaned = {"spdx_id": spdx_id}
    for flag in LICENSE_FLAGS:
        value = terms.get(flag)
        if value is None or value == "":
            value = LICENSE_DEFAULTS[flag]
        if not isinstance(value, bool):
            raise DomainError(f"{flag} must be true or false.", param=flag)
        cleaned[flag] = value
    cleaned["allowed_domains"] = clean_domains(terms.get("allowed_domains"), param="allowed_domains")
    cleaned["prohibited_domains"] = clean_domains(terms.get("prohibited_domains"), param="prohibited_domains")
    both = set(cleaned["allowed_domains"]) & set(cleaned["prohibited_domains"])
    if both:
        raise DomainError(f"Domains {sorted(both)} are both allowed and prohibited.", param="allowed_domains")
    return cleaned


def _base_model_named(name: str) -> BaseModel:
    if not name:
        raise DomainError("Name the base model this adapter was trained on.", param="base_model")
    base_model = BaseModel.objects.filter(name=name).first()
    if base_model is None:
        known = ", ".join(BaseModel.objects.order_by("name").values_list("name", flat=True)) or "none yet"
        raise DomainError(f"No base model named {name!r} is registered (registered: {known}).",
                          param="base_model")
    return base_model


def _base_model_matching(report, local_path: str) -> BaseModel:
    """The one registered base model whose modules the adapter fits, for a card that names its base model only
    by a local directory (peft's save_pretrained)."""
    fitting = []
    for base_model in BaseModel.objects.order_by("name"):
        try:
            check_against_base_model(report, base_model)
        except DomainError:
            continue
        fitting.append(base_model)
    if len(fitting) == 1:
        return fitting[0]
    known = ", ".join(BaseModel.objects.order_by("name").values_list("name", flat=True)) or "none yet"
    if not fitting:
        raise DomainError(f"The model card names the base model by the local directory {local_path!r}, and no "
                          f"registered base model has the modules this adapter fits (registered: {known}).",
                          param="base_model")
    raise DomainError(f"The model card names the base model by the local directory {local_path!r}, and the adapter "
                      f"fits several registered base models ({', '.join(b.name for b in fitting)}): name one.",
                      param="base_model")


def _with_mapping_note(card_metadata: dict, note: str) -> dict:
    return {**card_metadata, "base_model_mapped": note} if note else card_metadata


def _stored_version(*, expert: Expert, staged: uploads.StagedAdapter, report, model_card: str,
                    card_metadata: dict, actor: str) -> ExpertVersion:
    """Store the staged files and create the version row (inside the caller's transaction)."""
    duplicate = expert.versions.filter(sha256=staged.sha256).first()
    if duplicate is not None:
        raise Conflict(
            f"This adapter is identical to version {duplicate.number} of {expert.slug!r} "
            f"(sha256 {staged.sha256}); versions are immutable and content-addressed, "
            "so it was not uploaded again.",
            code="duplicate_version",
        )
    number = (expert.versions.aggregate(top=Max("number"))["top"] or 0) + 1
    path, _ = uploads.store(staged)
    version = ExpertVersion.objects.create(
        expert=expert,
        number=number,
        sha256=staged.sha256,
        storage_path=str(path),
        size_bytes=staged.size_bytes,
        model_card=model_card,
        card_metadata=card_metadata,
        adapter_config=report.config,
        rank=report.rank,
        lora_alpha=report.lora_alpha,
        target_modules=report.target_modules,
    )
    record_event(
        kind="expert.contributed",
        payload={"expert": expert.ledger_ref, "owner": expert.owner.ledger_ref, "slug": expert.slug,
                 "version": number, "sha256": staged.sha256, "size_bytes": staged.size_bytes,
                 "base_model": expert.base_model.name},
        actor=actor,
    )
    return version


@transaction.atomic
def _license_record(*, expert: Expert, terms: dict, actor: str) -> LicenseTerms:
    license_terms = LicenseTerms.objects.create(expert=expert, **terms)
    expert.license = license_terms
    expert.save(update_fields=["license"])
    record_event(
        kind="license.set",
        payload={"expert": expert.ledger_ref, "license_terms": license_terms.ledger_ref,
                 "terms": license_terms.as_terms()},
        actor=actor,
    )
    return license_terms


def _store_with_cleanup(write):
    """Run `write(created_paths)` in a transaction; if it fails, remove the files it newly stored."""
    stored: list[Path] = []
    try:
        with transaction.atomic():
            return write(stored)
    except IntegrityError:
        for path in stored:
            uploads.discard(path)
        raise Conflict("Another upload changed this expert at the same moment; try again.") from None
    except BaseException:
        for path in stored:
            uploads.discard(path)
        raise


def expert_contribute(
    *,
    owner: Contributor,
    name: str,
    slug: str,
    adapter: AdapterUpload,
    license_terms: dict,
    base_model: str = "",
    description: str = "",
    tags=None,
    priorities=None,
    model_card: str = "",
    is_public: bool = True,
) -> ExpertVersion:
    """A new expert with its first version (pending validation)."""
    name, slug = (name or "").strip(), (slug or "").strip()
    if not name or len(name) > 200:
        raise DomainError("Give the expert a name (at most 200 characters).", param="name")
    if not SLUG.match(slug) or len(slug) > 100:
        raise DomainError("The slug must be lowercase letters and digits joined by '-' or '_'.", param="slug")
    card_metadata = parse_model_card(model_card)
    merged = reconcile(card_metadata, {
        "license": str((license_terms or {}).get("spdx_id") or "").strip(),
        "base_model": (base_model or "").strip(),
        "tags": clean_tags(tags),
        "description": (description or "").strip(),
    })
    terms = clean_license_terms({**(license_terms or {}), "spdx_id": merged["license"]})
    tags = clean_tags(merged["tags"])
    priorities = clean_priorities(priorities)
    mapping_needed = not merged["base_model"] and card_metadata.get("base_model_path")
    base = None if mapping_needed else _base_model_named(merged["base_model"])
    if Expert.objects.filter(owner=owner, slug=slug).exists():
        raise Conflict(f"You already have an expert with slug {slug!r}; upload a new version to it instead.",
                       param="slug")

    with uploads.staged_adapter(**vars(adapter)) as staged:
        report = inspect_adapter(staged.directory)
        base = base or _base_model_matching(report, card_metadata["base_model_path"])
        card_metadata = _with_mapping_note(card_metadata, check_against_base_model(report, base))

        def write(stored: list[Path]) -> ExpertVersion:
            expert = Expert.objects.create(
                owner=owner, slug=slug, name=name, description=merged["description"], tags=tags,
                priorities=priorities, base_model=base, is_public=is_public,
            )
            existed = uploads.storage_path_for(staged.sha256).exists()
            version = _stored_version(expert=expert, staged=staged, report=report, model_card=model_card,
                                      card_metadata=card_metadata, actor=owner.ledger_ref)
            if not existed:
                stored.append(Path(version.storage_path))
            _license_record(expert=expert, terms=terms, actor=owner.ledger_ref)
            return version

        version = _store_with_cleanup(write)
    return version


def expert_version_contribute(*, expert: Expert, adapter: AdapterUpload,
                              model_card: str = "") -> ExpertVersion:
    """A new immutable version of an existing expert (pending validation)."""
    if expert.consent_revoked_at is not None:
        raise DomainError("Consent for this expert was revoked; it accepts no new versions.",
                          code="consent_revoked")
    card_metadata = parse_model_card(model_card)
    reconcile(card_metadata, {"license": expert.license.spdx_id if expert.license else "",
                              "base_model": expert.base_model.name})
    with uploads.staged_adapter(**vars(adapter)) as staged:
        report = inspect_adapter(staged.directory)
        card_metadata = _with_mapping_note(card_metadata, check_against_base_model(report, expert.base_model))

        def write(stored: list[Path]) -> ExpertVersion:
            locked = (Expert.objects.select_for_update(of=("self",)).select_related("owner", "base_model")
                      .get(pk=expert.pk))
            existed = uploads.storage_path_for(staged.sha256).exists()
            version = _stored_version(expert=locked, staged=staged, report=report, model_card=model_card,
                                      card_metadata=card_metadata, actor=locked.owner.ledger_ref)
            if not existed:
                stored.append(Path(version.storage_path))
            return version

        version = _store_with_cleanup(write)
    return version


def expert_license_set(*, expert: Expert, terms: dict) -> LicenseTerms:
    """New license terms for an expert: a new immutable LicenseTerms row and a `license.set` entry."""
    cleaned = clean_license_terms(terms)
    return _license_record(expert=expert, terms=cleaned, actor=expert.owner.ledger_ref)


def expert_version_validate(*, version_id: int) -> ExpertVersion:
    """Run every check on a stored version and record the outcome. Idempotent: a version that is no
    longer pending is returned unchanged."""
    version = ExpertVersion.objects.select_related("expert__base_model").get(pk=version_id)
    if version.status != ExpertVersion.Status.PENDING:
        return version
    reason = _validation_failure(version)
    with transaction.atomic():
        version = ExpertVersion.objects.select_for_update().get(pk=version_id)
        if version.status != ExpertVersion.Status.PENDING:
            return version
        expert = (Expert.objects.select_for_update(of=("self",)).select_related("current_version")
                  .get(pk=version.expert_id))
        version.status = ExpertVersion.Status.FAILED if reason else ExpertVersion.Status.VALID
        version.failure_reason = reason
        version.validated_at = timezone.now()
        version.save(update_fields=["status", "failure_reason", "validated_at"])
        subject = {"expert": expert.ledger_ref, "version": version.number, "sha256": version.sha256}
        if reason:
            record_event(kind="expert.failed", payload={**subject, "reason": reason}, actor=VALIDATION_ACTOR)
            return version
        record_event(kind="expert.validated", payload=subject, actor=VALIDATION_ACTOR)
        previous = expert.current_version
        if previous is None or previous.number < version.number:
            expert.current_version = version
            expert.save(update_fields=["current_version"])
            record_event(
                kind="alias.moved",
                payload={"expert": expert.ledger_ref, "alias": "current_version",
                         "from_version": previous.number if previous else None, "to_version": version.number,
                         "sha256": version.sha256},
                actor=VALIDATION_ACTOR,
            )
    return version


def _validation_failure(version: ExpertVersion) -> str:
    """The reason a stored version is not acceptable, or "" when it passes every check."""
    directory = Path(version.storage_path)
    try:
        if uploads.content_sha256(directory) != version.sha256:
            return "The stored adapter files no longer match their content hash; upload the adapter again."
        report = inspect_adapter(directory)
        check_against_base_model(report, version.expert.base_model)
        verify_adapter_weights(directory)
    except AdapterRejected as rejection:
        return rejection.message
    except FileNotFoundError:
        return "The stored adapter files are missing; upload the adapter again."
    except Exception:
        logger.exception("validation of expert version %s failed unexpectedly", version.pk)
        return "Validation could not finish because of an internal error; the operators have been told."
    return ""

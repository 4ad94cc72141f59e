"""Idempotency keys on POST /v1/*: a retry with the same `Idempotency-Key` and the same body, within 24 hours,
gets the first request's response back and is served (and billed) once.

- Keys belong to an organization: two organizations may use the same key for different requests.
- The same key with a different path or body is a 409 `idempotency_key_reused`.
- Only a success (2xx) is stored. A refused or failed attempt (400, 429, 502, 503...) releases its key, so a
  retry with the same key runs afresh.
- Concurrent duplicates: the first one runs; the others get a 409 `idempotency_key_in_use` with Retry-After
  while it does, then the stored response once it is done (as Stripe does).
- A claim whose request never finished (its process died) is free again once INFERENCE_DEADLINE_SECONDS + 60 s
  have passed; keys expire after 24 hours (purge_expired, on the beat schedule)."""
import hashlib
import json
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from marketplace.models import IdempotencyRecord, Organization
from domain.errors import Conflict, DomainError

KEY_LIFETIME = timedelta(hours=24)
MAX_KEY_LENGTH = 255
IN_USE_RETRY_AFTER_S = 1


class KeyInUse(Conflict):
    code = "idempotency_key_in_use"
    retry_after = IN_USE_RETRY_AFTER_S


def checked_key(value: str) -> str:
    if not (0 < len(value) <= MAX_KEY_LENGTH) or not value.isascii() or not value.isprintable():
        raise DomainError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                          param="Idempotency-Key", code="invalid_idempotency_key")
    return value


def fingerprint(*, path: str, body) -> str:
    """What makes two requests the same: the path and the JSON body, whatever its spacing or key order."""
    canonical = json.dumps([path, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _abandoned(record: IdempotencyRecord, now: datetime) -> bool:
    if record.created_at <= now - KEY_LIFETIME:
        return True
    stale_after = timedelta(seconds=settings.INFERENCE_DEADLINE_SECONDS + 60)
    return record.state == IdempotencyRecord.State.RUNNING and record.created_at <= now - stale_after


def claim(*, organization: Organization, key: str, fingerprint: str,
          now: datetime | None = None) -> tuple[IdempotencyRecord, bool]:
    """(record, replay): a new RUNNING record for the caller to serve and then complete or release, or the
    stored DONE record of an earlier identical request (replay=True). Raises a 409 for another body or while
    the first request still runs."""
    now = now or timezone.now()
    for _attempt in range(3):
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    organization=organization, key=key, fingerprint=fingerprint, created_at=now), False
        except IntegrityError:
            pass
        existing = IdempotencyRecord.objects.filter(organization=organization, key=key).first()
        if existing is None:  # released between our insert and our read: try again
            continue
        if _abandoned(existing, now):
            IdempotencyRecord.objects.filter(pk=existing.pk).delete()
            continue
        if existing.fingerprint != fingerprint:
            raise Conflict(
                "This Idempotency-Key was already used for a different request (another path or body); use a new "
                "key for a new request.", param="Idempotency-Key", code="idempotency_key_reused",
            )
        if existing.state == IdempotencyRecord.State.RUNNING:
            break
        return existing, True
    raise KeyInUse("A request with this Idempotency-Key is still being served; retry shortly to get its response.",
                   param="Idempotency-Key")


def complete(*, record: IdempotencyRecord, status_code: int, body, request_id: str) -> None:
    """Store a success for replay; anything else releases the key."""
    if not 200 <= status_code < 300:
        release(record=record)
        return
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        state=IdempotencyRecord.State.DONE, status_code=status_code, response_body=body, request_id=request_id)


def release(*, record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, state=IdempotencyRecord.State.RUNNING).delete()


def purge_expired(*, now: datetime | None = None) -> int:
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lte=(now or timezone.now()) - KEY_LIFETIME).delete()
    return deleted

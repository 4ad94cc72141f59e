"""One canonical byte form for payloads and for the data of a Merkle leaf (see ledger/README.md)."""
import json
from datetime import UTC, datetime

from domain.errors import DomainError

ZERO_HASH = bytes(32)


class PayloadError(DomainError):
    code = "invalid_ledger_payload"


def _check_value(value, path: str) -> None:
    if isinstance(value, float):
        raise PayloadError(
            f"Ledger payloads take no floating-point numbers ({path} is {value!r}): "
            "use an integer (e.g. minor units) or a decimal string."
        )
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise PayloadError(f"Ledger payload keys must be strings ({path} has key {key!r}).")
            _check_value(inner, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, inner in enumerate(value):
            _check_value(inner, f"{path}[{i}]")
    elif not (value is None or isinstance(value, (str, int, bool))):
        raise PayloadError(
            f"Ledger payloads hold only JSON strings, integers, booleans, null, lists and objects "
            f"({path} is a {type(value).__name__})."
        )


def canonical_json(payload: dict) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not \\u escapes); refuses floats."""
    if not isinstance(payload, dict):
        raise PayloadError("A ledger payload is a JSON object.")
    _check_value(payload, "payload")
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. 2026-11-23T09:31:00.000000Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _json_string(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


def leaf_data(*, sequence: int, kind: str, payload: bytes, actor: str, time: str, prev_hash: bytes) -> bytes:
    """The bytes of an entry's Merkle leaf: canonical JSON of
    {"actor", "kind", "payload" (the payload object), "prev_hash" (hex), "sequence", "time"}.
    Built by concatenation (the payload is already canonical), equal to canonical_json of that object."""
    return b"".join(
        (
            b'{"actor":', _json_string(actor),
            b',"kind":', _json_string(kind),
            b',"payload":', payload,
            b',"prev_hash":"', prev_hash.hex().encode(),
            b'","sequence":', str(sequence).encode(),
            b',"time":"', time.encode(), b'"}',
        )
    )


def event_data(*, kind: str, payload: bytes, actor: str, time: str) -> bytes:
    """The bytes a pending event's content hash covers: canonical JSON of
    {"actor", "kind", "payload" (the payload object), "time"}."""
    return b"".join(
        (
            b'{"actor":', _json_string(actor),
            b',"kind":', _json_string(kind),
            b',"payload":', payload,
            b',"time":"', time.encode(), b'"}',
        )
    )

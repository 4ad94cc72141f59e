"""The references the marketplace writes to the ledger: who acted (an entry's actor) and what it is about.

The ledger keeps them as opaque strings; this module is their one grammar.

    an entity      <kind>:<primary key>, e.g. contributor:42: a model's `ledger_ref`, or `ref_for(pk)` on its
                   class when only the key is at hand (LedgerReferenced)
    a user         user:<primary key>: `user_ref(user)` (the auth user model is not ours to extend)
    a service      one of SERVICE_ACTORS: the platform acting on its own (validation, credit, Stripe's events)

    parse_ref("expert:7") -> LedgerRef("expert", 7)          parse_actor(text) -> LedgerRef | the service name
    resolve(ref) -> the row it names, or None
"""
from __future__ import annotations

import re
from typing import ClassVar, NamedTuple

USER_KIND = "user"

SYSTEM_ACTOR = "system"  # a command run without a user (e.g. registering a base model)
VALIDATION_ACTOR = "system:validation"
CREDIT_ACTOR = "system:credit"
EVALUATION_ACTOR = "system:evaluation"  # an evaluation nobody requested (a command or a schedule)
OPTIMISATION_ACTOR = "system:optimisation"  # a composed system's strategy learning on its development set
STRIPE_ACTOR = "stripe"
CLOSE_PERIOD_ACTOR = "operator:close_period"
REVERSE_USAGE_ACTOR = "operator:reverse_usage"
LEDGER_ACTOR = "system:ledger"  # ledger.rotation.ACTOR: the ledger rotating its own signing key
SERVICE_ACTORS = frozenset({SYSTEM_ACTOR, VALIDATION_ACTOR, CREDIT_ACTOR, EVALUATION_ACTOR, OPTIMISATION_ACTOR,
                            STRIPE_ACTOR, CLOSE_PERIOD_ACTOR, REVERSE_USAGE_ACTOR, LEDGER_ACTOR})

_REF = re.compile(r"^([a-z][a-z_]*):([1-9][0-9]{0,18})$")
_MODELS: dict[str, type] = {}


class LedgerRef(NamedTuple):
    kind: str
    pk: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.pk}"


class LedgerReferenced:
    """A model whose rows the ledger names: set `ledger_kind` (unique across the marketplace)."""

    ledger_kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("ledger_kind")
        if kind is None:
            return
        taken = _MODELS.get(kind)
        if kind == USER_KIND or (taken is not None and taken.__qualname__ != cls.__qualname__):
            raise TypeError(f"ledger kind {kind!r} is already taken")
        _MODELS[kind] = cls

    @classmethod
    def ref_for(cls, pk) -> str:
        return f"{cls.ledger_kind}:{pk}"

    @property
    def ledger_ref(self) -> str:
        return self.ref_for(self.pk)


def user_ref(user) -> str:
    """A user, or a user's primary key."""
    return f"{USER_KIND}:{getattr(user, 'pk', user)}"


def entity_kinds() -> frozenset[str]:
    return frozenset(_MODELS) | {USER_KIND}


def parse_ref(text: str) -> LedgerRef:
    """An entity reference of a known kind; ValueError, saying why, for anything else."""
    match = _REF.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a ledger reference (<kind>:<positive integer>)")
    if match.group(1) not in entity_kinds():
        raise ValueError(f"{text!r} names an unknown kind; the kinds are {sorted(entity_kinds())}")
    return LedgerRef(match.group(1), int(match.group(2)))


def parse_actor(text: str) -> LedgerRef | str:
    """A service actor's name as it is, else the entity reference of who acted."""
    if text in SERVICE_ACTORS:
        return text
    return parse_ref(text)


def resolve(ref: LedgerRef):
    """The row a reference names, or None where it names none."""
    if ref.kind == USER_KIND:
        from django.contrib.auth import get_user_model

        model = get_user_model()
    else:
        model = _MODELS[ref.kind]
    return model._default_manager.filter(pk=ref.pk).first()

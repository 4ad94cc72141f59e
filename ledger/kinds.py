"""The kinds of ledger entries known so far, each with what it means. Payload convention:
references are opaque strings ('contributor:42', 'expert:7'); money is integer minor units;
a correction carries {"corrects": <sequence of the corrected entry>, "reason": "..."}."""

KINDS: dict[str, str] = {
    "contributor.registered": "a person registered as a contributor",
    "expert.contributed": "a contributor uploaded an expert (adapter) with its model card and terms",
    "expert.validated": "an uploaded expert passed validation against its base model",
    "expert.failed": "an uploaded expert failed validation, with the reason",
    "license.set": "license terms of an expert were set or changed",
    "alias.moved": "a model alias now points to another system or version",
    "system.composed": "an operator composed a system from experts with a strategy",
    "system.changed": "a composed system's experts, strategy or parameters changed",
    "composition.optimised": "a composed system's strategy learned on its development set (named by hash) what "
                             "it serves with: the learned coefficients, weights, graph or gate",
    "evaluation.recorded": "an evaluation ran a system on held-out sets (named by hash): n, accuracy, 95% intervals",
    "contribution.measured": "an evaluation measured each expert's contribution to a system (Shapley per expert)",
    "usage.recorded": "an organization's request used a system, with tokens and attribution",
    "credit.allocated": "credit from usage was allocated to contributors (double entry)",
    "payout.sent": "a payout to a contributor was sent",
    "credit.reversed": "credit allocated earlier was reversed (double entry), naming what it reverses",
    "payout.created": "a payout to a contributor was prepared for a settlement period",
    "payout.paid": "a payout was confirmed paid by the payment provider",
    "consent.revoked": "a contributor revoked consent for an expert; it leaves every system",
    "consent.restored": "a contributor gave consent for an expert back; it serves its systems again",
    "policy.refused": "a license policy refused an action, with the reason",
    "subscription.changed": "an organization subscribed, changed or cancelled a plan",
    "settlement.closed": "an operator closed a settlement period",
    "base_model.registered": "an operator registered a base model (experts are adapters on it)",
    "organization.created": "an organization signed up",
    "subscription.created": "an organization subscribed to a plan",
    "credit.restored": "credit reversed for a Stripe object was given back (a dispute won, a credit note voided)",
    "ledger.key_rotated": "the ledger's signing key changed: the old and new verifier keys, signed by both keys",
    "entry.corrected": "a correction of an earlier entry (payload: corrects, reason)",
}

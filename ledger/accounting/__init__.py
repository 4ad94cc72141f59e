"""Double-entry accounting in integer minor units, keyed by opaque account references.

Accounts are strings such as ``organization:7:receivable``, ``platform:revenue``,
``contributor:42:payable``, ``payouts:clearing``. A transaction is a set of postings whose
amounts (signed integers; positive is a debit, negative a credit) sum to zero, written together
with one ledger entry that carries the postings. Balances are sums of postings, never stored.
"""

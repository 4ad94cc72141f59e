"""Credit flowing back to contributors: allocation, refunds, settlement, statements, payouts (issue 7)."""

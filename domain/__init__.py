"""The bottom of the import graph: what every app (marketplace, ledger, mosaic) may import. Imports no app,
no Django and no torch."""

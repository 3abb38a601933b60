"""A search's records in its store: where each key lives (layout), trial records and the Ledger that rebuilds the
state from them, and the importer of older stores and the seed's results.
"""

"""A consent: its lifecycle (a transition table) and its ledger in SQL."""

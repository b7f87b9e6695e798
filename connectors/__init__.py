"""Connectors fetch data items from their authoritative sources over HTTP."""

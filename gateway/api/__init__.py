"""The requesters' data API under /api/v1."""

"""The hash-chained audit log (SPEC section 9)."""

"""RQ jobs. Each is a module-level function taking ids only (never personal data)."""

"""Declarative policies, one YAML file per requester, and the engine that applies them."""

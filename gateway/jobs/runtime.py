"""The gateway a worker process uses: built once from the environment, like the web app."""
from __future__ import annotations

_gateway = None


def current_gateway():
    global _gateway
    if _gateway is None:
        from gateway.config import Config
        from gateway.instance import Gateway
        _gateway = Gateway(Config.from_env())
    return _gateway


def use_gateway(gw) -> None:
    """Run jobs of this process against ``gw`` (the web app when jobs run inline)."""
    global _gateway
    _gateway = gw

"""``twistd voipgw``: command-line options and ``makeService``, nothing else."""

from __future__ import annotations

from typing import cast

from twisted.application.service import IService
from twisted.python import usage

from gateway.config import Config, ConfigError, load_config

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """Options for ``twistd voipgw``."""

    synopsis = "--config FILE"
    longdesc = "Runs the voipgw VoIP push gateway with the given config file."
    optParameters = [["config", "c", None, "Path to the voipgw TOML config file."]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")
        try:
            self["parsed"] = load_config(self["config"])
        except ConfigError as e:
            problems = "\n  ".join(e.problems)
            raise usage.UsageError(f"invalid configuration:\n  {problems}") from None


def makeService(options: Options) -> IService:
    """Build the gateway's services from the validated config."""
    from twisted.internet import reactor

    from gateway import logging
    from gateway.app import GatewayReactor, build_service

    config: Config = options["parsed"]
    logging.configure(config.log)
    gateway = build_service(config, cast(GatewayReactor, reactor))
    gateway.handle_sighup = True
    return gateway

"""The HTTP control API (issue 7): calls, messages, devices, health, metrics.

``make_api_service(gateway)`` returns the listener service; it also
instruments the gateway (``gateway.metrics``) so ``/metrics`` has numbers,
and starts the event webhooks when configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import IService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from gateway.api._auth import ApiKeys, ApiKeysError
from gateway.api._errors import ApiError, error_body
from gateway.api._health import ApnsProbe, apns_probe
from gateway.api._resource import ApiResource, ApiSite, Route
from gateway.api._routes import Api
from gateway.api._schema import load_document
from gateway.api._webhooks import (
    WebhookObserver,
    WebhookSender,
    WebhookSettings,
    sign,
    webhook_settings,
)
from gateway.listeners import ListenError, StreamListener, tcp_endpoint
from gateway.localpush.tls import ServerTLS
from gateway.metrics import Instrumentation, Metrics, instrument

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = [
    "Api",
    "ApiError",
    "ApiKeys",
    "ApiKeysError",
    "ApiListener",
    "ApiResource",
    "ApnsProbe",
    "Route",
    "WebhookSender",
    "WebhookSettings",
    "error_body",
    "load_document",
    "make_api_service",
    "sign",
]

_log = Logger(namespace="gateway.api")


class ApiListener(StreamListener):
    """The API's listener; also stops the webhook sender on shutdown."""

    def __init__(
        self,
        label: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        *,
        api: Api,
        resource: ApiResource,
        keys: ApiKeys,
        instrumentation: Instrumentation,
        webhooks: WebhookSender | None,
    ) -> None:
        super().__init__(label, endpoint, factory)
        self.api = api
        self.resource = resource
        self.keys = keys
        self.instrumentation = instrumentation
        self.webhooks = webhooks

    def stopService(self) -> Deferred[None]:
        stopped = [super().stopService()]
        if self.webhooks is not None:
            stopped.append(self.webhooks.stop())
        done: Deferred[None] = DeferredList(stopped).addCallback(lambda _: None)
        return done


def make_api_service(
    gateway: Gateway,
    *,
    metrics: Metrics | None = None,
    webhooks: WebhookSettings | None = None,
) -> IService:
    """The control API listener for an assembled gateway (``config.api``).

    Raises ``ApiKeysError`` when ``api.keys_file`` is unusable, so start-up
    stops with a message rather than serving an API nobody can use.
    """
    config = gateway.config.api
    keys = ApiKeys.from_file(config.keys_file)
    instrumentation = instrument(gateway, metrics)
    settings = webhooks if webhooks is not None else webhook_settings(gateway.config)
    sender: WebhookSender | None = None
    if settings is not None:
        sender = WebhookSender(
            gateway.reactor, settings, metrics=instrumentation.metrics
        )
        observer = WebhookObserver(sender)
        if gateway.dispatcher is not None:
            gateway.dispatcher.add_observer(observer)
        if gateway.messenger is not None:
            gateway.messenger.add_observer(observer)
    document = load_document()
    api = Api(gateway, document, instrumentation.metrics, apns_probe(gateway))
    resource = ApiResource(api.routes(), keys, document, instrumentation.metrics)
    site = ApiSite(resource, config.max_body_bytes, gateway.reactor)
    factory: IProtocolFactory = site
    if config.tls:
        if config.cert is None or config.key is None:
            raise ListenError("control API: api.tls needs api.cert and api.key")
        tls = ServerTLS(config.cert, config.key)
        factory = TLSMemoryBIOFactory(tls, False, site)
        gateway.reloaders["API TLS certificate"] = tls.reload
    if keys.configured:
        gateway.reloaders["API keys"] = keys.reload  # SIGHUP rotates keys
    else:
        _log.warn(
            "control API: no api.keys_file, so every endpoint but /healthz, "
            "/readyz and /metrics answers 403"
        )
    scheme = "https" if config.tls else "http"
    listener = ApiListener(
        f"control API ({scheme})",
        tcp_endpoint(gateway.reactor, config.bind, config.port),
        factory,
        api=api,
        resource=resource,
        keys=keys,
        instrumentation=instrumentation,
        webhooks=sender,
    )
    gateway.listeners["api"] = listener
    return listener

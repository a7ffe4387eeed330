"""Destinations: each declares its actions and sends batches; the engine does the rest."""

from ebbtide.ports import DestinationPlugin
from ebbtide.registry import Registry

DESTINATIONS: Registry[DestinationPlugin] = Registry(  # type: ignore[type-arg]
    kind="destination type",
    group="ebbtide.destinations",
    builtins={
        "webhook": "ebbtide.destinations.webhook:PLUGIN",
        "postgres": "ebbtide.destinations.postgres:PLUGIN",
        "file": "ebbtide.destinations.file:PLUGIN",
        "segment": "ebbtide.destinations.segment:PLUGIN",
        "hubspot": "ebbtide.destinations.hubspot:PLUGIN",
        "salesforce": "ebbtide.destinations.salesforce:PLUGIN",
        "braze": "ebbtide.destinations.braze:PLUGIN",
        "customerio": "ebbtide.destinations.customerio:PLUGIN",
        "mixpanel": "ebbtide.destinations.mixpanel:PLUGIN",
        "amplitude": "ebbtide.destinations.amplitude:PLUGIN",
    },
)

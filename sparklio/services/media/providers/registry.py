"""The media provider registry: built-in providers, and outside ones through the entry-point
group `sparklio.media_providers`."""

from __future__ import annotations

from sparklio.services.gateway.providers import Registry
from sparklio.services.media.providers.base import MediaProvider

MEDIA_PROVIDERS: dict[str, str] = {
    "mock": "sparklio.services.media.providers.mock:MockImageProvider",
    "comfyui": "sparklio.services.media.providers.comfyui:ComfyUIProvider",
}


class MediaRegistry(Registry[MediaProvider]):
    """Media providers by vendor name."""

    base = MediaProvider
    builtins = MEDIA_PROVIDERS
    entry_point_group = "sparklio.media_providers"

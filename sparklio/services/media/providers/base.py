"""The provider interface every media provider implements (its lifecycle is `Provider`'s).

A provider turns one image request into stored files. It knows its backend (a ComfyUI server,
or nothing at all for the mock) and reports progress; the gateway routes, queues and keeps the
job's state.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Dict, List  # noqa: UP035  # the contract is spelled with these

from pydantic import BaseModel, Field

from sparklio.core.config import Settings
from sparklio.services.gateway.providers import EndpointConfig, Provider
from sparklio.services.media.assets import AssetStore, MediaAsset

__all__ = ["MediaAsset", "MediaProvider", "MediaProviderResponse", "Progress"]

#: Called with the fraction done (0..1) and what is happening, as a provider works.
Progress = Callable[[float, str], None]


class MediaProviderResponse(BaseModel):
    """What a media provider made: its files, what it cost and how it went."""

    provider: str
    model: str
    outputs: List[MediaAsset] = Field(default_factory=list)  # noqa: UP006
    usage: Dict[str, Any] = Field(default_factory=dict)  # noqa: UP006
    meta: Dict[str, Any] = Field(default_factory=dict)  # noqa: UP006


class MediaProvider(Provider):
    """One image backend, registered by vendor name in the media registry.

    `options` passed to `generate` carry `model`, `workflow` and the route's `params`, the
    request's `negative_prompt`, `width`, `height`, `count`, `seed`, `job_id` and any
    `options` the caller gave (e.g. `palette` for the mock).
    """

    def __init__(self, settings: Settings, endpoint: EndpointConfig | None = None) -> None:
        super().__init__(settings, endpoint)
        self.assets = AssetStore(settings.home / "assets")

    @abstractmethod
    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        options: dict[str, Any],
        progress: Progress,
    ) -> MediaProviderResponse:
        """Make the images for one request and store them."""

"""Sparklio: the backend of an AI marketing studio, and the one gateway its agents use."""

from sparklio.exceptions import (
    ConfigError,
    GatewayConnectionError,
    GatewayError,
    GatewayResponseError,
    InvalidRequestError,
    NotFoundError,
    OutputValidationError,
    PayloadTooLargeError,
    ProviderError,
    RouteNotFoundError,
    ServiceUnavailableError,
    SparklioError,
    UpstreamTimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayResponseError",
    "InvalidRequestError",
    "NotFoundError",
    "OutputValidationError",
    "PayloadTooLargeError",
    "ProviderError",
    "RouteNotFoundError",
    "ServiceUnavailableError",
    "SparklioError",
    "UpstreamTimeoutError",
    "__version__",
]

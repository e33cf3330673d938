"""Sparklio: the backend of an AI marketing studio, and the one gateway its agents use.

```python
from sparklio import LLMGatewayClient, RouteNotFoundError
```

The clients are imported when first asked for, so `import sparklio` (which every
`import sparklio.<module>` runs first) stays as light as the exceptions module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sparklio.exceptions import (
    AgentError,
    BriefError,
    ConfigError,
    DatabaseUnavailableError,
    ForbiddenError,
    GatewayConnectionError,
    GatewayError,
    GatewayResponseError,
    InvalidMediaError,
    InvalidRequestError,
    NotFoundError,
    OutputValidationError,
    PayloadTooLargeError,
    ProviderError,
    RouteNotFoundError,
    ServiceUnavailableError,
    SparklioError,
    TooManyRequestsError,
    UnauthorizedError,
    UpstreamTimeoutError,
)

if TYPE_CHECKING:
    from sparklio.services.clients.llm_client import LLMGatewayClient
    from sparklio.services.clients.media_client import MediaGatewayClient

__version__ = "0.1.0"

#: name -> the module it is imported from on first use
_LAZY = {
    "LLMGatewayClient": "sparklio.services.clients.llm_client",
    "MediaGatewayClient": "sparklio.services.clients.media_client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparklio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AgentError",
    "BriefError",
    "ConfigError",
    "DatabaseUnavailableError",
    "ForbiddenError",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayResponseError",
    "InvalidMediaError",
    "InvalidRequestError",
    "LLMGatewayClient",
    "MediaGatewayClient",
    "NotFoundError",
    "OutputValidationError",
    "PayloadTooLargeError",
    "ProviderError",
    "RouteNotFoundError",
    "ServiceUnavailableError",
    "SparklioError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UpstreamTimeoutError",
    "__version__",
]

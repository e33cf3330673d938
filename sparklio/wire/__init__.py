"""What the gateway's HTTP API and its clients both speak: request and response models, the
error body, and the checks a JSON value must pass to be sent.

Pydantic only: this package imports nothing of Sparklio but `sparklio.exceptions`, so a client
that imports it loads no server code (tests/test_architecture.py holds it to that).
"""

from sparklio.wire.errors import ErrorBody, ErrorInfo
from sparklio.wire.jsonvalues import MAX_INT, MIN_INT, check_json_value, may_hold_nonfinite
from sparklio.wire.llm import NAME_PATTERN, GenerateRequest, LLMProviderResponse, OutputMode
from sparklio.wire.media import (
    FINISHED,
    GenerateImageRequest,
    JobStatus,
    MediaAsset,
    MediaJob,
    MediaRequest,
)

__all__ = [
    "FINISHED",
    "MAX_INT",
    "MIN_INT",
    "NAME_PATTERN",
    "ErrorBody",
    "ErrorInfo",
    "GenerateImageRequest",
    "GenerateRequest",
    "JobStatus",
    "LLMProviderResponse",
    "MediaAsset",
    "MediaJob",
    "MediaRequest",
    "OutputMode",
    "check_json_value",
    "may_hold_nonfinite",
]

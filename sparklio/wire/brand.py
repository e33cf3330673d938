"""A brand kit: what a brand has decided once (its voice, the words it uses and avoids, the
claims it never makes, its colours and type, copy it liked), kept by the API
(`/api/v1/brand-kits`) and handed to the agents, whose brand step starts from it.

Every text is bounded and storable: no control character in a word (PostgreSQL refuses NUL),
no lone surrogate anywhere; line breaks and tabs are fine in the longer texts.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

MAX_WORDS = 30
MAX_CLAIMS = 30
MAX_PALETTE = 8
MAX_EXAMPLES = 10
HEX_COLOUR = r"^#[0-9A-Fa-f]{6}$"
_LINE_BREAKS = frozenset("\n\r\t")


def _checker(*, multiline: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        for position, char in enumerate(value):
            kind = unicodedata.category(char)
            if kind == "Cs" or (kind == "Cc" and not (multiline and char in _LINE_BREAKS)):
                what = "a lone surrogate" if kind == "Cs" else "a control character"
                raise PydanticCustomError(
                    "plain_text",
                    "{what} (U+{code}) at position {position}; send plain text",
                    {"what": what, "code": f"{ord(char):04X}", "position": position},
                )
        return value

    return check


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value.strip()


#: a word or short phrase: one line, 1 to 80 characters
Term = Annotated[
    str,
    Field(min_length=1, max_length=80),
    AfterValidator(_checker(multiline=False)),
    AfterValidator(_not_blank),
]
#: a claim the brand never makes: one line, 1 to 200 characters
Claim = Annotated[
    str,
    Field(min_length=1, max_length=200),
    AfterValidator(_checker(multiline=False)),
    AfterValidator(_not_blank),
]
#: a piece of copy the brand liked: up to 2,000 characters, line breaks kept
Example = Annotated[
    str, Field(min_length=1, max_length=2000), AfterValidator(_checker(multiline=True))
]
Colour = Annotated[str, Field(pattern=HEX_COLOUR, examples=["#2E7D32"])]


class BrandKit(BaseModel):
    """A brand's fixed choices. Every list may be empty: what a kit leaves out, the brand
    step asks the model for."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    name: Annotated[
        str,
        Field(min_length=1, max_length=100, examples=["Dawon Tea"]),
        AfterValidator(_checker(multiline=False)),
        AfterValidator(_not_blank),
    ]
    voice: Annotated[
        str,
        Field(max_length=300, description="How the brand speaks, in a sentence or two."),
        AfterValidator(_checker(multiline=True)),
    ] = ""
    words_to_use: list[Term] = Field(default_factory=list, max_length=MAX_WORDS)
    words_to_avoid: list[Term] = Field(
        default_factory=list,
        max_length=MAX_WORDS,
        description="Words no copy may contain (checked on every piece of copy, any language, "
        "Korean particles included).",
    )
    claims_to_avoid: list[Claim] = Field(
        default_factory=list,
        max_length=MAX_CLAIMS,
        description="Claims no copy may make, as the phrases that make them.",
    )
    palette: list[Colour] = Field(default_factory=list, max_length=MAX_PALETTE)
    typography: Annotated[str, Field(max_length=200), AfterValidator(_checker(multiline=False))] = (
        ""
    )
    example_copy: list[
        Annotated[
            str, Field(min_length=1, max_length=2000), AfterValidator(_checker(multiline=True))
        ]
    ] = Field(default_factory=list, max_length=MAX_EXAMPLES)


__all__ = ["HEX_COLOUR", "BrandKit", "Claim", "Colour", "Term"]

"""Realistic output schemas of the studio's agents, written as a caller would send them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Brief(BaseModel):
    product: str
    audience: str
    objectives: list[str] = Field(min_length=1, max_length=5)
    key_messages: list[str] = Field(min_length=2, max_length=4)
    tone: str
    channels: list[Literal["instagram", "naver_search", "youtube", "kakao", "email"]]
    constraints: list[str] = Field(default_factory=list)
    language: Literal["ko", "en"]
    deliverables: list[str]


class Colour(BaseModel):
    name: str
    hex: str = Field(pattern=r"^#[0-9A-Fa-f]{6}$")


class BrandProfile(BaseModel):
    personality: list[str] = Field(min_length=3, max_length=5)
    voice: str = Field(min_length=20, max_length=300)
    values: list[str]
    words_to_use: list[str] = Field(max_length=8)
    words_to_avoid: list[str] = Field(max_length=8)
    palette: list[Colour] = Field(min_length=2, max_length=5)
    typography: str | None = None


class ChannelCopy(BaseModel):
    channel: str
    headline: str = Field(max_length=30)
    body: str = Field(min_length=40, max_length=2200)
    cta: str = Field(min_length=2, max_length=40)
    hashtags: list[str] = Field(max_length=10)


class CopySet(BaseModel):
    copies: list[ChannelCopy] = Field(min_length=1, max_length=3)


class ReviewScore(BaseModel):
    criterion: Literal["brand_fit", "clarity", "claims_and_compliance", "channel_fit"]
    score: int = Field(ge=1, le=10)
    comment: str


class Review(BaseModel):
    scores: list[ReviewScore] = Field(min_length=4, max_length=4)
    issues: list[str]
    approved: bool
    confidence: float = Field(ge=0, le=1)
    revision_requests: list[str]


STRATEGY: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "kpi": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 3},
                "target": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.5},
            },
            "required": ["name", "target"],
            "additionalProperties": False,
        },
        "channel_plan": {
            "type": "object",
            "properties": {
                "channel": {"enum": ["instagram", "youtube", "naver_search"]},
                "objective": {"type": "string"},
                "formats": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "uniqueItems": True,
                },
                "kpis": {
                    "type": "array",
                    "items": {"$ref": "#/$defs/kpi"},
                    "minItems": 2,
                    "maxItems": 3,
                },
            },
            "required": ["channel", "objective", "formats", "kpis"],
            "additionalProperties": False,
        },
    },
    "properties": {
        "version": {"const": 1},
        "positioning": {"type": "string", "maxLength": 120},
        "big_idea": {"type": "string"},
        "target_segments": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 2,
            "maxItems": 4,
        },
        "channel_plan": {"type": "array", "items": {"$ref": "#/$defs/channel_plan"}, "minItems": 1},
        "timeline": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "week": {"type": "integer", "minimum": 1, "maximum": 12},
                    "start": {"type": "string", "format": "date"},
                    "milestone": {"type": "string"},
                },
                "required": ["week", "start", "milestone"],
            },
        },
        "budget_share": {
            "type": "object",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 100},
        },
    },
    "required": [
        "version",
        "positioning",
        "big_idea",
        "target_segments",
        "channel_plan",
        "timeline",
    ],
    "additionalProperties": False,
}

CONTACT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "format": "email"},
        "website": {"type": "string", "format": "uri"},
        "id": {"type": "string", "format": "uuid"},
        "launch": {"type": "string", "format": "date-time"},
        "sku": {"type": "string", "pattern": "^SKU-[0-9]{4}$"},
        "discount": {
            "type": "integer",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 50,
            "multipleOf": 5,
        },
        "asset": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "kind": {"const": "image"},
                        "width": {"type": "integer", "minimum": 64},
                    },
                    "required": ["kind", "width"],
                },
                {
                    "type": "object",
                    "properties": {"kind": {"const": "video"}, "seconds": {"type": "number"}},
                    "required": ["kind", "seconds"],
                },
            ]
        },
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 5}]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 0},
        "merged": {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
            ]
        },
    },
    "required": [
        "email",
        "website",
        "id",
        "launch",
        "sku",
        "discount",
        "asset",
        "note",
        "tags",
        "merged",
    ],
}

TREE: dict[str, Any] = {
    "$ref": "#/$defs/node",
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["label"],
        }
    },
}

REALISTIC: dict[str, dict[str, Any]] = {
    "brief": Brief.model_json_schema(),
    "brand": BrandProfile.model_json_schema(),
    "copy": CopySet.model_json_schema(),
    "review": Review.model_json_schema(),
    "strategy": STRATEGY,
    "contact": CONTACT,
    "tree": TREE,
}

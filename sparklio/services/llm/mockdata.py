"""Schema-valid, realistic fake output, built from the caller's own words.

`MockData(payload, seed).from_schema(schema)` walks a JSON Schema (const -> enum -> examples ->
$ref -> allOf/anyOf/oneOf -> type) and fills every value with text made of the payload's words,
so a brief about "Dawon green tea" yields copy about Dawon green tea, and a Korean payload
yields Korean text. The same payload and seed always give the same output.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import rstr

from sparklio.exceptions import InvalidRequestError

_WORD = re.compile(r"[^\W\d_][\w'\u2019-]*", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_STOP = frozenset(
    "the a an and or of to for in on with by at from is are be as it its this that our your we "
    "you they their will can into about more most very than then also just only not no who "
    "which what when where how why need needs want wants make makes get has have had was were "
    "been being one all any each every some such like over under out up down new".split()
)
# Korean particles that depend on whether the word before ends in a consonant (batchim)
_JOSA = re.compile(r"(.)(을/를|이/가|은/는|과/와|으로/로)")
_PARTICLE = re.compile(r"(의|을|를|은|는|이|가|과|와|에|로|으로)$")
# a run of capitalised words after a lowercase word: a product or brand name in a sentence
_PROPER_NAME = re.compile(r"(?<=[a-z,] )([A-Z][\w'-]+(?: [A-Z][\w'-]+)*)")
# how briefs name the studio's channels in Korean and in passing, for enum choices
_ALIASES: dict[str, tuple[str, ...]] = {
    "instagram": ("인스타그램", "insta"),
    "naver_search": ("네이버", "naver"),
    "youtube": ("유튜브",),
    "kakao": ("카카오",),
    "email": ("이메일", "뉴스레터", "newsletter", "e-mail"),
    "blog": ("블로그",),
}
_SUBJECT_KEYS = ("product", "product_name", "name", "brand", "brand_name", "title", "subject")
_MAX_DEPTH = 8

_EN = {
    "sentences": [
        "{s} brings {a} to everyday {b}.",
        "Discover how {s} turns {a} into {b}.",
        "Made for people who care about {a}, {s} keeps {b} simple.",
        "With {s}, {a} meets {b} in every moment.",
        "{s} is the fresh way to enjoy {a}.",
        "Every detail of {s} is built around {a} and {b}.",
    ],
    "ctas": ["Try {s} today", "Discover {s}", "Shop {s} now", "Get {s} now"],
    "titles": ["{s}: {a} made simple", "Meet {s}", "{s}, {a} and {b}", "The {a} of {s}"],
    "fallback_subject": "your brand",
    "fallback_words": ["quality", "freshness", "comfort", "style", "care", "balance"],
}
_KO = {
    "sentences": [
        "{s}, {a}의 새로운 기준을 만나보세요.",
        "매일의 {b}에 {s}의 {a}을/를 더하세요.",
        "{a}을/를 생각한다면 {s}이/가 답입니다.",
        "{s}과/와 함께라면 {a}도 {b}도 가볍습니다.",
        "{s}은/는 {a}을/를 위한 가장 쉬운 선택입니다.",
    ],
    "ctas": ["지금 {s} 만나보기", "{s} 알아보기", "{s} 구매하기", "지금 {s} 시작하기"],
    "titles": ["{s}, {a}의 시작", "{s}과/와 {a}", "새로운 {a}, {s}", "{s}의 {a}"],
    "fallback_subject": "브랜드",
    "fallback_words": ["품질", "신선함", "편안함", "스타일", "균형", "일상"],
}

_TITLE_HINTS = ("name", "title", "headline", "idea", "position", "slogan", "tagline", "theme")
_LONG_HINTS = (
    "body",
    "description",
    "summary",
    "text",
    "caption",
    "copy",
    "rationale",
    "message",
    "content",
    "reason",
    "comment",
    "note",
    "detail",
    "insight",
    "feedback",
)


def _strings(value: Any) -> Iterator[tuple[str, str]]:
    """(key, string) for every string inside `value`, depth first."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, str):
            yield key, item
        elif isinstance(item, dict):
            stack.extend(reversed([(str(k), v) for k, v in item.items()]))
        elif isinstance(item, list):
            stack.extend(reversed([(key, v) for v in item]))


class MockData:
    """Builds values for JSON Schemas from one payload's words, deterministically."""

    def __init__(
        self,
        payload: Any,
        seed: int,
        root_schema: dict[str, Any] | None = None,
        check: Callable[[dict[str, Any], Any], bool] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.root = root_schema or {}
        self.check = check  # validates a value against a sub-schema (for oneOf)
        texts = list(_strings(payload))
        joined = " ".join(text for _, text in texts)
        letters = sum(ch.isalpha() for ch in joined)
        self.korean = letters > 0 and len(_HANGUL.findall(joined)) / letters > 0.3
        self.lang = _KO if self.korean else _EN
        words: list[str] = []
        for _, text in texts:
            for word in _WORD.findall(text):
                if len(word) > (1 if _HANGUL.search(word) else 2) and word.lower() not in _STOP:
                    words.append(word)
        self.subject = self._pick_subject(texts)
        # filler words say something about the subject, so they are not the subject's own
        in_subject = {w.lower() for w in _WORD.findall(self.subject)}
        unique = list(dict.fromkeys(words))
        self.words = (
            [w for w in unique if w.lower() not in in_subject]
            or unique
            or list(self.lang["fallback_words"])
        )
        self.text_lower = joined.lower()

    def _pick_subject(self, texts: list[tuple[str, str]]) -> str:
        for wanted in _SUBJECT_KEYS:
            for key, text in texts:
                if key.lower() == wanted and 0 < len(text) <= 60:
                    return text.strip()
        short = [text.strip() for _, text in texts if 0 < len(text.split()) <= 5]
        if short:
            return short[0]
        prose = " ".join(text for _, text in texts)
        if self.korean:  # the brief's first two words, without a trailing particle
            words = [w for w in prose.split() if _HANGUL.search(w)][:2]
            if words:
                words[-1] = _PARTICLE.sub("", words[-1]) or words[-1]
                return " ".join(words)
        names = _PROPER_NAME.findall(prose)  # "We launch Aurora Trail, ..." -> Aurora Trail
        return names[0] if names else str(self.lang["fallback_subject"])

    # -- text ------------------------------------------------------------------------------

    def _fill(self, pattern: str) -> str:
        a, b = self.rng.sample(self.words, 2) if len(self.words) > 1 else (self.words[0],) * 2
        text = pattern.format(s=self.subject, a=a, b=b)
        if self.korean:
            return _JOSA.sub(_josa, text)
        return text[0].upper() + text[1:]

    def sentence(self) -> str:
        return self._fill(self.rng.choice(self.lang["sentences"]))

    def paragraph(self, sentences: int = 3) -> str:
        return " ".join(self.sentence() for _ in range(sentences))

    def title(self) -> str:
        return self._fill(self.rng.choice(self.lang["titles"]))

    def _text_for(self, hint: str) -> str:
        hint = hint.lower()
        if "hashtag" in hint or hint in ("tags", "tag"):
            return "#" + re.sub(r"\W", "", self.rng.choice([self.subject, *self.words]))
        if "cta" in hint or "call_to_action" in hint or "button" in hint:
            return self._fill(self.rng.choice(self.lang["ctas"]))
        if any(h in hint for h in ("colour", "color", "hex")):
            return f"#{self.rng.randrange(0x1000000):06X}"
        if "language" in hint or hint in ("lang", "locale"):
            return "ko" if self.korean else "en"
        if any(h in hint for h in _TITLE_HINTS):
            return self.title()
        if any(h in hint for h in _LONG_HINTS):
            return self.paragraph(self.rng.randint(2, 3))
        if any(h in hint for h in ("audience", "segment", "product", "brand", "subject")):
            return self.subject if "product" in hint or "brand" in hint else self._phrase(3)
        return self._phrase(self.rng.randint(2, 4))

    def _phrase(self, n: int) -> str:
        picked = self.rng.sample(self.words, min(n, len(self.words)))
        return " ".join(picked)

    # -- schema walk -----------------------------------------------------------------------

    def from_schema(self, schema: Any, hint: str = "", depth: int = 0) -> Any:
        """A value that validates against `schema`."""
        if schema is True or schema == {}:
            return self._text_for(hint)
        if not isinstance(schema, dict):
            raise InvalidRequestError("output_schema contains a sub-schema that is not an object.")
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._choose(schema["enum"], hint)
        if schema.get("examples"):
            return self.rng.choice(schema["examples"])
        if "$ref" in schema:
            return self.from_schema(self._resolve(schema["$ref"]), hint, depth + 1)
        if "allOf" in schema:
            return self.from_schema(
                _merge(schema, [self._deref(s) for s in schema["allOf"]]), hint, depth + 1
            )
        if "anyOf" in schema or "oneOf" in schema:
            return self._branch(schema, hint, depth)
        return self._typed(schema, _type_of(schema), hint, depth)

    def _branch(self, schema: dict[str, Any], hint: str, depth: int) -> Any:
        """A value for the first usable anyOf/oneOf branch (non-null first); for oneOf, the
        first whose value matches exactly one branch."""
        key = "oneOf" if "oneOf" in schema else "anyOf"
        branches = schema[key]
        plain = {k: v for k, v in schema.items() if k != key}
        ordered = sorted(branches, key=lambda b: self._deref(b).get("type") == "null")
        value: Any = None
        for branch in ordered:
            value = self.from_schema(_merge(plain, [self._deref(branch)]), hint, depth + 1)
            if key == "anyOf" or self.check is None or self.check(schema, value):
                return value
        return value

    def _typed(self, schema: dict[str, Any], kind: str, hint: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, hint, depth)
        if kind == "integer":
            return int(self._number(schema, hint, integer=True))
        if kind == "number":
            return self._number(schema, hint, integer=False)
        if kind == "boolean":
            return self.rng.random() < 0.7
        if kind == "null":
            return None
        return self._string(schema, hint)

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if depth >= _MAX_DEPTH and name not in required:
                continue  # keep recursive schemas finite
            out[name] = self.from_schema(sub, name, depth + 1)
        for name in required - out.keys():
            out[name] = self._text_for(name)
        extra = schema.get("additionalProperties")
        wanted = max(schema.get("minProperties", 0), 0 if properties else 2)
        if isinstance(extra, dict) or extra is True or extra is None:
            sub = extra if isinstance(extra, dict) else {"type": "string"}
            for word in self.words:
                if len(out) >= wanted:
                    break
                out.setdefault(word.lower(), self.from_schema(sub, word, depth + 1))
        return out

    def _array(self, schema: dict[str, Any], hint: str, depth: int) -> list[Any]:
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", low + 4)
        count = low if depth >= _MAX_DEPTH else min(high, max(low, self.rng.randint(2, 4)))
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {} if not prefix else False)
        item_hint = hint[:-1] if hint.endswith("s") else hint
        out: list[Any] = []
        attempts = 0
        while len(out) < count and attempts < count * 10:
            attempts += 1
            sub = prefix[len(out)] if len(out) < len(prefix) else items
            if sub is False:
                break
            value = self.from_schema(sub, item_hint, depth + 1)
            # repeats read as a bug to a person; uniqueItems forbids them outright
            if value in out and (schema.get("uniqueItems") or attempts < count * 5):
                continue
            out.append(value)
        return out

    def _number(self, schema: dict[str, Any], hint: str, *, integer: bool) -> float:
        step = schema.get("multipleOf")
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is None and high is None and any(h in hint.lower() for h in ("score", "rating")):
            low, high = 1, 10
        low = 0 if low is None else low
        high = low + 100 if high is None else high
        if "exclusiveMinimum" in schema and "minimum" not in schema:
            low += step or (1 if integer else 0.01)
        if "exclusiveMaximum" in schema and "maximum" not in schema:
            high -= step or (1 if integer else 0.01)
        if step:
            first, last = -(-low // step), high // step
            return (self.rng.randint(int(first), int(last)) if last >= first else first) * step
        if integer:
            return self.rng.randint(int(-(-low // 1)), int(high // 1))
        return round(self.rng.uniform(low, high), 2) if high - low >= 0.01 else low

    def _string(self, schema: dict[str, Any], hint: str) -> str:
        fmt = schema.get("format")
        if fmt:
            return self._formatted(fmt, hint)
        if "pattern" in schema:
            text = rstr.Rstr(self.rng).xeger(schema["pattern"])
        else:
            text = self._text_for(hint)
        return self._fit(text, schema.get("minLength", 0), schema.get("maxLength"))

    def _fit(self, text: str, low: int, high: int | None) -> str:
        while len(text) < low:
            text = f"{text} {self.sentence()}".strip()
        if high is not None and len(text) > high:
            cut = text[:high]
            spaced = cut.rsplit(" ", 1)[0].rstrip(",.;:—-") if " " in cut else cut
            text = spaced if len(spaced) >= low else cut
        return text

    def _formatted(self, fmt: str, hint: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.subject.lower()).strip("-") or "brand"
        day = self.rng.randint(1, 28)
        month = self.rng.randint(1, 12)
        by_format = {
            "email": f"hello@{slug}.example.com",
            "date": f"2026-{month:02d}-{day:02d}",
            "date-time": f"2026-{month:02d}-{day:02d}T{self.rng.randint(8, 19):02d}:00:00Z",
            "time": f"{self.rng.randint(8, 19):02d}:00:00Z",
            "uri": f"https://{slug}.example.com/",
            "url": f"https://{slug}.example.com/",
            "hostname": f"{slug}.example.com",
            "ipv4": f"192.0.2.{self.rng.randint(1, 254)}",
            "ipv6": f"2001:db8::{self.rng.randint(1, 0xFFFF):x}",
            "uuid": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
        }
        return by_format.get(fmt, self._text_for(hint))

    # -- helpers ---------------------------------------------------------------------------

    def _choose(self, options: list[Any], hint: str) -> Any:
        if not options:
            raise InvalidRequestError("output_schema has an empty enum; no value can match it.")
        if "language" in hint.lower() or hint.lower() in ("lang", "locale"):
            wanted = "ko" if self.korean else "en"
            if wanted in options:
                return wanted
        mentioned = [
            o for o in options
            if isinstance(o, str)
            and any(name in self.text_lower for name in (o.lower(), *_ALIASES.get(o, ())))
        ]  # fmt: skip
        return self.rng.choice(mentioned or options)

    def _deref(self, schema: Any) -> dict[str, Any]:
        while isinstance(schema, dict) and "$ref" in schema and len(schema) == 1:
            schema = self._resolve(schema["$ref"])
        return schema if isinstance(schema, dict) else {}

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise InvalidRequestError(
                f"output_schema $ref {ref!r} points outside the schema; define it under $defs."
            )
        node: Any = self.root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise InvalidRequestError(f"output_schema $ref {ref!r} cannot be resolved.")
        return node


def _josa(match: re.Match[str]) -> str:
    """Pick the particle form that fits the word before it: 을 after a consonant, 를 after a
    vowel (and the like), the vowel form after a non-Hangul character."""
    char, forms = match.group(1), match.group(2).split("/")
    code = ord(char) - 0xAC00
    batchim = 0 <= code <= 11171 and code % 28 != 0
    if forms[0] == "으로":  # ㄹ batchim takes 로 as well
        batchim = batchim and code % 28 != 8
    return char + (forms[0] if batchim else forms[1])


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind:
        return str(kind)
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "multipleOf")):
        return "number"
    return "string"


def _merge(base: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One schema that satisfies `base` and every one of `parts` (for allOf and a chosen branch)."""
    merged = {k: v for k, v in base.items() if k != "allOf"}
    for part in parts:
        for key, value in part.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged

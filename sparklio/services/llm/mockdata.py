"""Schema-valid, realistic fake output, built from the caller's own words.

`MockData(payload, seed).from_schema(schema)` walks a JSON Schema (mock/walk.py: bounded, and
checked branch by branch) and fills every value with text made of the payload's words,
so a brief about "Dawon green tea" yields copy about Dawon green tea, and a Korean payload
yields Korean text. The same payload and seed always give the same output.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterator
from typing import Any

from sparklio.exceptions import InvalidRequestError
from sparklio.services.llm.mock.refs import SchemaTools
from sparklio.services.llm.mock.walk import FULL_NODES, Walker

_WORD = re.compile(r"[^\W\d_][\w'\u2019-]*", re.UNICODE)
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_NON_WORD = re.compile(r"\W")
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


class Lexicon:
    """What one payload says, worked out once: its language, its subject and the words to
    fill text with. Depends on the payload alone, so the provider keeps it across calls."""

    __slots__ = ("korean", "lang", "subject", "text_lower", "words")

    def __init__(self, payload: Any) -> None:
        texts = list(_strings(payload))
        joined = " ".join([text for _, text in texts])
        hangul = len(_HANGUL.findall(joined))
        # counting letters is the costly part: only a text with Hangul needs the count
        self.korean = hangul > 0 and hangul / sum(map(str.isalpha, joined)) > 0.3
        self.lang: dict[str, Any] = _KO if self.korean else _EN
        words: list[str] = []
        for _, text in texts:
            for word in _WORD.findall(text):
                shortest = 1 if hangul and _HANGUL.search(word) else 2
                if len(word) > shortest and word.lower() not in _STOP:
                    words.append(word)
        self.subject = self._pick_subject(texts)
        # filler words say something about the subject, so they are not the subject's own
        in_subject = {w.lower() for w in _WORD.findall(self.subject)}
        unique = list(dict.fromkeys(words))
        self.words: list[str] = (
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


class MockData:
    """Builds values for JSON Schemas from one payload's words, deterministically.

    `payload`: the caller's payload, or its Lexicon when the caller keeps one."""

    def __init__(self, payload: Any, seed: int) -> None:
        self.rng = random.Random(seed)
        lexicon = payload if isinstance(payload, Lexicon) else Lexicon(payload)
        self.korean, self.lang, self.subject = lexicon.korean, lexicon.lang, lexicon.subject
        self.words, self.text_lower = lexicon.words, lexicon.text_lower

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
        kind = _hint_kind(hint)
        if kind == "phrase":
            return self._phrase(self.rng.randint(2, 4))
        if kind == "long":
            return self.paragraph(self.rng.randint(2, 3))
        if kind == "title":
            return self.title()
        if kind == "hashtag":
            return "#" + _NON_WORD.sub("", self.rng.choice([self.subject, *self.words]))
        if kind == "cta":
            return self._fill(self.rng.choice(self.lang["ctas"]))
        if kind == "colour":
            return f"#{self.rng.randrange(0x1000000):06X}"
        if kind == "language":
            return "ko" if self.korean else "en"
        return self.subject if kind == "subject" else self._phrase(3)

    def _phrase(self, n: int) -> str:
        picked = self.rng.sample(self.words, min(n, len(self.words)))
        return " ".join(picked)

    # -- schemas ---------------------------------------------------------------------------

    def from_schema(
        self,
        schema: dict[str, Any] | SchemaTools,
        nodes: int = FULL_NODES,
        *,
        minimal: bool = False,
        obj: bool = False,
        seconds: float | None = None,
    ) -> Any:
        """A value for `schema` (see mock/walk.py); OverBudget past `nodes` steps of work,
        InvalidRequestError (422) when the schema cannot be answered. `obj`: try an object
        first at the root; `seconds`: a CPU-time limit (OverBudget past it)."""
        tools = schema if isinstance(schema, SchemaTools) else SchemaTools(schema)
        walker = Walker(self, tools, nodes, minimal=minimal, root_object=obj, seconds=seconds)
        return walker.value()

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


@functools.lru_cache(maxsize=1024)
def _hint_kind(hint: str) -> str:
    """What kind of text a property name asks for (a few dozen names recur: worked out once)."""
    hint = hint.lower()
    if "hashtag" in hint or hint in ("tags", "tag"):
        return "hashtag"
    if "cta" in hint or "call_to_action" in hint or "button" in hint:
        return "cta"
    if any(h in hint for h in ("colour", "color", "hex")):
        return "colour"
    if "language" in hint or hint in ("lang", "locale"):
        return "language"
    if any(h in hint for h in _TITLE_HINTS):
        return "title"
    if any(h in hint for h in _LONG_HINTS):
        return "long"
    if "product" in hint or "brand" in hint:
        return "subject"
    if any(h in hint for h in ("audience", "segment", "subject")):
        return "short"
    return "phrase"


def _josa(match: re.Match[str]) -> str:
    """Pick the particle form that fits the word before it: 을 after a consonant, 를 after a
    vowel (and the like), the vowel form after a non-Hangul character."""
    char, forms = match.group(1), match.group(2).split("/")
    code = ord(char) - 0xAC00
    batchim = 0 <= code <= 11171 and code % 28 != 0
    if forms[0] == "으로":  # ㄹ batchim takes 로 as well
        batchim = batchim and code % 28 != 8
    return char + (forms[0] if batchim else forms[1])

"""Rules a model cannot break: each channel's limits, and the words and claims no copy may
contain (from the brief, the brand kit, the brand profile, and built-in rules), checked on
every piece of copy by code, deterministically, in any language.

Matching a forbidden term:
- Korean (a term ending in a Hangul syllable): the term at a word boundary, then any
  particles (은/는/이/가/을/를/에/의/로/으로/와/과/도/만/에서/까지/처럼...), or, for a
  stem of two syllables or more, a 하다/되다 ending (치료합니다, 치료되는), then a word
  boundary. "치료를" is "치료"; "치료제" is another word, and so is "암벽" for "암".
- Other languages: case-insensitive, at word boundaries, with simple plurals (cure/cures,
  claim/claims, berry/berries, box/boxes).
- Spaces inside a term match any spacing, none included: "암 예방" finds "암예방".

Pure functions over pydantic models: no model call, no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from pydantic import BaseModel

from sparklio.agents.brief_agent import Channel
from sparklio.agents.copywriter_agent import LIMITS, ChannelCopy, VariantCounts
from sparklio.wire.brand import BrandKit

Source = Literal["brief", "brand_kit", "brand", "built_in"]
Kind = Literal["word", "claim"]
RuleName = Literal[
    "forbidden_word", "forbidden_claim", "length", "hashtags", "missing_cta", "variant_count"
]

#: Korean particles (조사) a noun may carry and still be the same word, longest first.
PARTICLES = sorted(
    {
        "은", "는", "이", "가", "을", "를", "에", "의", "로", "으로", "와", "과", "도", "만",
        "에서", "에게", "께", "께서", "한테", "까지", "부터", "보다", "처럼", "같이", "이나",
        "나", "같은", "이랑", "랑", "이라", "라", "이라는", "라는", "이란", "란", "요",
        "이다", "다",
        "입니다", "이에요", "예요", "이야", "야", "마저", "조차", "밖에", "뿐", "으로써",
        "로써", "으로서", "로서", "이며", "며", "하고", "엔", "에는", "에서는", "으로는",
        "로는", "과는", "와는", "에도", "로도", "으로도",
    },
    key=len,
    reverse=True,
)  # fmt: skip
#: what a 하다/되다 verb made of the term may end in (치료해, 치료합니다, 치료된): its syllables
_VERB = r"(?:하|되|해|돼|한|할|함|된|될|됨|합|됩|했|됐|시키|시킨|시켜)[가-힣]{0,4}"
_PARTICLE = "(?:" + "|".join(PARTICLES) + ")"
_HANGUL = re.compile(r"[가-힣]$")

#: Built-in: claims Korean law forbids in food advertising. 식품 등의 표시·광고에 관한 법률
#: (식품표시광고법) 제8조 제1항 제1호 and 시행령 제3조 [별표 1]: no food may be advertised as
#: preventing or treating a disease (질병의 예방·치료에 효능이 있는 것으로 인식할 우려가 있는
#: 표시·광고), nor as a medicine (제2호), e.g. "암 예방", "치료", "특효", "만병통치". The
#: English lines are the same claims, for English copy aimed at the same market.
FOOD_CLAIMS_LAW = "식품표시광고법 제8조 제1항 (질병의 예방·치료 효능 표시·광고 금지)"
BUILT_IN_CLAIMS: tuple[str, ...] = (
    "질병 예방",
    "암 예방",
    "치료",
    "치유",
    "특효",
    "만병통치",
    "면역력 강화",
    "다이어트 효과",
    "혈당 강하",
    "cures cancer",
    "prevents cancer",
    "prevents disease",
    "miracle cure",
    "boosts immunity",
)

#: Words that forbid what is quoted in the same sentence of a brief ("Do not use the word
#: 'miracle'", "'기적'이라는 단어는 쓰지 마세요").
_CUES = re.compile(
    r"avoid|don'?t|do not|never|must not|mustn'?t|no mention|forbid|ban|without|not use|"
    r"금지|쓰지|사용하지|피하|피해|피합|빼|넣지|말아|말 것|말것|삼가|자제",
    re.IGNORECASE,
)
#: a quoted term: in ASCII quotes, typographic ones (U+2018/2019, U+201C/201D) or CJK brackets
_OPEN, _CLOSE = "'\u2018\"\u201c\u300c\u300e", "'\u2019\"\u201d\u300d\u300f"
_QUOTED = re.compile(rf"(?<!\w)[{_OPEN}]([^{_CLOSE}\n]{{1,80}}?)[{_CLOSE}]")
_SENTENCES = re.compile(r"(?<=[.!?。])\s+|\n+")


class Rule(BaseModel):
    """A term no copy may contain."""

    term: str
    kind: Kind = "word"
    source: Source
    note: str = ""  # why, when it is not obvious: the law a built-in claim breaks


class Violation(BaseModel):
    """Copy that breaks a rule: where, which rule, and the offending text."""

    channel: Channel
    rule: RuleName
    field: str  # headline | body | cta | hashtags | variants.headlines | variants.descriptions
    #: which variant of the field (1 for the first), for a variant
    variant: int | None = None
    text: str  # what breaks it: the words found, or the over-long text's start
    term: str | None = None  # the forbidden term, for a forbidden word or claim
    source: Source | Literal["channel"]
    message: str  # as a revision request to the copywriter


def built_in_rules() -> list[Rule]:
    return [Rule(term=t, kind="claim", source="built_in", note=FOOD_CLAIMS_LAW)
            for t in BUILT_IN_CLAIMS]  # fmt: skip


def forbidden_in_text(text: str) -> list[str]:
    """What a brief forbids by quoting it: the quoted terms of each sentence that says to
    avoid something. Unquoted wishes ("no health claims") are the reviewer's to judge."""
    found: list[str] = []
    for sentence in _SENTENCES.split(text):
        if _CUES.search(sentence):
            found.extend(m.group(1).strip() for m in _QUOTED.finditer(sentence))
    return list(dict.fromkeys(t for t in found if t))


def rules_for(
    *,
    brief_text: str = "",
    brief_words: Iterable[str] = (),
    brand_kit: BrandKit | None = None,
    brand_words: Iterable[str] = (),
    built_in: bool = True,
) -> list[Rule]:
    """Every rule for a campaign, each term once (the first source that names it wins). A
    free-text brand guide is the brand agent's to read (its words_to_avoid are checked as the
    brand's); a brand kit is the structured, binding form."""
    rules: list[Rule] = []
    rules += [Rule(term=t, source="brief") for t in brief_words]
    rules += [Rule(term=t, source="brief") for t in forbidden_in_text(brief_text)]
    if brand_kit is not None:
        rules += [Rule(term=t, source="brand_kit") for t in brand_kit.words_to_avoid]
        rules += [Rule(term=t, kind="claim", source="brand_kit")
                  for t in brand_kit.claims_to_avoid]  # fmt: skip
    rules += [Rule(term=t, source="brand") for t in brand_words]
    if built_in:
        rules += built_in_rules()
    seen: set[str] = set()
    unique = []
    for rule in rules:
        key = " ".join(rule.term.casefold().split())
        if key and key not in seen:
            seen.add(key)
            unique.append(rule)
    return unique


@functools.lru_cache(maxsize=1024)
def pattern(term: str) -> re.Pattern[str]:
    """The regular expression that finds `term` as a word (see the module's docstring)."""
    words = term.split()
    if not words:
        raise ValueError("an empty term")
    stem = r"\s*".join(re.escape(w) for w in words[:-1])
    last = words[-1]
    if _HANGUL.search(last):
        syllables = sum(1 for c in "".join(words) if "가" <= c <= "힣")
        tail = f"(?:{_VERB}|{_PARTICLE}*)" if syllables >= 2 else f"{_PARTICLE}*"
        body = re.escape(last) + tail
    elif re.search(r"[^aeiou]y$", last, re.IGNORECASE):
        body = re.escape(last[:-1]) + "(?:y|ies)"
    elif re.search(r"(?:s|x|z|ch|sh)$", last, re.IGNORECASE):
        body = re.escape(last) + "(?:es)?"
    elif re.search(r"[A-Za-z]$", last):
        body = re.escape(last) + "(?:s|es)?"
    else:
        body = re.escape(last)
    joined = f"{stem}\\s*{body}" if stem else body
    return re.compile(rf"(?<!\w){joined}(?!\w)", re.IGNORECASE)


def find(term: str, text: str) -> list[str]:
    """Each place `term` occurs in `text` as a word, as written there."""
    return [m.group(0) for m in pattern(term).finditer(text)]


#: a variant's field, and how a message to the copywriter names one of it
VARIANT_FIELDS = {"variants.headlines": "headline variant",
                  "variants.descriptions": "description variant"}  # fmt: skip


def _fields(copy: ChannelCopy) -> list[tuple[str, int | None, str]]:
    """Each text of `copy` a rule applies to: its field, which variant (or None), the text."""
    fields: list[tuple[str, int | None, str]] = [
        ("headline", None, copy.headline), ("body", None, copy.body), ("cta", None, copy.cta),
        ("hashtags", None, " ".join(copy.hashtags)),
    ]  # fmt: skip
    if copy.variants is not None:
        for field, texts in (("variants.headlines", copy.variants.headlines),
                             ("variants.descriptions", copy.variants.descriptions)):  # fmt: skip
            fields += [(field, number, text) for number, text in enumerate(texts, 1)]
    return fields


def _named(field: str, variant: int | None) -> str:
    """A field as a message names it: "the body", "headline variant 3"."""
    return f"{VARIANT_FIELDS[field]} {variant}" if variant is not None else f"the {field}"


def _why(rule: Rule) -> str:
    return {
        "brief": "the brief forbids it",
        "brand_kit": "the brand kit avoids it",
        "brand": "the brand avoids that word",
        "built_in": f"a claim forbidden by {rule.note}" if rule.note else "a forbidden claim",
    }[rule.source]


def limit_violations(copy: ChannelCopy, variants: VariantCounts | None = None) -> list[Violation]:
    """Where `copy` goes over its channel's limits (each variant included), has no call to
    action, or has another number of variants than `variants` asked for."""
    limits = LIMITS[copy.channel]
    longest = {
        "headline": limits.headline,
        "body": limits.body,
        "cta": limits.cta,
        "variants.headlines": limits.headline,
        "variants.descriptions": limits.body,
    }
    found: list[Violation] = []
    for field, variant, text in _fields(copy):
        limit = longest.get(field)
        if limit is not None and len(text) > limit:
            named = _named(field, variant)
            found.append(Violation(
                channel=copy.channel, rule="length", field=field, variant=variant,
                source="channel", text=text[:80] + ("…" if len(text) > 80 else ""),
                message=f"{named[0].upper()}{named[1:]} has {len(text)} characters; "
                        f"{copy.channel} shows at most {limit}. Shorten it.",
            ))  # fmt: skip
    if variants is not None:
        found += _count_violations(copy, variants)
    if not copy.cta.strip():
        found.append(Violation(channel=copy.channel, rule="missing_cta", field="cta",
                               source="channel", text="",
                               message="Add a call to action."))  # fmt: skip
    if len(copy.hashtags) > limits.hashtags:
        found.append(Violation(
            channel=copy.channel, rule="hashtags", field="hashtags", source="channel",
            text=" ".join(copy.hashtags)[:80],
            message=f"Use at most {limits.hashtags} hashtags on {copy.channel} "
                    f"(there are {len(copy.hashtags)}).",
        ))  # fmt: skip
    return found


def _count_violations(copy: ChannelCopy, variants: VariantCounts) -> list[Violation]:
    """Another number of variants than the channel asked for."""
    have = copy.variants
    found: list[Violation] = []
    for field, kind, asked in (("variants.headlines", "headlines", variants.headlines),
                               ("variants.descriptions", "descriptions",
                                variants.descriptions)):  # fmt: skip
        written = len(getattr(have, kind)) if have is not None else 0
        if written != asked:
            found.append(Violation(
                channel=copy.channel, rule="variant_count", field=field, source="channel",
                text=f"{written} of {asked}",
                message=f"Write exactly {asked} {kind[:-1]} variant{'s' * (asked != 1)} "
                        f"(there are {written}).",
            ))  # fmt: skip
    return found


def word_violations(copy: ChannelCopy, rules: Sequence[Rule]) -> list[Violation]:
    """Each forbidden term `copy` contains, once per field (and variant) it is in."""
    found: list[Violation] = []
    for rule in rules:
        for field, variant, text in _fields(copy):
            hits = find(rule.term, text)
            if not hits:
                continue
            written = ", ".join(repr(h) for h in dict.fromkeys(hits))
            where = _named(field, variant)
            if rule.source == "brand" and variant is None:
                message = f"Remove {rule.term!r}: the brand avoids that word."
            elif rule.source == "brand":
                message = f"Remove {rule.term!r} from {where}: the brand avoids that word."
            else:
                message = f"Remove {rule.term!r} from {where} ({written} found): {_why(rule)}."
            found.append(Violation(
                channel=copy.channel, field=field, variant=variant, term=rule.term,
                source=rule.source,
                rule="forbidden_claim" if rule.kind == "claim" else "forbidden_word",
                text=", ".join(dict.fromkeys(hits)), message=message[:300],
            ))  # fmt: skip
    return found


def check(
    copies: Sequence[ChannelCopy],
    rules: Sequence[Rule],
    variants: Mapping[str, VariantCounts] | None = None,
) -> list[Violation]:
    """Every rule every piece of copy breaks, each variant included: limits first (with
    the number of variants `variants` asks of each channel), then forbidden terms."""
    asked = variants or {}
    return [v for copy in copies
            for v in (*limit_violations(copy, asked.get(copy.channel)),
                      *word_violations(copy, rules))]  # fmt: skip


__all__ = [
    "BUILT_IN_CLAIMS",
    "FOOD_CLAIMS_LAW",
    "PARTICLES",
    "VARIANT_FIELDS",
    "Rule",
    "Violation",
    "built_in_rules",
    "check",
    "find",
    "forbidden_in_text",
    "limit_violations",
    "pattern",
    "rules_for",
    "word_violations",
]

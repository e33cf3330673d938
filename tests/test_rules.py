"""The rule checker on its own: forbidden words found in Korean with particles and in English
with plurals and any case, never inside another word; and the checks on a piece of copy."""

from __future__ import annotations

import pytest

from sparklio.agents.copywriter_agent import ChannelCopy, VariantCounts
from sparklio.agents.rules import (
    FOOD_CLAIMS_LAW,
    Rule,
    check,
    find,
    forbidden_in_text,
    rules_for,
)
from sparklio.wire.brand import BrandKit


@pytest.mark.parametrize(
    ("term", "text", "found"),
    [
        # Korean: the word with its particles is still the word
        ("기적", "기적", ["기적"]),
        ("기적", "이 차는 기적을 만듭니다", ["기적을"]),
        ("기적", "작은 기적이 필요할 때", ["기적이"]),
        ("기적", "기적은, 기적의, 기적으로도", ["기적은", "기적의", "기적으로도"]),
        ("치료", "치료를 돕는 차", ["치료를"]),
        ("치료", "피로에서 치료로", ["치료로"]),
        ("치료", "위염을 치료합니다", ["치료합니다"]),  # a 하다 verb made of it
        ("최고", "'최고'라는 말", ["최고"]),
        ("최고", "#최고", ["최고"]),
        ("암 예방", "암 예방에 좋은", ["암 예방에"]),
        ("암 예방", "#암예방", ["암예방"]),  # spacing in Korean varies: any spacing matches
        ("암", "암을 막는다", ["암을"]),
        # Korean: not inside another word
        ("치료", "치료제", []),
        ("암", "암벽 등반", []),
        ("암", "고암 다원", []),
        ("예방", "암예방", []),
        ("기적", "기적적", []),
        # English: any case, plurals, word boundaries
        ("miracle", "A MIRACLE in a cup", ["MIRACLE"]),
        ("miracle", "Small miracles, daily", ["miracles"]),
        ("berry", "Wild berries", ["berries"]),
        ("box", "Gift boxes", ["boxes"]),
        ("cure", "Cures for all", ["Cures"]),
        ("miracle", "miraculous", []),
        ("cure", "secure your pair", []),
        ("cure", "curated trails", []),
        ("best", "bestseller", []),
        ("prevents cancer", "It prevents  cancer.", ["prevents  cancer"]),
        ("miracle", "miracle-grade", ["miracle"]),  # a hyphen ends a word
    ],
)
def test_a_term_is_found_as_a_word(term: str, text: str, found: list[str]) -> None:
    assert find(term, text) == found


def test_a_brief_forbids_what_it_quotes_in_a_sentence_that_says_to_avoid_it() -> None:
    brief = (
        "Launch Aurora Trail in May. Don't use the word 'miracle' or “cure”.\n"
        "'기적'이라는 단어는 쓰지 마세요. 우리 '첫물 녹차'를 알려 주세요.\n"
        "Tone: energetic but honest; no claims about injury prevention."
    )
    # 'first flush' is quoted, but nothing says to avoid it; unquoted wishes are the reviewer's
    assert forbidden_in_text(brief) == ["miracle", "cure", "기적"]


def copy(**fields: object) -> ChannelCopy:
    return ChannelCopy.model_validate(
        {"channel": "instagram", "headline": "H", "body": "B", "cta": "Buy", "hashtags": []}
        | fields
    )


def test_every_source_becomes_a_rule_once_and_the_first_source_wins() -> None:
    kit = BrandKit(name="Dawon", words_to_avoid=["최고", "Miracle"], claims_to_avoid=["암 예방"])
    rules = rules_for(brief_text="Never say 'miracle'.", brief_words=["cheap"], brand_kit=kit)
    by_term = {r.term: r for r in rules}
    assert by_term["cheap"].source == "brief" and by_term["miracle"].source == "brief"
    assert "Miracle" not in by_term  # the brief named it first
    assert by_term["최고"].source == "brand_kit"
    assert by_term["암 예방"].kind == "claim" and by_term["암 예방"].source == "brand_kit"
    assert by_term["치료"].source == "built_in" and by_term["치료"].note == FOOD_CLAIMS_LAW
    assert len({" ".join(r.term.casefold().split()) for r in rules}) == len(rules)


def test_a_check_names_the_channel_the_rule_and_the_offending_text() -> None:
    rules = [Rule(term="기적", source="brief"), *rules_for(built_in=True)]
    broken = check(
        [
            copy(headline="오늘의 기적을 만나요", body="면역력 강화에 좋은 차", hashtags=["#기적"]),
            copy(channel="naver_search", headline="x" * 31, body="ok", cta=""),
            copy(channel="email", headline="Calm", body="A quiet cup.", cta="Read"),
        ],
        rules,
    )
    found = {(v.channel, v.rule, v.field, v.text) for v in broken}
    assert found == {
        ("instagram", "forbidden_word", "headline", "기적을"),
        ("instagram", "forbidden_word", "hashtags", "기적"),
        ("instagram", "forbidden_claim", "body", "면역력 강화에"),
        ("naver_search", "length", "headline", "x" * 31),
        ("naver_search", "missing_cta", "cta", ""),
    }
    claim = next(v for v in broken if v.rule == "forbidden_claim")
    assert claim.source == "built_in" and "식품표시광고법" in claim.message
    assert claim.message.startswith("Remove '면역력 강화' from the body")


def test_every_variant_is_checked_like_the_copy_and_named_by_its_number() -> None:
    search = copy(
        channel="naver_search",
        headline="Oat latte",
        body="Calm mornings.",
        variants={
            "headlines": ["Calm mornings", "오늘의 기적을 한 잔", "x" * 31],
            "descriptions": ["Small miracles, daily.", "A quiet cup."],
        },
    )
    rules = [Rule(term="기적", source="brief"), Rule(term="miracle", source="brief")]
    asked = {"naver_search": VariantCounts(headlines=3, descriptions=3)}
    broken = check([search], rules, asked)
    found = {(v.rule, v.field, v.variant, v.text) for v in broken}
    assert found == {
        ("forbidden_word", "variants.headlines", 2, "기적을"),
        ("length", "variants.headlines", 3, "x" * 31),
        ("forbidden_word", "variants.descriptions", 1, "miracles"),
        ("variant_count", "variants.descriptions", None, "2 of 3"),
    }
    # each is a revision request that says which variant to fix
    assert {v.message for v in broken} == {
        "Remove '기적' from headline variant 2 ('기적을' found): the brief forbids it.",
        "Headline variant 3 has 31 characters; naver_search shows at most 30. Shorten it.",
        "Remove 'miracle' from description variant 1 ('miracles' found): the brief forbids it.",
        "Write exactly 3 description variants (there are 2).",
    }
    # the copy's own fields are named as they always were
    plain = check([copy(headline="x" * 61)], rules)
    assert [v.message for v in plain] == [
        "The headline has 61 characters; instagram shows at most 60. Shorten it."
    ]
    missing = check([copy()], rules, {"instagram": VariantCounts(headlines=1, descriptions=1)})
    assert [v.message for v in missing] == [
        "Write exactly 1 headline variant (there are 0).",
        "Write exactly 1 description variant (there are 0).",
    ]

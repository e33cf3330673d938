"""The studio in a real browser (Debian's Chromium, driven by Playwright) against a real
`sparklio serve` in mock mode: log in, brand kits, a campaign followed live to its report,
a manual review, operations, what a member may not open, Korean, phone width, log out.

One server and one browser serve the module; each test has its own browser context (its
own cookies and storage). Every wait is on a condition the page shows (Playwright's
auto-waiting `expect`), bounded generously for a busy 2-core machine. Each page's
screenshot goes to test-artifacts/studio/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.studio import (
    ARTIFACTS,
    CHROMIUM,
    LAUNCH_ARGS,
    InThread,
    Studio,
    User,
    require_browser,
    start_studio,
)
from tests.fakes.campaign import ROUTES, SlowCopyOllama

pytestmark = pytest.mark.timeout(300)

WAIT = 30_000  # ms: any one thing the page should show soon
FINISH = 180_000  # ms: a mock campaign from start to report on a busy machine

BRIEF = (
    "Launch Dawon Tea's cold-brew green tea for office workers in Seoul: a calm, "
    "refreshing afternoon break. Budget 5,000,000 KRW, two weeks in June."
)
#: the steps a campaign on Instagram and Naver shows, as the live view names them
STEPS = (
    "Brief analysis",
    "Brand profile",
    "Strategy",
    "Copywriter · Instagram",
    "Copywriter · Naver search ad",
    "Visual concepts",
    "Images",
    "Review",
)
BRIEF_YAML = """\
brief: >
  Autumn launch of Dawon Tea's roasted barley latte for students who study late;
  cozy, warm, no sugar added.
channels: [instagram, kakao]
words_to_avoid: [cheap]
product_facts:
  price_krw: 4500
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    require_browser()
    running = start_studio(tmp_path_factory.mktemp("studio") / "home")
    try:
        yield running
    finally:
        running.server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect as playwright_expect
    from playwright.sync_api import sync_playwright

    require_browser()
    playwright_expect.set_options(timeout=WAIT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Pages:
    """New pages in fresh browser contexts, each watched for script errors, CSP refusals and
    requests that leave Sparklio."""

    def __init__(self, browser: Any, studio: Studio) -> None:
        self.browser, self.studio = browser, studio
        self.contexts: list[Any] = []
        self.problems: list[str] = []

    def open(self, locale: str = "en-US", width: int = 1280, height: int = 900) -> Any:
        context = self.browser.new_context(
            base_url=self.studio.base_url,
            locale=locale,
            viewport={"width": width, "height": height},
            accept_downloads=True,
        )
        context.set_default_timeout(WAIT)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)
        page.on("request", self._request)
        return page

    def _request(self, request: Any) -> None:
        # every asset and call is Sparklio's own: nothing goes to another host
        url = request.url
        if not url.startswith((self.studio.base_url + "/", "data:", "blob:")):
            self.problems.append(f"request to another origin: {url}")

    def _console(self, message: Any) -> None:
        # a page blocked by its own Content-Security-Policy says so on the console
        if message.type == "error" and "Content Security Policy" in message.text:
            self.problems.append(f"CSP: {message.text}")

    def close(self) -> None:
        for context in self.contexts:
            context.close()


def watched(browser: Any, studio: Studio) -> Iterator[Pages]:
    opened = Pages(browser, studio)
    yield opened
    opened.close()
    assert not opened.problems, opened.problems


@pytest.fixture
def pages(browser: Any, studio: Studio) -> Iterator[Pages]:
    yield from watched(browser, studio)


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


#: what a screen-reader user would miss on a page, or anyone could hardly read: a list
A11Y_PROBLEMS = r"""() => {
  const problems = [];
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (!el.labels.length && !el.getAttribute("aria-label")) problems.push(`no label: ${el.name}`);
  }
  for (const img of document.querySelectorAll("img")) {
    if (!img.alt) problems.push(`no alt text: ${img.src}`);
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    const named = el.textContent.trim() || el.getAttribute("aria-label");
    if (!named) problems.push(`no name: ${el.outerHTML}`);
  }
  for (const landmark of ["header", "main"]) {
    if (!document.querySelector(landmark)) problems.push(`no <${landmark}>`);
  }
  if (document.querySelectorAll("main h1").length !== 1) problems.push("not one <h1> in <main>");
  // WCAG AA contrast of every visible text: 4.5:1, 3:1 for large text
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => v / 255)
    .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4))
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  for (const el of document.querySelectorAll("body *:not(svg *)")) {
    const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!text || !el.checkVisibility() || el.closest(".visually-hidden")) continue;
    const style = getComputedStyle(el);
    const [a, b] = [lum(rgb(style.color)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)}: ${el.textContent.trim().slice(0, 40)}`);
    }
  }
  return problems;
}"""


def shot(page: Any, name: str) -> Path:
    """A screenshot of the page, once it has nothing a screen reader could not name."""
    assert page.evaluate(A11Y_PROBLEMS) == [], name
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Any, user: User, path: str = "/studio") -> None:
    page.goto(path)
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def start_campaign(page: Any, brief: str, channels: list[str], kit: str) -> str:
    """Fill in the new-campaign form and start it; the campaign's id (from the URL)."""
    page.get_by_role("link", name="New campaign").first.click()
    expect(page.get_by_role("heading", name="New campaign")).to_be_visible()
    page.get_by_label("Brief", exact=True).fill(brief)
    for channel in channels:
        page.get_by_label(channel, exact=True).check()
    page.get_by_label("Brand kit").select_option(label=kit)
    shot(page, "new-campaign")
    page.get_by_role("button", name="Start campaign").click()
    expect(page).to_have_url(re.compile(r"/studio/campaigns/(?!new$)[^/]+$"))
    return str(page.url.rsplit("/", 1)[1])


def test_member_creates_and_edits_a_brand_kit(pages: Pages, studio: Studio) -> None:
    page = pages.open()
    page.goto("/studio")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shot(page, "login")
    log_in(page, studio.member)
    page.get_by_role("navigation").get_by_role("link", name="Brand kits").click()
    page.get_by_role("link", name="New brand kit").click()
    page.get_by_label("Name").fill("Dawon Tea")
    page.get_by_label("Voice").fill("Calm and warm, like a friend who pours you tea.")
    page.get_by_label("Words to avoid").fill("cheap\nmiracle")
    page.get_by_label("Palette").fill("#2E7D32, #F5F5F0")
    page.get_by_role("button", name="Save brand kit").click()

    kit = page.get_by_role("listitem").filter(has=page.get_by_role("link", name="Dawon Tea"))
    expect(kit).to_contain_text("Calm and warm")
    expect(kit).to_contain_text("cheap, miracle")
    expect(kit).to_contain_text("#2E7D32")
    shot(page, "brand-kits")

    kit.get_by_role("link", name="Dawon Tea").click()
    expect(page.get_by_role("heading", name="Edit Dawon Tea")).to_be_visible()
    expect(page.get_by_label("Words to avoid")).to_have_value("cheap\nmiracle")
    page.get_by_label("Voice").fill("Bright and brisk.")
    shot(page, "brand-kit-edit")
    page.get_by_role("button", name="Save brand kit").click()
    expect(page.get_by_role("heading", name="Brand kits")).to_be_visible()
    expect(page.get_by_text("Bright and brisk.")).to_be_visible()
    expect(page.get_by_text("Calm and warm")).to_have_count(0)


def test_a_campaign_runs_live_to_its_report(pages: Pages, studio: Studio) -> None:
    page = pages.open()
    log_in(page, studio.member)
    page.goto("/studio/brand-kits/new")
    page.get_by_label("Name").fill("Campaign Kit")
    page.get_by_role("button", name="Save brand kit").click()
    expect(page.get_by_role("link", name="Campaign Kit")).to_be_visible()

    campaign_id = start_campaign(page, BRIEF, ["Instagram", "Naver search ad"], "Campaign Kit")

    expect(page.get_by_role("heading", name="Campaign", exact=True)).to_be_visible()
    expect(page.locator(".status-holder")).to_have_text("Finished", timeout=FINISH)
    steps = page.locator("ol.steps li")
    for step in STEPS:
        expect(steps.filter(has_text=step).first).to_contain_text("done")
    for channel in ("Instagram", "Naver search ad"):
        card = page.locator("article.copy").filter(has=page.get_by_role("heading", name=channel))
        expect(card.locator(".headline")).not_to_be_empty()
    images = page.locator("figure.image img")
    expect(images.first).to_be_visible()
    # each image loaded (through the session cookie): a broken one has no natural width
    widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)")
    assert widths and all(w > 0 for w in widths), widths
    # the reviewer's scores, as many as the campaign's review holds, each a number
    detail = page.request.get(f"{studio.base_url}/api/v1/campaigns/{campaign_id}")
    assert detail.ok, detail.text()
    review = detail.json()["result"]["review"]
    scores = page.locator(".scores tbody tr")
    expect(scores).to_have_count(len(review["scores"]))
    expect(scores.first.locator(".score")).to_have_text(str(review["scores"][0]["score"]))
    shot(page, "campaign-live")

    headline = page.locator("article.copy .headline").first.inner_text()
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the report (Markdown)").click()
    download = download_info.value
    assert download.suggested_filename == f"campaign-{campaign_id}.md"
    report = Path(download.path()).read_text(encoding="utf-8")
    assert headline in report
    assert "cold-brew green tea" in report

    page.get_by_role("navigation").get_by_role("link", name="Campaigns").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=re.compile("cold-brew")))
    expect(row).to_contain_text("Finished")
    expect(row).to_contain_text("Campaign Kit")
    expect(row).to_contain_text("Instagram, Naver search ad")
    expect(row).to_contain_text("$")
    shot(page, "campaigns")


def test_a_manual_review_is_answered_in_the_live_view(
    pages: Pages, studio: Studio, tmp_path: Path
) -> None:
    page = pages.open()
    log_in(page, studio.member)
    page.get_by_role("link", name="New campaign").first.click()
    upload = page.get_by_label("Or read a brief file")
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("brief: A fax campaign.\nchannels: [fax]\n", encoding="utf-8")
    upload.set_input_files(str(bad_file))
    expect(page.get_by_role("alert")).to_contain_text("Could not read bad.yaml")
    expect(page.get_by_role("alert")).to_contain_text("channels")
    brief_file = tmp_path / "brief.yaml"
    brief_file.write_text(BRIEF_YAML, encoding="utf-8")
    upload.set_input_files(str(brief_file))
    expect(page.get_by_text("Read brief.yaml")).to_be_visible()
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.get_by_label("Brief", exact=True)).to_have_value(re.compile("roasted barley latte"))
    expect(page.get_by_label("Instagram", exact=True)).to_be_checked()
    expect(page.get_by_label("KakaoTalk", exact=True)).to_be_checked()
    expect(page.get_by_label("Email", exact=True)).not_to_be_checked()
    page.get_by_label(re.compile("^Manual")).check()
    page.get_by_role("button", name="Start campaign").click()

    review = page.get_by_role("region", name="Your review")
    expect(review).to_contain_text("The strategy is ready", timeout=FINISH)
    expect(page.locator(".status-holder")).to_have_text("Awaiting your review")
    review.get_by_role("button", name="Approve").click()

    expect(review).to_contain_text("The copy is ready", timeout=FINISH)
    kakao = review.locator(".gate-channel").filter(
        has=page.get_by_role("heading", name="KakaoTalk")
    )
    kakao.get_by_label("Changes to the KakaoTalk copy").fill("Say it is caffeine-free.")
    shot(page, "campaign-review")
    kakao.get_by_role("button", name="Request changes").click()

    # the copywriter revises KakaoTalk's copy, and the copy gate comes again
    revision = page.locator("ol.steps li").filter(has_text="Revision · KakaoTalk")
    expect(revision.first).to_contain_text("done", timeout=FINISH)
    expect(review).to_contain_text("The copy is ready", timeout=FINISH)
    review.get_by_role("button", name="Approve").click()

    expect(page.locator(".status-holder")).to_have_text("Finished", timeout=FINISH)
    expect(review).to_be_hidden()
    expect(page.get_by_role("link", name="Download the report (HTML)")).to_be_visible()


def test_a_campaign_is_cancelled_from_the_live_view(pages: Pages, studio: Studio) -> None:
    page = pages.open()
    log_in(page, studio.member)
    page.get_by_role("link", name="New campaign").first.click()
    page.get_by_label("Brief", exact=True).fill("A summer campaign we will call off.")
    page.get_by_label("Email", exact=True).check()
    page.get_by_label(re.compile("^Manual")).check()
    page.get_by_role("button", name="Start campaign").click()
    # paused for review, it waits: a state that holds until someone acts
    expect(page.get_by_role("region", name="Your review")).to_be_visible(timeout=FINISH)
    page.get_by_role("button", name="Cancel campaign").click()
    expect(page.locator(".status-holder")).to_have_text("Cancelled")
    expect(page.get_by_role("region", name="Your review")).to_be_hidden()
    expect(page.get_by_role("button", name="Cancel campaign")).to_be_hidden()
    page.reload()
    expect(page.locator(".status-holder")).to_have_text("Cancelled")
    expect(page.get_by_role("link", name="Download the report (HTML)")).to_have_count(0)


def test_the_operations_page_shows_usage_providers_routing_and_keys(
    pages: Pages, studio: Studio
) -> None:
    page = pages.open()
    # one call through the gateway, so the usage has something to show
    answer = page.request.post(
        f"{studio.base_url}/api/v1/llm/generate",
        headers={"Authorization": f"Bearer {studio.admin.api_key}"},
        data={"role": "copywriter", "task": "channel_copy", "payload": {"channel": "instagram"}},
    )
    assert answer.ok, answer.text()
    log_in(page, studio.admin)
    page.get_by_role("navigation").get_by_role("link", name="Operations").click()
    expect(page.get_by_role("heading", name="Operations")).to_be_visible()

    usage = page.get_by_role("region", name="Usage")
    expect(usage.get_by_role("img", name=re.compile("Calls per group"))).to_be_visible()
    usage.get_by_label("Group by").select_option("task")
    expect(usage.get_by_role("table")).to_contain_text("channel_copy")
    calls = usage.locator("dl.totals dd").first
    assert int(calls.inner_text()) >= 1

    providers = page.get_by_role("region", name="Providers")
    expect(providers.get_by_role("row").filter(has_text="mock").first).to_contain_text("healthy")
    expect(page.get_by_role("region", name="Routing").get_by_role("row")).not_to_have_count(1)
    shot(page, "operations")

    keys = page.get_by_role("region", name="API keys")
    keys.get_by_label("New key's name").fill("ci-runner")
    keys.get_by_role("button", name="Create key").click()
    expect(keys.locator("code.key")).to_have_text(re.compile(r"\S{20,}"))
    new_key = keys.locator("code.key").inner_text()
    me = page.request.get(
        f"{studio.base_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {new_key}"}
    )
    assert me.ok and me.json()["email"] == studio.admin.email
    keys.get_by_role("button", name="Revoke key ci-runner").click()
    expect(keys.get_by_role("row").filter(has_text="ci-runner")).to_contain_text("revoked")
    refused = page.request.get(
        f"{studio.base_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {new_key}"}
    )
    assert refused.status in (401, 403)


def test_a_member_cannot_open_another_members_campaign_nor_operations(
    pages: Pages, studio: Studio
) -> None:
    page = pages.open()
    started = page.request.post(
        f"{studio.base_url}/api/v1/campaigns",
        headers={"Authorization": f"Bearer {studio.member.api_key}"},
        data={"brief": "A campaign of the member's own.", "channels": ["email"]},
    )
    assert started.status == 202, started.text()
    campaign_id = started.json()["id"]

    log_in(page, studio.other)
    page.goto(f"/studio/campaigns/{campaign_id}")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_text("A campaign of the member's own.")).to_have_count(0)
    shot(page, "campaign-not-found")
    api = page.request.get(f"{studio.base_url}/api/v1/campaigns/{campaign_id}")
    assert api.status == 404

    expect(page.get_by_role("navigation").get_by_role("link", name="Operations")).to_have_count(0)
    page.goto("/studio/operations")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.get_by_text("The operations page is for admins.")).to_be_visible()
    shot(page, "operations-not-allowed")
    assert page.request.get(f"{studio.base_url}/api/v1/usage").status == 403


def test_the_language_follows_the_browser_and_can_be_switched(pages: Pages, studio: Studio) -> None:
    page = pages.open(locale="ko-KR")
    page.goto("/studio")
    expect(page.get_by_role("heading", name="로그인")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "ko")
    page.get_by_label("이메일").fill(studio.member.email)
    page.get_by_label("비밀번호").fill(studio.member.password)
    page.get_by_role("button", name="로그인").click()
    expect(page.get_by_role("heading", name="캠페인")).to_be_visible()
    expect(page.get_by_role("navigation").get_by_role("link", name="브랜드 키트")).to_be_visible()
    shot(page, "campaigns-ko")

    page.get_by_label("언어").select_option("en")
    expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.reload()  # the choice is kept
    expect(page.get_by_role("navigation").get_by_role("link", name="Brand kits")).to_be_visible()
    page.get_by_label("Language").select_option("ko")
    expect(page.get_by_role("button", name="로그아웃")).to_be_visible()


def test_the_studio_fits_a_phone(pages: Pages, studio: Studio) -> None:
    page = pages.open(width=360, height=740)
    started = page.request.post(
        f"{studio.base_url}/api/v1/campaigns",
        headers={"Authorization": f"Bearer {studio.member.api_key}"},
        data={"brief": "Dawon Tea's gift set for Chuseok.", "channels": ["naver_search"]},
    )
    assert started.status == 202, started.text()
    log_in(page, studio.member)
    for path, heading, name in (
        ("/studio", "Campaigns", "phone-campaigns"),
        ("/studio/campaigns/new", "New campaign", "phone-new-campaign"),
        ("/studio/brand-kits", "Brand kits", "phone-brand-kits"),
        (f"/studio/campaigns/{started.json()['id']}", "Campaign", "phone-campaign-live"),
    ):
        page.goto(path)
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        if name == "phone-campaign-live":
            expect(page.locator(".status-holder")).to_have_text("Finished", timeout=FINISH)
            expect(page.locator("figure.image img").first).to_be_visible()
        # nothing wider than the screen: no sideways scrolling
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
        shot(page, name)


def test_logging_out_ends_the_session(pages: Pages, studio: Studio) -> None:
    page = pages.open()
    page.goto("/studio")
    # by keyboard alone: the email field has the focus, Tab to the password, Enter logs in
    expect(page.get_by_label("Email")).to_be_focused()
    page.keyboard.type(studio.admin.email)
    page.keyboard.press("Tab")
    page.keyboard.type(studio.admin.password)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()
    session = next(c for c in page.context.cookies() if c["name"] == "sparklio_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.request.get(f"{studio.base_url}/api/v1/auth/me").status == 401
    # the old cookie is revoked, not only forgotten by the browser
    stale = page.request.get(
        f"{studio.base_url}/api/v1/auth/me",
        headers={"Cookie": f"sparklio_session={session['value']}"},
    )
    assert stale.status == 401
    page.goto("/studio/operations")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


@pytest.fixture
def live_studio(tmp_path: Path) -> Iterator[tuple[Studio, InThread, SlowCopyOllama]]:
    """`sparklio serve` in live mode, every model call going to a SlowCopyOllama."""
    require_browser()
    ollama = SlowCopyOllama()
    fake = InThread(ollama)
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    try:
        running = start_studio(
            tmp_path / "home",
            GENERATOR_MODE="live",
            LLM_ROUTING_FILE=str(routes),
            OLLAMA_BASE_URL=ollama.url,
        )
        try:
            yield running, fake, ollama
        finally:
            running.server.stop()
    finally:
        fake.call(ollama.written.set)  # nothing left waiting on the test
        fake.stop()


@pytest.fixture
def live_pages(
    browser: Any, live_studio: tuple[Studio, InThread, SlowCopyOllama]
) -> Iterator[Pages]:
    yield from watched(browser, live_studio[0])


def test_copy_streams_into_the_live_view_as_the_copywriter_writes_it(
    live_pages: Pages, live_studio: tuple[Studio, InThread, SlowCopyOllama]
) -> None:
    studio, fake, ollama = live_studio
    page = live_pages.open()
    log_in(page, studio.member)
    page.get_by_role("link", name="New campaign").first.click()
    page.get_by_label("Brief", exact=True).fill(BRIEF)
    page.get_by_label("Instagram", exact=True).check()
    page.get_by_role("button", name="Start campaign").click()
    expect(page).to_have_url(re.compile(r"/studio/campaigns/(?!new$)[^/]+$"))
    campaign_id = page.url.rsplit("/", 1)[1]

    step = page.locator("ol.steps li").filter(has_text="Copywriter · Instagram")
    card = page.locator("article.copy").filter(has=page.get_by_role("heading", name="Instagram"))
    # the copy so far, while the copywriter is still at it (its last piece is held back):
    # the headline, and the body under way on a line of its own
    expect(card.locator(".stream")).to_have_text(re.compile(r"\S\n\w+ \w+"), timeout=FINISH)
    expect(step).to_contain_text("working")
    expect(card.locator(".headline")).to_have_count(0)
    so_far = card.locator(".stream").inner_text()
    shot(page, "campaign-streaming")

    fake.call(ollama.written.set)  # the copywriter's last piece comes
    expect(step).to_contain_text("done", timeout=FINISH)
    expect(page.locator(".status-holder")).to_have_text("Finished", timeout=FINISH)
    detail = page.request.get(f"{studio.base_url}/api/v1/campaigns/{campaign_id}")
    assert detail.ok, detail.text()
    copy = next(c for c in detail.json()["result"]["copies"] if c["channel"] == "instagram")
    expect(card.locator(".headline")).to_have_text(copy["headline"])
    expect(card.locator(".body")).to_have_text(copy["body"])
    # what was shown while it was written: the copy's text as far as it had come, no JSON
    lines = so_far.split("\n")
    assert 2 <= len(lines) <= 3, lines
    fields = [copy["headline"], copy["body"], copy["cta"]][: len(lines)]
    assert all(f.startswith(line) for f, line in zip(fields, lines, strict=True)), lines

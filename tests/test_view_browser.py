"""``sdbctl view`` and its ``--html`` file in a real browser: Debian's Chromium driven by Playwright's
Python API (``executable_path``: Playwright's own browser download is not reachable here). The runs are
the airline chat fixtures imported as two runs (sessions 2 and 4 go from pass to fail; session 0 has an
extra lookup, session 1 a missing one; session 2's booking changed its cabin), a copy of the second with
hostile text recorded in it, and the renewal workload replayed under another simulator."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.chat_runs import CHAT, MAP
from tests.conftest import SDBCTL, cli_env, require, run_cli, run_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HOSTILE = "<img src=x onerror=window.__pwned=1></script>"
RLO = "\u202e"

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # pragma: no cover - the dev extras install it
    sync_playwright = None  # type: ignore[assignment]


def _ok(cwd: Path, *args: str) -> None:
    out = run_cli(cwd, *args)
    assert out.returncode == 0, out.stderr


def _hostile_trial(path: Path) -> None:
    """trial-b with hostile text recorded in session 2: in the agent's speech and in the booking's cabin."""
    lines = []
    for line in (CHAT / "trial-b.jsonl").read_text().splitlines():
        task = json.loads(line)
        if task["task_id"] == 2:
            for message in task["traj"]:
                if message["role"] == "assistant" and isinstance(message.get("content"), str):
                    message["content"] = f"{HOSTILE} {RLO}evil {message['content']}"
                for call in message.get("tool_calls") or []:
                    if call["function"]["name"] == "book_reservation":
                        args = json.loads(call["function"]["arguments"])
                        args["cabin"] = f"basic_economy {HOSTILE}{RLO}"
                        call["function"]["arguments"] = json.dumps(args)
        lines.append(json.dumps(task))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def chat_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the two airline trials as runs ``a`` and ``b``, ``h`` (``b`` with hostile text), and
    ``air``: both trials as two repeats of each session."""
    work = tmp_path_factory.mktemp("view-chat")
    _hostile_trial(work / "hostile.jsonl")
    for run, trial in (("a", CHAT / "trial-a.jsonl"), ("b", CHAT / "trial-b.jsonl"), ("h", work / "hostile.jsonl")):
        _ok(work, "import", "chat", str(trial), "--map", MAP, "--run-id", run)
    _ok(
        work,
        "import",
        "chat",
        str(CHAT / "trial-a.jsonl"),
        str(CHAT / "trial-b.jsonl"),
        "--map",
        MAP,
        "--run-id",
        "air",
    )
    return work


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(CHROMIUM and sync_playwright, "Chromium and Playwright", "apt-get install chromium")
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield found
        found.close()


@contextmanager
def served(cwd: Path, *runs: str) -> Iterator[str]:
    """``sdbctl view RUNS --no-browser --port 0`` as a process: the URL it prints first; stopped by Ctrl-C."""
    env = cli_env({"XDG_CACHE_HOME": str(cwd / ".cache")})
    cmd = [str(SDBCTL), "view", *runs, "--no-browser", "--port", "0"]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(120)
    try:
        url = first[0].strip() if first else ""
        assert url.startswith("http://127.0.0.1:") and "?token=" in url, (url, proc.poll())
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@contextmanager
def page_of(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A fresh page and what went wrong on it (console errors and warnings, uncaught exceptions)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
    try:
        yield page, problems
    finally:
        context.close()


def sids(page: Page) -> list[str]:
    """The session ids of the list's rows in the DOM, top to bottom."""
    return list(page.eval_on_selector_all(".srow[data-session]", "rows => rows.map(r => r.dataset.session)"))


def selected(page: Page) -> str | None:
    found = page.query_selector(".srow.selected")
    return found.get_attribute("data-session") if found else None


def wait_list(page: Page, predicate: Callable[[list[str]], bool], what: str) -> list[str]:
    """The list's ids once ``predicate`` holds of them (the list comes in pages, after the header)."""
    for _ in range(200):
        ids = sids(page)
        if ids and predicate(ids):
            return ids
        page.wait_for_timeout(50)
    pytest.fail(f"the list never showed {what}: {sids(page)}")


def open_session(page: Page, url: str, session: str) -> None:
    page.goto(f"{url}#session={session}&rep=0")
    page.wait_for_function("id => document.querySelector('.dhead h2 code')?.textContent === id", arg=session)


def check_the_page(page: Page, url: str, problems: list[str], browser: Browser) -> None:
    """What both forms of the page must show of the chat diff a -> b (or a -> h)."""
    page.goto(url)
    ids = wait_list(page, lambda ids: len(ids) == 5, "five sessions")
    assert set(ids[:2]) == {"2", "4"}, ids  # the flipped sessions lead
    assert "pass → fail" in page.inner_text(f'.srow[data-session="{ids[0]}"]')
    assert "pass → fail" not in page.inner_text('.srow[data-session="3"]')
    page.wait_for_selector(".arow")
    assert selected(page) == ids[0]  # the most severe session opens first

    # j moves the selection down the list, k back; the address follows
    page.locator("body").press("j")
    page.wait_for_function("id => document.querySelector('.srow.selected')?.dataset.session === id", arg=ids[1])
    assert f"session={ids[1]}" in page.url
    page.locator("body").press("k")
    page.wait_for_function("id => document.querySelector('.srow.selected')?.dataset.session === id", arg=ids[0])

    # a filter narrows the list: "/" focuses it; the text matches an action's name
    page.locator("body").press("/")
    page.keyboard.type("book_reservation")
    wait_list(page, lambda ids: ids == ["2"], "session 2 alone")
    assert page.inner_text("#list-count") == "1 session"
    page.fill("#f-text", "")
    wait_list(page, lambda ids: len(ids) == 5, "five sessions again")
    page.select_option("#f-outcome", "pass->fail")
    assert set(wait_list(page, lambda ids: len(ids) == 2, "the two flips")) == {"2", "4"}
    page.select_option("#f-outcome", "")
    page.check("#f-differ")
    assert "3" not in wait_list(page, lambda ids: len(ids) == 4, "the four sessions that differ")
    page.uncheck("#f-differ")

    # a gap where the base has no action (session 0: an extra lookup) and where the candidate has none (1)
    open_session(page, url, "0")
    gap = page.locator(".arow.current .cell.gap.base")
    assert gap.count() == 1 and "get_user_details" in gap.inner_text() and "extra" in gap.inner_text()
    assert page.locator(".arow.current .cell.candidate .name").inner_text() == "get_user_details"
    open_session(page, url, "1")
    assert "missing" in page.locator(".arow.current .cell.gap.candidate").inner_text()

    # the changed field lit on both sides, the divergence explained, the first divergence current
    open_session(page, url, "2")
    cabin = page.locator('.arow.current .args li.changed[data-path="cabin"]')
    assert cabin.count() == 2, page.inner_text(".arow.current")
    assert "economy" in cabin.nth(0).inner_text() and "basic_economy" in cabin.nth(1).inner_text()
    assert page.locator('.arow.current .args li.changed[data-path="origin"]').count() == 0  # only what changed
    why = page.inner_text(".arow.current .why")
    assert "first write divergence" in why and "args_changed" in why and "cabin" in why

    # n/p move to the next/previous divergence (session 4 has three), the address names it and reopens it
    open_session(page, url, "4")
    rows = page.eval_on_selector_all(".arow.div", "rows => rows.map(r => r.classList.contains('current'))")
    assert len(rows) == 3 and rows.count(True) == 1, rows
    before = page.url
    page.locator("body").press("n" if not rows[-1] else "p")
    page.wait_for_function("u => location.href !== u", arg=before)
    assert "seq=" in page.url
    current = page.inner_text(".arow.current")
    with page_of(browser) as (again, more):
        again.goto(page.url)
        again.wait_for_selector(".arow.current")
        assert again.inner_text(".dhead h2 code") == "4" and again.inner_text(".arow.current") == current
        assert again.locator(".arow").count() == page.locator(".arow").count()
        assert more == []
    assert problems == []


def test_the_served_page_sorts_filters_moves_aligns_and_links(browser: Browser, chat_store: Path) -> None:
    with served(chat_store, "a", "b") as url, page_of(browser) as (page, problems):
        check_the_page(page, url, problems, browser)
        # a model call opens on click, fetched with the token
        open_session(page, url, "2")
        page.locator(".arow.current .cell.candidate .callbtn").click()
        page.wait_for_selector(".arow.current .call .msg")
        assert "book" in page.inner_text(".arow.current .call").lower()
        assert problems == []


# a request answered 0.4 s late when window.slowIf(url) says so (set by the test once the page is up)
SLOW_REQUESTS = """(() => {
  const fetch = window.fetch.bind(window);
  window.fetch = (url, options) => window.slowIf && window.slowIf(String(url))
    ? new Promise(done => setTimeout(done, 400)).then(() => fetch(url, options)) : fetch(url, options);
})();"""


def test_a_filters_list_is_not_replaced_by_an_earlier_filters_late_answer(browser: Browser, chat_store: Path) -> None:
    """Two filter changes in a row: the earlier one's list, arriving last, must not replace the later's
    (it did, at random, on a busy machine: "only sessions that differ" showed all five sessions)."""
    with served(chat_store, "a", "b") as url, page_of(browser) as (page, problems):
        page.add_init_script(SLOW_REQUESTS)
        page.goto(url)
        wait_list(page, lambda ids: len(ids) == 5, "five sessions")
        late = "url => url.includes('/api/sessions') && !url.includes('differ_only=1')"
        page.evaluate(f"() => {{ window.slowIf = {late}; }}")
        page.select_option("#f-outcome", "pass->fail")  # answered late: two sessions
        page.select_option("#f-outcome", "")  # answered late: five
        page.check("#f-differ")  # answered at once: four
        wait_list(page, lambda ids: len(ids) == 4, "the four sessions that differ")
        page.wait_for_timeout(1000)  # the late answers have come by now
        assert len(sids(page)) == 4 and page.inner_text("#list-count") == "4 sessions", sids(page)
        assert problems == []


def test_a_session_asked_for_last_is_the_one_shown_whatever_answers_last(browser: Browser, chat_store: Path) -> None:
    """j pressed twice quickly: the first session's detail, arriving last, must not replace the second's."""
    with served(chat_store, "a", "b") as url, page_of(browser) as (page, problems):
        page.add_init_script(SLOW_REQUESTS)
        page.goto(url)
        ids = wait_list(page, lambda ids: len(ids) == 5, "five sessions")
        page.wait_for_function("id => document.querySelector('.dhead h2 code')?.textContent === id", arg=ids[0])
        page.evaluate(f"() => {{ window.slowIf = url => url.includes('/api/session?id={ids[1]}&'); }}")
        page.locator("body").press("j")  # answered late
        page.locator("body").press("j")  # answered at once
        page.wait_for_function("id => document.querySelector('.dhead h2 code')?.textContent === id", arg=ids[2])
        page.wait_for_timeout(1000)  # the late answer has come by now
        assert page.inner_text(".dhead h2 code") == ids[2] and selected(page) == ids[2]
        assert f"session={ids[2]}" in page.url and problems == []


def test_repeats_are_grouped_with_their_agreement_and_open_where_they_diverged(
    browser: Browser, chat_store: Path
) -> None:
    with served(chat_store, "a", "air") as url, page_of(browser) as (page, problems):
        page.goto(url)
        wait_list(page, lambda ids: sorted(ids) == ["0", "1", "2", "3", "4"], "one row a session")
        assert "1/2 equal" in page.inner_text('.srow[data-session="0"]')  # trial 0 equal, trial 1 not
        page.click('.srow[data-session="0"]')
        page.wait_for_function("() => document.querySelector('.dhead .reps a.current')?.textContent === '1'")
        assert "session=0&rep=1" in page.url and page.locator(".arow.current .cell.gap.base").count() == 1
        # the detail is drawn again when its data arrives: click once nothing is in flight, and again if
        # the click landed on the drawing it replaced
        page.wait_for_load_state("networkidle")
        for _ in range(3):
            page.click(".dhead .reps a:not(.current)")
            try:
                page.wait_for_function(
                    "() => document.querySelector('.dhead .reps a.current')?.textContent === '0'", timeout=10_000
                )
                break
            except PlaywrightTimeout:
                page.wait_for_load_state("networkidle")
        else:
            raise AssertionError("repeat 0 never opened")
        assert "no divergence in this repeat" in page.inner_text(".dhead")
        assert problems == []


def test_the_page_without_its_token_shows_nothing_of_the_store(browser: Browser, chat_store: Path) -> None:
    with served(chat_store, "a", "b") as url, page_of(browser) as (page, _):
        response = page.goto(url.split("?")[0])
        assert response is not None and response.status == 403
        assert page.locator(".srow").count() == 0 and "book_reservation" not in page.content()


def _hostile_is_text(page: Page) -> None:
    open_session(page, page.url.split("#")[0], "2")
    page.wait_for_selector(".esc")
    body = page.inner_text("#detail")
    assert HOSTILE in body  # shown, as text
    assert "\\u202e" in body and RLO not in body  # the override shown escaped, never applied
    assert page.locator("#detail img").count() == 0 and page.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None
    cabin = page.locator('.arow.current .args li.changed[data-path="cabin"]')
    assert HOSTILE in cabin.nth(1).inner_text()


def test_hostile_text_renders_as_text_in_the_served_page(browser: Browser, chat_store: Path) -> None:
    with served(chat_store, "a", "h") as url, page_of(browser) as (page, problems):
        page.goto(url)
        wait_list(page, lambda ids: len(ids) == 5, "five sessions")
        _hostile_is_text(page)
        assert problems == []


# invisible characters of every kind sdb/text.py escapes: zero-width space and joiner, BOM, word joiner,
# line and paragraph separators, a bidi override, a control character, a noncharacter
INVISIBLE = "\u200b\u200d\ufeff\u2060\u2028\u2029\u202e\x07\ufffe"


def test_invisible_characters_show_escaped_everywhere_on_the_page_even_in_the_action_filter(
    browser: Browser, tmp_path: Path
) -> None:
    """The filter's options held action names raw, and zero-width characters, the BOM and U+2028 went
    through everywhere: a name could disguise itself. An emoji stays an emoji."""
    from sdbctl.recorders.sdk import Recorder

    for run, name in (("zb", "send_offer"), ("zc", f"send{INVISIBLE}offer")):
        with Recorder(store=tmp_path / ".sdb", run_id=run) as rec:
            s = rec.session(f"s{INVISIBLE}1")
            llm = s.llm({"messages": []}, {}, model="m", step="a")
            s.action(name, {"note": f"ok \U0001f600 {INVISIBLE}"}, step="a", parent=llm)
    with served(tmp_path, "zb", "zc") as url, page_of(browser) as (page, problems):
        page.goto(url)
        wait_list(page, lambda ids: len(ids) == 1, "the session")
        page.wait_for_selector(".arow")
        shown = page.evaluate(
            """() => { const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); let all = "";
                       while (w.nextNode()) all += w.currentNode.nodeValue; return all; }"""
        )
        options = page.eval_on_selector_all("#f-action option", "os => os.map(o => o.textContent)")
        for text in (shown, *options):
            assert not [c for c in INVISIBLE if c in text], [hex(ord(c)) for c in INVISIBLE if c in text]
        assert any("send\\u200b\\u200d\\ufeff\\u2060\\u2028\\u2029\\u202e\\x07\\ufffeoffer" in o for o in options)
        assert "\U0001f600" in shown and problems == []


def test_the_html_file_is_the_same_page_with_its_data_inside(browser: Browser, chat_store: Path) -> None:
    out = run_cli(chat_store, "diff", "a", "h", "--html", "view-a-h.html")
    assert out.returncode == 0, out.stderr
    path = chat_store / "view-a-h.html"
    text = path.read_text()
    assert HOSTILE not in text and "<img" not in text  # the data block holds no markup
    with page_of(browser) as (page, problems):
        check_the_page(page, path.as_uri(), problems, browser)
        _hostile_is_text(page)
        assert problems == []


def test_the_renewal_workload_shows_its_changed_offer(browser: Browser, tmp_path: Path) -> None:
    # as processes: Playwright's event loop runs in this thread, and the recorder's asyncio.run would not
    for args in (("record", "contract-renewal", "-n", "12", "--run-id", "base"),
                 ("replay", "base", "--model", "sim:renewal@v3", "--run-id", "v3")):  # fmt: skip
        out = run_process(tmp_path, *args)
        assert out.returncode == 0, out.stderr
    with served(tmp_path, "base", "v3") as url, page_of(browser) as (page, problems):
        page.goto(url)
        ids = wait_list(page, lambda ids: len(ids) == 12, "twelve sessions")
        page.wait_for_selector(".arow.current")
        assert "args_changed" in page.inner_text(f'.srow[data-session="{ids[0]}"]')
        assert "equal" in page.inner_text(f'.srow[data-session="{ids[-1]}"]')  # equal sessions last
        changed = page.eval_on_selector_all(".arow.current .args li.changed", "lis => lis.map(l => l.dataset.path)")
        assert set(changed) >= {"plan"}, changed
        assert "propose_offer" in page.inner_text(".arow.current .cell.candidate .name")
        page.select_option("#f-reason", "args_changed")
        wait_list(page, lambda found: sorted(found) == sorted(ids[:4]), "the four sessions whose offer changed")
        assert problems == []

"""``sdbctl view``'s server (a real process on real runs: the token, the Host check, the headers, the JSON
routes, a path that never reaches the file system, Ctrl-C) and the page as one file (``--html``)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import select
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import sdbctl.fixtures.workloads
from sdbctl.recorders.sdk import Recorder
from sdbctl.recorders.workload import record_workload
from sdbctl.sdb.agents import load_agent
from sdbctl.sdb.replay import ReplayOptions, replay
from sdbctl.sdb.store import Store
from sdbctl.sdb.view import _page
from sdbctl.sdb.view._server import CSP, ViewServer
from tests.conftest import CLI, SDBCTL, assert_one_line_error, cli_env

sdbctl.fixtures.workloads.register_all()

HOSTILE = "</script><img src=x onerror=alert(1)>"


def _hostile_runs(store: Path) -> None:
    """Two small runs whose recorded text holds a script end tag and an image with a handler."""
    for run, value in (("base", "plain"), ("cand", HOSTILE)):
        with Recorder(store=store, run_id=run) as rec:
            for i in range(3):
                s = rec.session(f"s{i}-{HOSTILE}" if i == 0 else f"s{i}")
                llm = s.llm({"messages": [{"role": "user", "content": HOSTILE}]}, {}, model="m", step="st")
                s.action("send", {"text": value if i == 0 else "same", "note": HOSTILE}, step="st", parent=llm)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording of the renewal workload and a replay of it under another model version (its
    manifest names the recording as its source run)."""
    store = tmp_path_factory.mktemp("view") / ".sdb"
    record_workload(load_agent("contract-renewal"), "contract-renewal", sessions=8, store=str(store), run_id="base")
    replay(Store.open(store), "base", ReplayOptions(model="sim:renewal@v3", run_id="v3"))
    return store


class Served:
    """A running ``sdbctl view`` process and what it printed first."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url
        found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]+)", url)
        assert found, url
        self.port, self.token = int(found.group(1)), found.group(2)
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, *, token: str | None = None, host: str | None = None) -> httpx.Response:
        headers = {"X-Sdb-Token": token} if token is not None else {}
        if host is not None:
            headers["Host"] = host
        return httpx.get(self.base + path, headers=headers, timeout=30)

    def raw(self, path: str) -> http.client.HTTPResponse:
        """A GET of ``path`` sent as it is (httpx would resolve a ``..``), with the token."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers={"X-Sdb-Token": self.token})
        answer = conn.getresponse()
        answer.read()
        conn.close()
        return answer


def _start(store: Path, *args: str) -> Served:
    proc = subprocess.Popen(
        [str(SDBCTL), "view", *args, "--no-browser", "--port", "0", "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline().strip() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"sdbctl view printed no URL: {err[-2000:]}")
    return Served(proc, line)


def _stop(served: Served) -> tuple[int, str]:
    served.proc.send_signal(signal.SIGINT)
    try:
        _, err = served.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        _, err = served.proc.communicate()
    return served.proc.returncode, err


@pytest.fixture(scope="module")
def served(runs: Path) -> Iterator[Served]:
    view = _start(runs, "base", "v3")
    yield view
    if view.proc.poll() is None:
        _stop(view)


def test_the_url_is_the_first_line_on_loopback_with_a_random_token(served: Served) -> None:
    assert len(served.token) >= 40  # token_urlsafe(32)
    answer = served.get(f"/?token={served.token}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert served.token not in answer.text  # the page reads it from its address, never inlined


def test_no_token_a_wrong_token_and_a_foreign_host_are_refused(served: Served) -> None:
    for path in ("/", "/api/header", "/api/sessions"):
        assert served.get(path).status_code == 403, path
        assert served.get(path, token="x" * len(served.token)).status_code == 403, path
        assert served.get(f"{path}?token={served.token[:-1]}").status_code == 403, path
        assert served.get(f"{path}?token=%C3%A9").status_code == 403, path  # not ASCII: refused, not a 500
    rebound = served.get("/api/header", token=served.token, host=f"evil.example:{served.port}")
    assert rebound.status_code == 403
    assert served.get("/static/view.js", host="evil.example").status_code == 403  # before any route
    assert served.get("/api/header", token=served.token, host=f"localhost:{served.port}").status_code != 403


def test_every_answer_carries_the_csp_and_the_other_headers(served: Served) -> None:
    answers = [
        served.get("/api/header"),  # 403
        served.get("/api/nothing", token=served.token),  # 404
        served.get("/api/session?rep=x", token=served.token),  # 400
        served.get("/static/view.css"),
        served.get(f"/?token={served.token}"),
        httpx.post(f"{served.base}/api/header", headers={"X-Sdb-Token": served.token}, timeout=30),  # 405
    ]
    assert [a.status_code for a in answers] == [403, 404, 400, 200, 200, 405]
    for a in answers:
        assert a.headers["content-security-policy"] == CSP
        assert a.headers["x-content-type-options"] == "nosniff"
        assert a.headers["referrer-policy"] == "no-referrer"
        assert a.headers["cache-control"] == "no-store"


def test_the_json_routes_answer_with_the_token(served: Served) -> None:
    header = served.get("/api/header", token=served.token)
    assert header.status_code == 200, header.text
    assert header.json()["base_run"] == "base" and header.json()["candidate_run"] == "v3"
    page = served.get(f"/api/sessions?limit=3&token={served.token}")  # the query's token works too
    assert page.status_code == 200, page.text
    listed = page.json()
    assert listed["total"] == 8 and len(listed["rows"]) == 3
    first = listed["rows"][0]["session_id"]
    one = served.get(f"/api/session?id={first}&rep=0", token=served.token)
    assert one.status_code == 200, one.text
    assert one.json()["session_id"] == first and one.json()["rows"]
    unknown = served.get("/api/session?id=no-such-session", token=served.token)
    assert unknown.status_code == 404 and "no-such-session" in unknown.json()["error"]
    assert served.get("/api/sessions?offset=-1", token=served.token).status_code == 400
    # beyond what a query's integer holds: refused as the others are, not a 500
    huge = served.get("/api/sessions?offset=" + "9" * 30, token=served.token)
    assert huge.status_code == 400 and "offset" in huge.json()["error"], huge.text


def test_no_path_reaches_the_file_system(served: Served) -> None:
    assert served.raw("/static/view.js").status == 200
    for path in (
        "/static/../pyproject.toml",
        "/static/%2e%2e/pyproject.toml",
        "/static/..%2fpyproject.toml",
        "/static//etc/passwd",
        "/static/view.html",
        "/static/_server.py",
        "/../pyproject.toml",
        "/pyproject.toml",
    ):
        assert served.raw(path).status == 404, path


def test_ctrl_c_stops_the_server_with_exit_0(runs: Path) -> None:
    view = _start(runs, "v3")  # RUN: compared with the run it was replayed from
    assert view.get("/api/header", token=view.token).json()["base_run"] == "base"
    status, err = _stop(view)
    assert status == 0, err
    assert err.splitlines()[-1] == "stopped" and "Traceback" not in err
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{view.base}/static/view.css", timeout=5)


def test_errors_are_one_line_exit_2(sdbctl: CLI, tmp_path: Path) -> None:
    _hostile_runs(tmp_path / ".sdb")
    assert_one_line_error(sdbctl("view", "base", "nope", "--no-browser"), "nope")
    assert_one_line_error(sdbctl("view", "cand", "--no-browser"), "cand", "no source run", "sdbctl view BASE")
    assert_one_line_error(sdbctl("view", "a", "b", "c", "--no-browser"), "BASE CANDIDATE or one RUN")
    assert_one_line_error(sdbctl("view", "base", "cand", "--port", "70000", "--no-browser"), "--port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(
            sdbctl("view", "base", "cand", "--port", str(port), "--no-browser"), f"--port {port}", "in use"
        )


def _data_block(page: str) -> str:
    found = re.search(r'<script type="application/json" id="sdb-data">(.*?)</script>', page, re.S)
    assert found, "no embedded data"
    return found.group(1)


def _assert_csp_matches(page: str) -> None:
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert csp, "no CSP meta"
    policy = dict(part.strip().split(" ", 1) for part in csp.group(1).split(";"))
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    for directive, text in (("script-src", scripts[0]), ("style-src", styles[0])):
        digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
        assert policy[directive] == f"'sha256-{digest}'", directive
    assert policy["default-src"] == "'none'"
    assert "<script src" not in page
    assert "stylesheet" not in page


def test_diff_html_is_one_file_with_hostile_text_escaped_and_its_csp_hashes(sdbctl: CLI, tmp_path: Path) -> None:
    _hostile_runs(tmp_path / ".sdb")
    out = sdbctl("diff", "base", "cand", "--html", "view.html")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "view.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    data = _data_block(page)
    assert "</script" not in data.lower() and "<" not in data
    embedded = json.loads(data)
    assert HOSTILE in json.dumps(embedded, ensure_ascii=False).replace("\\/", "/")  # the recorded text, as it is
    assert embedded["header"]["candidate_run"] == "cand"
    assert any(r["session_id"] == f"s0-{HOSTILE}" for r in embedded["sessions"])
    _assert_csp_matches(page)


class _StandIn:
    """A view with hostile text everywhere a recorded string goes, for the renderer alone."""

    def header(self) -> dict[str, Any]:
        return {"base_run": "b", "candidate_run": f"c{HOSTILE}", "note": "\u2028\u202e<!--&"}

    def sessions(self, **_: Any) -> dict[str, Any]:
        rows = [{"session_id": f"s{i}{HOSTILE}", "repeats": {"n": 2, "equal": 1}} for i in range(60)]
        return {"total": 700, "offset": 0, "rows": rows}

    def session(self, session_id: str, repeat: int = 0) -> dict[str, Any]:
        return {"session_id": session_id, "repeat": repeat, "rows": [{"text": HOSTILE + "\U0001f600"}]}

    def details(self, keys: list[tuple[str, int]]) -> list[dict[str, Any]]:
        return [self.session(session_id, repeat) for session_id, repeat in keys]

    def close(self) -> None:
        pass


def test_render_file_embeds_escaped_json_limits_and_notes_what_it_left_out() -> None:
    page = _page.render_file(_StandIn())  # type: ignore[arg-type]
    data = _data_block(page)
    assert re.fullmatch(r"[\x20-\x7e]*", data)  # ASCII only: no U+2028, no bidi override, no markup
    embedded = json.loads(data)
    assert embedded["header"]["candidate_run"] == f"c{HOSTILE}"
    assert embedded["header"]["note"] == "\u2028\u202e<!--&"
    assert len(embedded["details"]) == 2 * _page.MAX_DETAILS  # every repeat of the 50 most severe
    assert embedded["details"][f"s0{HOSTILE}#1"]["rows"][0]["text"] == HOSTILE + "\U0001f600"
    assert embedded["limit_note"] == f"640 more sessions: run `sdbctl view b 'c{HOSTILE}'`"
    _assert_csp_matches(page)


class _Broken(_StandIn):
    def header(self) -> dict[str, Any]:
        raise RuntimeError("a bug\non two lines")


def test_an_error_answering_is_a_500_logged_once_and_the_server_goes_on(capfd: pytest.CaptureFixture[str]) -> None:
    server = ViewServer(_Broken(), port=0)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, name="test-view-server")
    thread.start()
    try:
        headers = {"X-Sdb-Token": server.token}
        broken = httpx.get(f"http://127.0.0.1:{server.port}/api/header", headers=headers, timeout=30)
        assert broken.status_code == 500
        assert broken.json() == {"error": "RuntimeError: a bug on two lines"}
        assert broken.headers["content-security-policy"] == CSP
        after = httpx.get(f"http://127.0.0.1:{server.port}/api/sessions", headers=headers, timeout=30)
        assert after.status_code == 200 and after.json()["total"] == 700
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    out, err = capfd.readouterr()
    assert out == ""  # no request log
    assert err.count("RuntimeError: a bug on two lines") == 1 and len(err.splitlines()) == 1, err


def test_the_browser_is_opened_on_a_private_page_never_with_the_token_on_its_command_line(
    sdbctl: CLI, runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The browser's command line is readable by every user of the machine (``ps``): it is given a
    file only this user can read, which sends it on to the URL with the token; the file goes with the
    server."""
    import os
    import stat
    import webbrowser
    from urllib.parse import urlsplit as split
    from urllib.request import url2pathname

    opened: list[str] = []

    def fake_open(url: str, *args: object, **kwargs: object) -> bool:
        opened.append(url)
        page = Path(url2pathname(split(url).path))
        assert stat.S_IMODE(os.stat(page).st_mode) == 0o600
        assert "?token=" in page.read_text(encoding="utf-8")
        raise KeyboardInterrupt  # as Ctrl-C: the command stops the server, exit 0

    monkeypatch.setattr(webbrowser, "open", fake_open)
    out = sdbctl("view", "base", "v3", "--store", str(runs))
    assert out.returncode == 0, out.stderr
    url = out.stdout.splitlines()[0]
    token = url.split("token=", 1)[1]
    assert len(opened) == 1 and opened[0].startswith("file://") and token not in opened[0], opened
    assert not Path(url2pathname(split(opened[0]).path)).exists()

"""The playground in a real browser (Debian's Chromium, headless, driven by Playwright) against a
real server: a photo with two faces in, two boxes and two cards out; the copied curl and Python
requests run and answer the same; with auth on, the 401 message first, then it works with a key.

Sync Playwright in plain `def` tests: it runs its own loop, which must not be nested in the
session's asyncio loop (async tests never run it)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    JSHandle,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.conftest import KEYED_ADAPTER, KEYED_ADAPTERS, KEYS, ServerProcess
from tests.images import astronaut, cat, encode, two_faces

pytestmark = [pytest.mark.e2e, pytest.mark.engine]

KEY = KEYS[0]
ADAPTER = KEYED_ADAPTER
ANSWER_TIMEOUT_MS = 120_000  # two faces, every attribute with confidences, on a busy machine
WIDE: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: `make tools` installs it"
    with sync_playwright() as playwright:
        # Chromium's sandbox cannot start as root, and CI runs as root.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "two-faces.jpg"
    path.write_bytes(encode(two_faces()))
    return path


@pytest.fixture(scope="module")
def auth_server(keyed_server: ServerProcess) -> ServerProcess:
    """A server with keys, and adapters for the page's model list to offer."""
    return keyed_server


class Playground:
    """One tab on the page, recording what the browser reports as errors (CSP refusals too)."""

    def __init__(self, browser: Browser, base_url: str, viewport: ViewportSize) -> None:
        self.page: Page = browser.new_context(viewport=viewport).new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{base_url}/")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def ask_only(self, attribute: str) -> None:
        """One attribute, plain values: quick answers where the answers are not the point."""
        expect(self.page.locator("#attribute-list input")).not_to_have_count(0)
        self.page.click("#attributes-none")
        self.page.check(f"#attr-{attribute}")
        self.page.uncheck("#confidence")

    def choose(self, photo: Path) -> None:
        """Pick the photo (the page analyses it at once) and wait for two boxes and cards."""
        self.page.set_input_files("#photo-file", photo)
        boxes = self.page.locator("#overlay .face-box")
        expect(boxes).to_have_count(2, timeout=ANSWER_TIMEOUT_MS)
        expect(self.page.locator("#faces .face-card")).to_have_count(2)

    def boxes(self) -> list[list[int]]:
        """Each drawn box as [x, y, w, h], in the photo's pixels (the overlay's viewBox)."""
        return [
            [int(rect.get_attribute(name) or -1) for name in ("x", "y", "width", "height")]
            for rect in self.page.locator("#overlay .face-box").all()
        ]

    def close(self) -> None:
        self.page.context.close()


def analyze_directly(base_url: str, photo: Path) -> dict[str, Any]:
    image = f"data:image/jpeg;base64,{base64.b64encode(photo.read_bytes()).decode()}"
    r = httpx.post(f"{base_url}/v1/faces/analyze", json={"image": image}, timeout=120)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def screenshot(page: Page, path: Path) -> None:
    """A test artifact: the whole page as a person would see it."""
    page.screenshot(path=path, full_page=True)
    print(f"screenshot: {path}")


def test_two_faces_boxed_and_answered(
    browser: Browser, real_server: ServerProcess, photo: Path, tmp_path: Path
) -> None:
    tab = Playground(browser, real_server.base_url, WIDE)
    expect(tab.page.locator("#attribute-list input:checked")).not_to_have_count(0)
    tab.choose(photo)
    page = tab.page

    api = analyze_directly(real_server.base_url, photo)
    faces: list[dict[str, Any]] = api["faces"]
    assert tab.boxes() == [[f["bbox"][k] for k in "xywh"] for f in faces]  # as the API answered
    landmarks = sum(len(face.get("landmarks") or {}) for face in faces)
    expect(page.locator("#overlay .landmark")).to_have_count(landmarks)

    schema = httpx.get(f"{real_server.base_url}/v1/faces/schema").json()
    for card in page.locator("#faces .face-card").all():
        expect(card.locator("dt")).to_have_count(len(schema["properties"]))
        # Confidences are on by default: each attribute has a bar for its value at least.
        assert card.locator("meter").count() >= len(schema["properties"])
    stamps = page.locator("#stamps")
    expect(stamps).to_contain_text(api["versions"]["schema"])
    expect(stamps).to_contain_text("ms")
    expect(page.locator("#error")).to_be_hidden()
    screenshot(page, tmp_path / "playground.png")

    # The same answer on a phone: one column, nothing wider than the screen.
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways at {PHONE['width']} px: {width}"
    screenshot(page, tmp_path / "playground-phone.png")
    assert not tab.errors, tab.errors  # a CSP refusal or a script error would be listed
    tab.close()


def test_copied_requests_run(browser: Browser, real_server: ServerProcess, photo: Path) -> None:
    """The form's choices reach the request, and the copied curl and Python send that request:
    run from the photo's folder, both answer as the page did."""
    tab = Playground(browser, real_server.base_url, WIDE)
    page = tab.page
    tab.ask_only("age_group")
    page.fill("#max-faces", "1")
    page.set_input_files("#photo-file", photo)
    card = page.locator("#faces .face-card")
    expect(card).to_have_count(1, timeout=ANSWER_TIMEOUT_MS)
    expect(card.locator("dt")).to_have_text(["age group"])

    curl = page.locator("#curl-code").inner_text()
    python = page.locator("#python-code").inner_text()
    for snippet in (curl, python):
        assert photo.name in snippet
        assert len(snippet) < 2000  # the photo stays a path, not base64
    runs = {
        "curl": ["bash", "-c", curl],
        "python": [sys.executable, "-c", python],
    }
    for name, command in runs.items():
        done = subprocess.run(
            command, cwd=photo.parent, capture_output=True, text=True, timeout=180, check=False
        )
        assert done.returncode == 0, (name, done.stderr)
        answer = json.loads(done.stdout)
        (face,) = answer["faces"]
        assert list(face["attributes"]) == ["age_group"], name
        assert isinstance(face["attributes"]["age_group"], str), name
    assert not tab.errors, tab.errors
    tab.close()


# What a drop or a paste hands the page: a File in a DataTransfer.
_TRANSFER = """([name, base64]) => {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
    return transfer;
}"""
_PASTE = """(transfer) => document.dispatchEvent(
    new ClipboardEvent("paste", { clipboardData: transfer })
)"""


def test_drop_and_paste_reach_the_server(browser: Browser, real_server: ServerProcess) -> None:
    """A dropped cat: the server's own 422 message. A pasted face: answered."""
    tab = Playground(browser, real_server.base_url, WIDE)
    page = tab.page
    tab.ask_only("eyewear")

    def transfer(name: str, image: bytes) -> JSHandle:
        return page.evaluate_handle(_TRANSFER, [name, base64.b64encode(image).decode()])

    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer("cat.jpg", encode(cat()))})
    error = page.locator("#error")
    expect(error).to_contain_text("422 no_face_detected: No face was detected in the image")
    expect(page.locator("#photo-file")).to_have_js_property("files.length", 1)
    assert "cat.jpg" in page.locator("#curl-code").inner_text()

    page.evaluate(_PASTE, transfer("pasted.jpg", encode(astronaut())))
    expect(page.locator("#faces .face-card")).to_have_count(1, timeout=ANSWER_TIMEOUT_MS)
    expect(error).to_be_hidden()
    assert "pasted.jpg" in page.locator("#python-code").inner_text()
    # The browser's own note on the refused call is the only error.
    assert len(tab.errors) == 1 and "422" in tab.errors[0], tab.errors
    tab.close()


def test_keyboard_reaches_the_photo_input(browser: Browser, real_server: ServerProcess) -> None:
    tab = Playground(browser, real_server.base_url, WIDE)
    expect(tab.page.locator("#attribute-list input")).not_to_have_count(0)
    tab.page.keyboard.press("Tab")
    expect(tab.page.locator("#photo-file")).to_be_focused()
    photo_input = tab.page.get_by_label("Photo: drop one here, paste one, or choose a file")
    expect(photo_input).to_be_visible()  # the label names it
    tab.close()


def test_with_auth_the_key_is_asked_then_used(
    browser: Browser, auth_server: ServerProcess, photo: Path, tmp_path: Path
) -> None:
    tab = Playground(browser, auth_server.base_url, WIDE)
    page = tab.page
    # Without a key: the server's own 401 message, and the key field has the focus.
    error = page.locator("#error")
    expect(error).to_contain_text("401")
    expect(error).to_contain_text("Missing or invalid API key")
    expect(page.locator("#api-key")).to_be_focused()

    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    models = ["demo", *KEYED_ADAPTERS]  # the base model and the adapters
    expect(page.locator("#model option")).to_have_count(len(models))
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == models
    page.select_option("#model", ADAPTER)
    page.uncheck("#confidence")  # not what this test is about: the plain answer is quicker
    tab.choose(photo)
    expect(page.locator("#stamps")).to_contain_text(ADAPTER)  # versions.adapter
    expect(error).to_be_hidden()

    # The key lives in this tab's sessionStorage only, and the copied code names a variable.
    assert page.evaluate("Object.values(sessionStorage)") == [KEY]
    assert page.evaluate("localStorage.length") == 0
    for code in ("#curl-code", "#python-code"):
        text = page.locator(code).inner_text()
        assert KEY not in text
        assert "FACELLM_API_KEY" in text
    curl = page.locator("#curl-code").inner_text()
    done = subprocess.run(
        ["bash", "-c", curl],
        cwd=photo.parent,
        env={**os.environ, "FACELLM_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert len(json.loads(done.stdout)["faces"]) == 2, done.stdout[:500] + done.stderr
    screenshot(page, tmp_path / "playground-auth.png")
    # The only errors are the browser's notes on the refused calls before the key.
    assert all("401" in e for e in tab.errors), tab.errors
    tab.close()

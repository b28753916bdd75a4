"""The page in headless Chromium, driven over the DevTools protocol: fill the attributes, upload a photo into the
file input, press Describe, read the verdicts, the chosen photo and the text. Without Chromium (or the
websocket client) only the served page is checked (test_service.test_page_is_served), as the report test does."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

import pytest


class DevTools:
    """A tiny DevTools-protocol client on one page target: send a command, wait for its answer."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 180.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.fixture
def chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on this machine (the served page is checked by test_page_is_served)")
    pytest.importorskip("websocket")
    profile = tmp_path / "profile"
    proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_page_upload_press_read(chromium, server, generated, tmp_path):
    listing = next(l for l in generated["single"] if len(l.photos) >= 2)
    paths = []
    for i, photo in enumerate(listing.photos[:2]):
        path = tmp_path / f"photo{i}.png"
        photo.save(path)
        paths.append(str(path))
    chromium.call("Page.enable")
    chromium.call("Page.navigate", url=server + "/")
    chromium.wait_for("document.readyState === 'complete' && !!document.getElementById('describe')")
    values = [listing.attributes.get(k, "") for k in ("Название", "Категория", "Цена", "Размер", "Город")]
    chromium.js(f"Array.from(document.querySelectorAll('#attrs .value')).forEach((el, i) => "
                f"{{ el.value = {json.dumps(values, ensure_ascii=False)}[i] || ''; }})")
    root = chromium.call("DOM.getDocument")["root"]["nodeId"]
    node = chromium.call("DOM.querySelector", nodeId=root, selector="#photos")["nodeId"]
    chromium.call("DOM.setFileInputFiles", nodeId=node, files=paths)
    assert chromium.js("document.getElementById('photos').files.length") == 2
    chromium.js("document.getElementById('describe').click()")
    state = chromium.wait_for("['done', 'problems'].includes(document.getElementById('result').dataset.state) && "
                              "document.getElementById('result').dataset.state")
    assert state == "done", chromium.js("document.getElementById('problems').textContent")
    assert chromium.js("document.getElementById('status').textContent") == "ok"
    text = chromium.js("document.getElementById('text').textContent")
    assert len(text) > 20 and "<" not in text
    checks = chromium.js("Array.from(document.querySelectorAll('#verdicts tr')).map(tr => tr.dataset.check)")
    assert checks == ["toxicity", "nsfw", "minors", "photo_mismatch", "text_mismatch"]
    # the chosen photo is shown from the uploaded file and has loaded
    assert chromium.wait_for("(() => { const img = document.getElementById('best-photo'); "
                             "return img && img.complete && img.naturalWidth; })()", 30) == listing.photos[0].width
    shot = chromium.call("Page.captureScreenshot", format="png")["data"]
    import base64

    assert base64.b64decode(shot)[:8] == b"\x89PNG\r\n\x1a\n"

    # a file that is not an image: the API's message, naming the file, shows on the page
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    chromium.call("DOM.setFileInputFiles", nodeId=node, files=[str(bad)])
    chromium.js("document.getElementById('describe').click()")
    chromium.wait_for("document.getElementById('result').dataset.state === 'problems'")
    assert "photo 'notes.jpg': not an image" in chromium.js("document.getElementById('problems').textContent")

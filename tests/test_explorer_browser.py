"""The explorer page in a real headless Chromium (Debian's chromium + chromium-driver).

The page is opened from file:// exactly as a user would double-click it. Every colour the
tests read back from the browser is compared with one computed here in Python from the
layer's exact trace (not from the page's own data), through the documented colour tables.

Skipped, with the reason, when /usr/bin/chromium, /usr/bin/chromedriver or selenium are
missing; `make test` installs them. Selenium is pointed at /usr/bin/chromedriver, so no
tool downloads a browser or a driver.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import gatescope as gs
from gatescope import inspect as gi
from gatescope.viz import explorer as ex

pytestmark = pytest.mark.browser

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (/usr/bin/chromium, "
        "/usr/bin/chromedriver): `make test` installs them with apt-get",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')"
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

SOURCE = Path(__file__).resolve().parents[1] / "src" / "gatescope" / "nn" / "lstm.py"


# ----------------------------------------------------------------------------- fixtures


class Page:
    """A small character model on a real text, its data object and the written page."""

    def __init__(self, folder: Path) -> None:
        self.text = SOURCE.read_text()[:1500]
        self.chars = sorted(set(self.text))
        ids = np.array([self.chars.index(c) for c in self.text])
        self.x = np.eye(len(self.chars))[ids][None]  # (1, N, V)
        self.layer = gs.LSTM(len(self.chars), 12, 2, seed=0)
        self.head = gs.Linear(12, len(self.chars), seed=1)
        self.features = {
            "is_space": np.array([c == " " for c in self.text], float),
            "line_position": np.array(
                [len(self.text[: i + 1].rsplit("\n", 1)[-1]) for i in range(len(self.text))], float
            ),
        }
        self.data = ex.build_data(
            self.layer, self.x, self.text, head=self.head, labels=self.chars,
            targets=np.append(ids[1:], -1), features=self.features,
            grad_positions=[100, 400, 700, 1000], grad_window=40, title="browser test",
        )  # fmt: skip
        self.layer(self.x)
        self.trace = {q: a[:, 0] for q, a in self.layer.trace.items()}  # (L, N, H) exact
        self.path = folder / "explorer.html"
        ex.write_html(self.path, self.data)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    return Page(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def driver():
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must never download
    opts = Options()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="gatescope-chromium-")
    for a in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def load(driver, path: Path, timeout: float = 30.0):
    """Open the page afresh and wait until it has drawn; the browser log starts empty."""
    driver.get_log("browser")  # reading the log empties it: earlier pages' messages go
    driver.get(path.as_uri())
    end = time.time() + timeout
    while time.time() < end:
        if driver.execute_script("return !!(window.gatescope && window.gatescope.ready)"):
            return driver
        time.sleep(0.05)
    raise AssertionError(f"the page did not get ready in {timeout} s: {driver.get_log('browser')}")


def js(driver, code: str, *args):
    return driver.execute_script(code, *args)


def rgb(css: str) -> tuple[int, ...]:
    m = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", css)
    assert m, css
    if m.group(4) is not None and float(m.group(4)) == 0:
        return ()  # transparent
    return tuple(int(m.group(i)) for i in (1, 2, 3))


def text_colours(driver) -> list[tuple[int, tuple[int, ...]]]:
    """(position, background RGB) of every character the text view has drawn."""
    rows = js(
        driver,
        "return Array.from(document.querySelectorAll('#tv-rows .c')).map("
        "s => [+s.dataset.t, getComputedStyle(s).backgroundColor])",
    )
    assert rows, "the text view drew nothing"
    return [(t, rgb(c)) for t, c in rows]


def assert_colours_match(page, colours, q, layer, unit, mode="fixed"):
    """Each colour is the table entry of the exact value, give or take one entry (the page
    colours the quantised value)."""
    spec = page.data["quantities"][q]
    lut = ex.colour_lut(spec["cmap"])
    lo, hi = ex.colour_range(page.data, q, layer, unit, mode)
    bad = []
    for t, c in colours:
        i = int(ex.colour_index(page.trace[q][layer, t, unit], lo, hi))
        allowed = {tuple(int(v) for v in lut[j]) for j in range(max(0, i - 1), min(255, i + 1) + 1)}
        if c not in allowed:
            bad.append((t, c, sorted(allowed)))
    assert not bad, f"{len(bad)} of {len(colours)} colours differ from the data, e.g. {bad[:3]}"


def state(driver) -> dict:
    return js(
        driver,
        "const s = window.gatescope.state; return {q: s.q, layer: s.layer, unit: s.unit, colourBy: s.colourBy, gi: s.gi, pinned: s.pinned};",
    )


# ----------------------------------------------------------------------------- tests


def test_page_loads_from_file_with_no_console_errors_and_no_network(driver, page):
    load(driver, page.path)
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs
    assert js(driver, "return performance.getEntriesByType('resource').length") == 0
    nav = js(driver, "return performance.getEntriesByType('navigation')[0].name")
    assert nav.startswith("file://")
    csp = js(
        driver,
        "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content",
    )
    assert csp.startswith("default-src 'none';")
    assert js(driver, "return document.title") == "browser test"
    assert js(driver, "return document.querySelectorAll('#units tbody tr').length") == 12


def test_the_policy_blocks_any_network_request(driver, page):
    load(driver, page.path)
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const seen = [];
        document.addEventListener('securitypolicyviolation', (e) => seen.push(e.violatedDirective));
        const img = new Image();
        img.src = 'http://127.0.0.1:9/probe.png';
        fetch('http://127.0.0.1:9/probe').then(() => 'fetched', (e) => 'blocked: ' + e.name)
          .then((f) => setTimeout(() => done({fetch: f, seen: seen}), 200));
        """
    )
    assert result["fetch"] == "blocked: TypeError"
    assert any(d.startswith("img-src") for d in result["seen"])
    assert any(d.startswith("connect-src") for d in result["seen"])


def test_clicking_a_unit_recolours_the_text_with_its_values(driver, page):
    load(driver, page.path)
    s = state(driver)
    assert (s["q"], s["layer"]) == ("h", 1)  # the hidden state of the top layer first
    before = text_colours(driver)
    assert_colours_match(page, before, "h", 1, s["unit"])
    unit = (s["unit"] + 5) % 12
    row = driver.find_element(By.CSS_SELECTOR, f'#units tbody tr[data-u="{unit}"]')
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", row)
    row.click()
    assert state(driver)["unit"] == unit
    assert "sel" in row.get_attribute("class")
    after = text_colours(driver)
    assert_colours_match(page, after, "h", 1, unit)
    changed = sum(a[1] != b[1] for a, b in zip(before, after))
    assert changed > len(after) // 2
    assert driver.find_element(By.ID, "unit").get_attribute("value") == str(unit)


def test_the_quantity_and_layer_switches_recolour_the_text(driver, page):
    load(driver, page.path)
    unit = state(driver)["unit"]
    for q in ("f", "c", "i", "o", "g", "h"):
        button = driver.find_element(By.CSS_SELECTOR, f'#quantities button[data-q="{q}"]')
        button.click()
        assert state(driver)["q"] == q and button.get_attribute("aria-pressed") == "true"
        assert_colours_match(page, text_colours(driver), q, 1, unit)
        hint = driver.find_element(By.ID, "browser-hint").text
        assert f"correlation of {q}" in hint
    Select(driver.find_element(By.ID, "layer")).select_by_value("0")
    assert state(driver)["layer"] == 0
    assert_colours_match(page, text_colours(driver), "h", 0, unit)
    driver.find_element(By.CSS_SELECTOR, '#range button[data-v="unit"]').click()
    assert_colours_match(page, text_colours(driver), "h", 0, unit, mode="unit")


def test_keyboard_moves_between_units_in_table_order(driver, page):
    load(driver, page.path)
    body = driver.find_element(By.TAG_NAME, "body")
    js(driver, "window.gatescope.selectUnit(3)")
    body.send_keys("j")
    assert state(driver)["unit"] == 4
    body.send_keys(Keys.ARROW_DOWN)
    assert state(driver)["unit"] == 5
    body.send_keys("k")
    body.send_keys(Keys.ARROW_UP)
    assert state(driver)["unit"] == 3
    body.send_keys("2")  # quantity keys: 1 h, 2 c, ...
    assert state(driver)["q"] == "c"
    assert_colours_match(page, text_colours(driver), "c", 1, 3)
    # after sorting by a feature, j walks down the sorted table
    driver.find_element(By.CSS_SELECTOR, '#units th[data-key="f0"]').click()  # r, descending
    order = [
        int(tr.get_attribute("data-u"))
        for tr in driver.find_elements(By.CSS_SELECTOR, "#units tbody tr")
    ]
    r = [page.data["quantities"]["c"]["corr"][1][u][0] for u in order]
    assert r == sorted(r, reverse=True)
    js(driver, "window.gatescope.selectUnit(arguments[0])", order[0])
    body.send_keys("j")
    assert state(driver)["unit"] == order[1]
    # typing into the filter does not move units; it filters the table
    search = driver.find_element(By.ID, "search")
    search.send_keys("1")
    shown = [
        tr for tr in driver.find_elements(By.CSS_SELECTOR, "#units tbody tr") if tr.is_displayed()
    ]
    assert sorted(int(tr.get_attribute("data-u")) for tr in shown) == [1, 10, 11]
    assert state(driver)["unit"] == order[1]


def test_heatmap_shows_every_unit_and_a_click_selects_a_row(driver, page):
    load(driver, page.path)
    canvas = driver.find_element(By.ID, "heat")
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", canvas)
    hm = js(
        driver,
        "const r = document.getElementById('heat').getBoundingClientRect(); return {w: r.width, h: r.height};",
    )
    # the layout is fixed by the page: left 46 px, top 32 px, row height by unit count
    rh = max(3, min(12, 380 // 12))
    unit, col = 7, 5
    ActionChains(driver).move_to_element_with_offset(
        canvas, 46 + col * 7 + 3 - hm["w"] / 2, 32 + unit * rh + rh / 2 - hm["h"] / 2
    ).click().perform()
    assert state(driver)["unit"] == unit
    start = js(driver, "return +document.getElementById('heat-start').value")
    # the pixels: one cell per unit and step, in the colours of the data
    for u, j in ((2, 1), (9, 20), (unit, 40)):
        px = js(
            driver,
            "const c = document.getElementById('heat'), d = window.devicePixelRatio || 1;"
            "return Array.from(c.getContext('2d').getImageData(Math.round((46 + arguments[1] * 7 + 3.5) * d),"
            " Math.round((32 + arguments[0] * arguments[2] + arguments[2] / 2) * d), 1, 1).data).slice(0, 3);",
            u, j, rh,
        )  # fmt: skip
        t = start + j
        want = ex.expected_colour(page.data, "h", 1, u, page.trace["h"][1, t, u])
        assert np.abs(np.array(px) - want).max() <= 12, (u, t, px, want)


def test_hover_shows_the_value_and_the_models_predictions(driver, page):
    load(driver, page.path)
    unit = state(driver)["unit"]
    t = 30
    span = driver.find_element(By.CSS_SELECTOR, f'#tv-rows .c[data-t="{t}"]')
    ActionChains(driver).move_to_element(span).perform()
    tip = driver.find_element(By.ID, "tip")
    assert tip.is_displayed()
    text = tip.text
    m = re.search(rf"unit {unit} = (-?\d+\.\d+)", text)
    assert m, text
    assert float(m.group(1)) == pytest.approx(page.trace["h"][1, t, unit], abs=2e-4)
    y, _ = page.layer(page.x)
    logits = y[0, t] @ page.head.params["weight"].T + page.head.params["bias"]
    best = page.chars[int(np.argmax(logits))]
    shown = {"\n": "↵", " ": "␣", "\t": "⇥"}.get(best, best)
    first = tip.find_element(By.CSS_SELECTOR, "table tr td").text
    assert first == shown
    assert f"position {t}" in text and "actual next" in text


def test_gradient_view_pins_a_position_and_colours_the_influence(driver, page):
    load(driver, page.path)
    p = 400
    js(driver, "window.gatescope.pin(arguments[0])", p)  # as a click on that character
    assert state(driver)["gi"] == 1 and state(driver)["pinned"] == p
    title = driver.find_element(By.ID, "grad-title").text
    assert title.startswith("Position 400")
    driver.find_element(By.TAG_NAME, "body").send_keys("g")
    assert state(driver)["colourBy"] == "grad"
    # every drawn character inside the window [p - 39, p] is coloured by its influence
    infl = gi.input_influence(page.layer, page.x, [(0, p)], window=40, head=page.head)[0].astype(
        np.float32
    )
    top = np.log10(infl.max()) - 4
    lut = ex.colour_lut("grad")
    colours = dict(text_colours(driver))
    inside = [t for t in colours if p - 39 <= t <= p]
    assert len(inside) == 40
    for t in inside:
        f = max(0.0, (np.log10(infl[t - (p - 39)]) - top) / 4)
        i = int(ex.colour_index(f, 0, 1))
        ok = {tuple(int(v) for v in lut[j]) for j in range(max(0, i - 1), min(255, i + 1) + 1)}
        assert colours[t] in ok, (t, colours[t], i)
    outside = [c for t, c in colours.items() if t < p - 39 or t > p]
    assert outside and all(c == () for c in outside)  # outside the window: no colour
    # ] steps to the next measured position
    driver.find_element(By.TAG_NAME, "body").send_keys("]")
    assert state(driver)["gi"] == 2 and state(driver)["pinned"] == 700


@pytest.mark.slow
def test_screenshot_is_not_blank(driver, page, tmp_path):
    import matplotlib.image as mpimg

    load(driver, page.path)
    shot = tmp_path / "explorer.png"
    assert driver.save_screenshot(str(shot))
    img = mpimg.imread(shot)[..., :3]  # (h, w, 3) floats in 0..1
    assert img.shape[0] >= 700 and img.shape[1] >= 1300
    assert img.std() > 0.1
    colours = np.unique((img.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 300  # text, colour scales and the heatmap, not a flat page
    assert driver.get_log("browser") == []


@pytest.mark.slow
def test_a_20000_character_text_stays_responsive(driver, tmp_path):
    text = (SOURCE.read_text() * 4)[:20_000]
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    layer, head = gs.LSTM(len(chars), 32, seed=0), gs.Linear(32, len(chars), seed=1)
    data = ex.build_data(
        layer, np.eye(len(chars))[ids][None], text, head=head, labels=chars,
        features={"is_space": np.array([c == " " for c in text], float)}, grad_positions=32, grad_window=60,
    )  # fmt: skip
    path = tmp_path / "big.html"
    ex.write_html(path, data)
    load(driver, path)
    t = js(driver, "return window.gatescope.timings")
    assert t["ready"] < 5000, t  # parse, decode, lay out 20,000 characters, first drawing
    assert js(driver, "return window.gatescope.rows()") > 400
    drawn = js(driver, "return window.gatescope.visibleSpans()")
    assert 0 < drawn < 6000  # only the rows in sight are in the page
    ms = js(
        driver,
        "const g = window.gatescope, t0 = performance.now();"
        "for (let u = 0; u < 10; u++) g.selectUnit(u);"
        "const t1 = performance.now(); g.setQuantity('c'); const t2 = performance.now();"
        "const tv = document.getElementById('tv'); tv.scrollTop = tv.scrollHeight / 2;"
        "tv.dispatchEvent(new Event('scroll'));"
        "return [(t1 - t0) / 10, t2 - t1];",
    )
    assert ms[0] < 250 and ms[1] < 1000, ms
    time.sleep(0.3)  # a frame for the scroll
    positions = [t for t, _ in text_colours(driver)]
    assert min(positions) > 5000 and max(positions) < 15000  # the middle of the text is drawn
    assert driver.get_log("browser") == []


# ----------------------------------------------------------------------------- in a notebook


def test_the_notebook_iframe_runs_the_page_inside_its_sandbox(driver, page, tmp_path):
    """What Jupyter shows: `_repr_html_` of `explorer.page` in an output cell. The page's
    script runs inside the sandboxed srcdoc frame under its own policy, draws the text
    in the data's colours and shows a value on hover; the frame cannot reach the notebook."""
    frame_html = ex.page(page.data, height=900)._repr_html_()
    notebook = tmp_path / "notebook.html"
    notebook.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>notebook</title></head>"
        f"<body><div class='output_html'>{frame_html}</div></body></html>",
        encoding="utf-8",
    )
    driver.get_log("browser")
    driver.get(notebook.as_uri())
    frame = driver.find_element(By.TAG_NAME, "iframe")
    assert frame.get_attribute("sandbox") == "allow-scripts"
    assert js(driver, "return arguments[0].contentDocument", frame) is None  # opaque origin
    driver.switch_to.frame(frame)
    try:
        end = time.time() + 30
        while not js(driver, "return !!(window.gatescope && window.gatescope.ready)"):
            assert time.time() < end, (
                f"the page did not run in the frame: {driver.get_log('browser')}"
            )
            time.sleep(0.05)
        assert js(driver, "return document.title") == "browser test"
        assert js(driver, "return location.href") == "about:srcdoc"
        assert js(driver, "return window.origin") == "null"  # sandboxed: no same origin
        csp = js(
            driver,
            "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content",
        )
        assert csp.startswith("default-src 'none';")
        assert js(driver, "return document.querySelectorAll('#units tbody tr').length") == 12
        s = state(driver)
        assert_colours_match(page, text_colours(driver), "h", 1, s["unit"])
        t = 30
        span = driver.find_element(By.CSS_SELECTOR, f'#tv-rows .c[data-t="{t}"]')
        js(driver, "arguments[0].scrollIntoView({block: 'center'})", span)
        ActionChains(driver).move_to_element(span).perform()
        tip = driver.find_element(By.ID, "tip")
        assert tip.is_displayed()
        m = re.search(rf"unit {s['unit']} = (-?\d+\.\d+)", tip.text)
        assert m, tip.text
        assert float(m.group(1)) == pytest.approx(page.trace["h"][1, t, s["unit"]], abs=2e-4)
        # the sandbox holds: the parent document and storage are out of reach
        assert js(driver, "try { return parent.document.title } catch (e) { return e.name }") == (
            "SecurityError"
        )
        assert js(
            driver, "try { localStorage.length; return 'ok' } catch (e) { return e.name }"
        ) == ("SecurityError")
    finally:
        driver.switch_to.default_content()
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs

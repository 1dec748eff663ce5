# ruff: noqa: F811  (tests take the imported `driver` fixture as their argument)
"""The seq2seq explorer page in headless Chromium (the fixtures of test_explorer_browser).

A real dates model (test_explorer_seq2seq's, trained for 300 steps): hovering, clicking or
keyboard-selecting an output character colours the source by that step's attention, the
colours compared with `explorer.expected_colour` of the model's own weights; the part
switch moves the unit views between encoder and decoder.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from test_explorer_browser import (
    driver,  # noqa: F401  (the fixture, shared)
    js,
    load,
    rgb,
    text_colours,
)
from test_explorer_seq2seq import (  # the trained models, shared (trained once)
    TEXTS,
    WANT,
    dates,  # noqa: F401
    dates_none,  # noqa: F401
    reference,
)

from gatescope.viz import explorer as ex

pytestmark = pytest.mark.browser

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


class S2SPage:
    def __init__(self, model, task, folder, name):
        self.model, self.task = model, task
        self.data = ex.from_seq2seq(model, task, TEXTS, title="seq2seq browser test")
        self.path = folder / f"{name}.html"
        ex.write_html(self.path, self.data)


@pytest.fixture(scope="module")
def s2s(dates, tmp_path_factory):
    model, task, _ = dates
    return S2SPage(model, task, tmp_path_factory.mktemp("s2s-page"), "attention")


@pytest.fixture(scope="module")
def s2s_none(dates_none, tmp_path_factory):
    model, task, _ = dates_none
    return S2SPage(model, task, tmp_path_factory.mktemp("s2s-page"), "none")


def source_colours(driver) -> list[tuple[int, ...]]:
    css = js(
        driver,
        "return Array.from(document.querySelectorAll('#s2s-src .s2s-c')).map("
        "s => getComputedStyle(s).backgroundColor)",
    )
    return [rgb(c) for c in css]


def s2s_state(driver) -> dict:
    return js(driver, "const s = window.gatescope.s2s.state; return Object.assign({}, s);")


def assert_source_is_row(page, driver, text, k, mode="fixed"):
    a = ex.attention_weights(page.data, text)
    want = [
        tuple(int(v) for v in c)
        for c in ex.expected_colour(page.data, "attention", text, k, a[k], mode)
    ]
    assert source_colours(driver) == want


# ----------------------------------------------------------------------------- tests


def test_the_page_loads_offline_with_no_console_errors(driver, s2s):
    load(driver, s2s.path)
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs
    assert js(driver, "return performance.getEntriesByType('resource').length") == 0
    csp = js(
        driver,
        "return document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content",
    )
    assert csp.startswith("default-src 'none';")
    src = js(
        driver,
        "return Array.from(document.querySelectorAll('#s2s-src .s2s-c')).map(s => s.textContent).join('')",
    )
    assert src == TEXTS[0].replace(" ", "\u2423")
    out = js(
        driver,
        "return Array.from(document.querySelectorAll('#s2s-out button')).map(s => s.textContent)",
    )
    assert out == [*WANT[0], "EOS"]
    assert_source_is_row(s2s, driver, 0, 0)  # output step 0 is selected at first


def test_hovering_an_output_character_colours_the_source_by_its_attention(driver, s2s):
    load(driver, s2s.path)
    model, task = s2s.model, s2s.task
    att = ex.attention_weights(s2s.data, 0)  # the page's weights (T, S) ...
    # ... are the model's own (a rerun of BLAS may differ in the last bits)
    np.testing.assert_allclose(att, reference(model, task, TEXTS[0])[1], rtol=0, atol=1e-6)
    buttons = driver.find_elements(By.CSS_SELECTOR, "#s2s-out button")
    for k in (3, 6, 10):
        ActionChains(driver).move_to_element(buttons[k]).perform()
        assert s2s_state(driver)["hover"] == k
        want = [
            tuple(int(v) for v in c)
            for c in ex.expected_colour(s2s.data, "attention", 0, k, att[k])
        ]
        assert source_colours(driver) == want
        tip = driver.find_element(By.ID, "tip")
        assert tip.is_displayed()
        first = tip.find_elements(By.CSS_SELECTOR, "table tr td")
        j = int(np.argmax(att[k]))
        assert first[1].text == f"pos {j}"
        assert float(first[2].text) == pytest.approx(
            float(att[k, j]), rel=1e-5
        )  # the number, exact
    # the mouse leaves: the selected (clicked) step shows again
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "title")).perform()
    assert s2s_state(driver)["hover"] == -1
    assert_source_is_row(s2s, driver, 0, 0)
    # hovering a source character gives its exact weight for the shown step
    ActionChains(driver).move_to_element(
        driver.find_elements(By.CSS_SELECTOR, "#s2s-src .s2s-c")[5]
    ).perform()
    shown = re.search(r"output step 0: ([\d.e-]+)", driver.find_element(By.ID, "tip").text)
    assert float(shown.group(1)) == pytest.approx(float(att[0, 5]), rel=1e-5)


def test_click_and_keyboard_select_an_output_step(driver, s2s):
    load(driver, s2s.path)
    buttons = driver.find_elements(By.CSS_SELECTOR, "#s2s-out button")
    buttons[4].click()
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "title")).perform()
    assert s2s_state(driver)["pinned"] == 4
    assert buttons[4].get_attribute("aria-pressed") == "true"
    assert_source_is_row(s2s, driver, 0, 4)
    # the weights are also in the source characters' accessible names
    label = driver.find_elements(By.CSS_SELECTOR, "#s2s-src .s2s-c")[7].get_attribute("aria-label")
    w = float(re.search(r"= ([\d.e-]+)$", label).group(1))
    assert w == pytest.approx(float(ex.attention_weights(s2s.data, 0)[4, 7]), rel=1e-5)
    buttons[4].send_keys(Keys.ARROW_RIGHT)  # focus moves on, and selects
    assert s2s_state(driver)["pinned"] == 5
    assert js(driver, "return document.activeElement.dataset.k") == "5"
    assert_source_is_row(s2s, driver, 0, 5)
    driver.switch_to.active_element.send_keys(Keys.END)
    assert s2s_state(driver)["pinned"] == len(WANT[0])  # the EOS step
    assert_source_is_row(s2s, driver, 0, len(WANT[0]))
    info = driver.find_element(By.ID, "s2s-info").text
    assert info.startswith(f"output step {len(WANT[0])} emits EOS")
    # per-row scale
    driver.find_element(By.CSS_SELECTOR, '#s2s-scale button[data-v="row"]').click()
    assert_source_is_row(s2s, driver, 0, len(WANT[0]), mode="unit")


def test_the_text_selector_shows_another_text(driver, s2s):
    load(driver, s2s.path)
    Select(driver.find_element(By.ID, "s2s-text")).select_by_value("2")
    assert s2s_state(driver)["text"] == 2
    src = js(
        driver,
        "return Array.from(document.querySelectorAll('#s2s-src .s2s-c')).map(s => s.textContent).join('')",
    )
    assert src == TEXTS[2]
    buttons = driver.find_elements(By.CSS_SELECTOR, "#s2s-out button")
    assert [b.text for b in buttons] == [*WANT[2], "EOS"]
    buttons[8].click()
    assert_source_is_row(s2s, driver, 2, 8)


def test_the_part_switch_moves_the_unit_views_to_the_decoder(driver, s2s):
    load(driver, s2s.path)
    enc, dec = s2s.data["parts"]["encoder"], s2s.data["parts"]["decoder"]
    assert js(driver, "return window.gatescope.data.tokens") == enc["tokens"]
    before = text_colours(driver)
    assert len(before) == enc["n"]
    driver.find_element(By.CSS_SELECTOR, '#parts button[data-part="decoder"]').click()
    assert js(driver, "return window.gatescope.data.tokens") == dec["tokens"]
    assert (
        driver.find_element(By.CSS_SELECTOR, '#parts button[data-part="decoder"]').get_attribute(
            "aria-pressed"
        )
        == "true"
    )
    assert driver.find_element(By.ID, "text-heading").text.startswith("Decoder")
    after = text_colours(driver)
    assert [t for t, _ in after] == list(range(dec["n"]))
    # the decoder's text is coloured by the selected unit's exact decoder values
    unit = js(driver, "return window.gatescope.state.unit")
    lut = ex.colour_lut(dec["quantities"]["h"]["cmap"])
    lo, hi = ex.colour_range(dec, "h", 0, unit)
    exact = np.concatenate(
        [reference(s2s.model, s2s.task, t)[2]["decoder"]["h"][0, 0] for t in TEXTS]
    )
    for t, c in after:
        i = int(ex.colour_index(exact[t, unit], lo, hi))
        assert c in {
            tuple(int(v) for v in lut[j]) for j in range(max(0, i - 1), min(255, i + 1) + 1)
        }
    # the quantity carries over the switch; the translation panel stays
    driver.find_element(By.CSS_SELECTOR, '#quantities button[data-q="f"]').click()
    driver.find_element(By.CSS_SELECTOR, '#parts button[data-part="encoder"]').click()
    assert js(driver, "return window.gatescope.state.q") == "f"
    assert js(driver, "return window.gatescope.data.tokens") == enc["tokens"]
    assert js(driver, "return document.querySelectorAll('#units tbody tr').length") == 32
    assert_source_is_row(s2s, driver, 0, 0)
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs


def test_a_model_without_attention_says_so(driver, s2s_none):
    load(driver, s2s_none.path)
    note = driver.find_element(By.ID, "s2s-note")
    assert note.is_displayed() and "no attention" in note.text
    assert not driver.find_element(By.ID, "s2s-scale").is_displayed()
    driver.find_elements(By.CSS_SELECTOR, "#s2s-out button")[2].click()
    assert set(source_colours(driver)) == {()}  # nothing to colour by
    assert "no attention weights" in driver.find_element(By.ID, "s2s-info").text
    driver.find_element(By.CSS_SELECTOR, '#parts button[data-part="decoder"]').click()
    assert (
        js(driver, "return window.gatescope.data.tokens")
        == s2s_none.data["parts"]["decoder"]["tokens"]
    )
    assert len(text_colours(driver)) == s2s_none.data["parts"]["decoder"]["n"]
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs


def test_a_text_shorter_than_the_heatmap_loads_in_both_parts(driver, dates, tmp_path):
    """One date of 6 characters: fewer steps than the heatmap's 10 columns at least."""
    model, task, _ = dates
    data = ex.from_seq2seq(model, task, "1/2/03")
    path = tmp_path / "short.html"
    ex.write_html(path, data)
    load(driver, path)
    assert (
        js(driver, "return document.querySelectorAll('#s2s-out button').length")
        == (data["texts"][0]["steps"])
    )
    assert not driver.find_element(By.ID, "s2s-pick").is_displayed()  # one text: no selector
    driver.find_element(By.CSS_SELECTOR, '#parts button[data-part="decoder"]').click()
    assert len(text_colours(driver)) == data["parts"]["decoder"]["n"]
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs


def test_the_notebook_frame_runs_the_seq2seq_page(driver, s2s, tmp_path):
    """`explorer.page(model, task, texts)` in a notebook's output: the sandboxed srcdoc
    frame runs the page, and hovering colours the source by the attention."""
    p = ex.page(s2s.model, s2s.task, TEXTS, height=900)
    frame_html = p._repr_html_()
    notebook = tmp_path / "notebook.html"
    notebook.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>notebook</title></head>"
        f"<body>{frame_html}</body></html>",
        encoding="utf-8",
    )
    driver.get_log("browser")
    driver.get(notebook.as_uri())
    frame = driver.find_element(By.TAG_NAME, "iframe")
    driver.switch_to.frame(frame)
    try:
        for _ in range(600):
            if js(driver, "return !!(window.gatescope && window.gatescope.ready)"):
                break
            time.sleep(0.05)
        assert js(driver, "return window.origin") == "null"  # sandboxed
        button = driver.find_elements(By.CSS_SELECTOR, "#s2s-out button")[2]
        js(driver, "arguments[0].scrollIntoView({block: 'center'})", button)
        ActionChains(driver).move_to_element(button).perform()
        assert_source_is_row(p, driver, 0, 2)  # the colours of the frame's own data
    finally:
        driver.switch_to.default_content()
    logs = driver.get_log("browser")
    assert [e for e in logs if e["level"] in ("SEVERE", "WARNING")] == [], logs

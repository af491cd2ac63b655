"""The chat page in a real headless Chromium (Debian's chromium + chromium-driver, selenium)."""

from __future__ import annotations

from typing import Any

import pytest

webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from lmlab.infer import Engine, SamplingParams  # noqa: E402


def test_chat_page_streams_a_reply(browser: Any, server: str, reference: Engine) -> None:
    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "model").text == "tiny")
    options = [o.text for o in Select(browser.find_element(By.ID, "strategy")).options]
    assert options[0] == "direct"
    for field, value in (("temperature", "1"), ("max_tokens", "12"), ("seed", "5")):
        box = browser.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "input").send_keys("the quick brown fox")
    browser.find_element(By.ID, "send").click()
    reply = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".msg.assistant[data-done='1']"))
    want = reference.chat(
        [{"role": "user", "content": "the quick brown fox"}],
        SamplingParams(max_new_tokens=12, temperature=1.0, seed=5),
    ).text
    assert want
    assert "error" not in reply.get_attribute("class")
    text = reply.find_element(By.CSS_SELECTOR, ".text").get_attribute("textContent")
    assert text == want
    assert int(reply.get_attribute("data-chunks")) > 1  # it arrived in pieces, as a stream
    # The conversation is kept: a second turn sends both turns and gets a second reply.
    browser.find_element(By.ID, "input").send_keys("and then?")
    browser.find_element(By.ID, "send").click()
    wait.until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']")) == 2
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.user")) == 2
    # A reasoning strategy from the picker: the answer arrives with collapsible traces.
    assert "sc" in options, options  # the picker offers lmlab.reason's strategies
    Select(browser.find_element(By.ID, "strategy")).select_by_value("sc")
    browser.find_element(By.ID, "k").send_keys("2")
    browser.find_element(By.ID, "input").send_keys("What is 2+3?")
    browser.find_element(By.ID, "send").click()
    wait.until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done='1']")) == 3
    )
    last = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1]
    assert "error" not in last.get_attribute("class"), last.text
    summary = last.find_element(By.CSS_SELECTOR, "details summary")
    assert summary.get_attribute("textContent").startswith("sc@2:")
    assert len(last.find_elements(By.CSS_SELECTOR, "details pre")) == 2

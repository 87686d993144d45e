"""The web page in a real headless Chromium: pick a model, upload a real mp4, type a task, see the curve."""

from __future__ import annotations

import shutil

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian chromium + chromium-driver "
                                                                  "(.ci/run installs them)")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_upload_a_video_and_see_its_reward_curve(browser, service_url, babyai_videos, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import Select, WebDriverWait

    path, episode = babyai_videos["success"][0]
    browser.get(f"{service_url}/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 3)  # the models the fixture serves
    model = Select(browser.find_element(By.ID, "model"))

    model.select_by_value("babyai-orca")  # a demo-goal model: the task box goes, the demo upload comes
    assert not browser.find_element(By.ID, "task").is_displayed() and browser.find_element(By.ID, "demo").is_displayed()

    model.select_by_value("babyai-liv")
    browser.find_element(By.ID, "video").send_keys(str(path))
    browser.find_element(By.ID, "task").send_keys(episode.mission)
    browser.find_element(By.ID, "score").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "frames"))
    assert f"babyai-liv: {len(episode.frames)} frames" in browser.find_element(By.ID, "status").text
    painted = browser.execute_script(
        "const c = document.getElementById('plot'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n;")
    assert painted > 500  # the two curves and the axis are drawn
    browser.save_screenshot(str(tmp_path / "web_page.png"))
    assert (tmp_path / "web_page.png").stat().st_size > 10_000


def test_errors_show_on_the_page(browser, service_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 100)
    browser.get(f"{service_url}/")
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "video").send_keys(str(broken))
    browser.find_element(By.ID, "task").send_keys("go to the red ball")
    browser.find_element(By.ID, "score").click()
    WebDriverWait(browser, 60).until(seen.text_to_be_present_in_element((By.ID, "status"), "invalid_video"))

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


TASKS = ["go to the red ball", "go to the blue key", "pick up the green box"]


def colour_pixels(png: bytes, colour: str, box: tuple[int, int, int, int], tolerance: int = 30) -> int:
    """How many pixels inside `box` (left, top, right, bottom) of a screenshot are within `tolerance` of `colour`."""
    import io

    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)[box[1]:box[3], box[0]:box[2]]
    target = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image - target).max(axis=-1) <= tolerance).sum())


def test_several_tasks_overlay_their_reward_curves(browser, service_url, babyai_videos, tmp_path):
    """One video, three sentences: three curves in distinct colours over shared axes whose ticks span the values,
    and a legend naming each task with the return the API gives for it."""
    import json

    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import Select, WebDriverWait

    path, episode = babyai_videos["success"][0]
    browser.get(f"{service_url}/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 3)
    Select(browser.find_element(By.ID, "model")).select_by_value("babyai-liv")
    browser.find_element(By.ID, "video").send_keys(str(path))
    browser.find_element(By.ID, "task").send_keys("\n".join(TASKS))
    browser.find_element(By.ID, "score").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "status"), "3 tasks"))
    assert f"babyai-liv: {len(episode.frames)} frames, 3 tasks" in browser.find_element(By.ID, "status").text

    expected = [httpx.post(f"{service_url}/v1/score", timeout=60, files={"video": (path.name, path.read_bytes())},
                           data={"task": task, "model": "babyai-liv"}).json() for task in TASKS]
    legend = browser.find_elements(By.CSS_SELECTOR, "#legend li")
    assert [item.text for item in legend] == [f"{task} (return {body['return']:.3f})"
                                              for task, body in zip(TASKS, expected)]
    colours = [item.get_attribute("data-color") for item in legend]
    assert len(set(colours)) == 3

    plot = browser.find_element(By.ID, "plot")
    ticks = json.loads(plot.get_attribute("data-y-ticks"))
    values = [v for body in expected for v in body["values"]]
    assert len(ticks) >= 3 and ticks == sorted(ticks) and ticks[0] <= min(values) and ticks[-1] >= max(values)

    area = json.loads(plot.get_attribute("data-area"))
    png = plot.screenshot_as_png
    (tmp_path / "curves.png").write_bytes(png)
    inside = (area["left"] + 3, area["top"], area["right"], area["bottom"] - 3)  # the plot, without axes or legend
    drawn = {colour: colour_pixels(png, colour, inside) for colour in colours}
    assert all(count > 150 for count in drawn.values()), drawn  # each task's curve is drawn in its own colour
    assert colour_pixels(png, "#9467bd", inside) < 20  # a colour no curve was given stays absent from the plot

    Select(browser.find_element(By.ID, "series")).select_by_value("rewards")  # the same curves as rewards
    rewards_ticks = json.loads(plot.get_attribute("data-y-ticks"))
    steps = [r for body in expected for r in body["rewards"]]
    assert rewards_ticks[0] <= min(steps) and rewards_ticks[-1] >= max(steps) and rewards_ticks != ticks


def test_the_eval_report_shows_as_a_table(browser, service_url, babyai_videos, tmp_path):
    """Labelled trajectories through /v1/eval from the page: each metric of the report is a row of the table."""
    import json

    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from serve.client import npz_bytes

    episodes = [(e, True) for _, e in babyai_videos["success"]] + [(e, False) for _, e in babyai_videos["failure"]]
    labels = [{"task": e.mission, "success": ok} for e, ok in episodes]
    (tmp_path / "t.npz").write_bytes(npz_bytes([e.frames for e, _ in episodes]))
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    report = httpx.post(f"{service_url}/v1/eval", timeout=120, data={"labels": json.dumps(labels), "model": "babyai-liv"},
                        files={"trajectories": ("t.npz", (tmp_path / "t.npz").read_bytes())}).json()

    browser.get(f"{service_url}/")
    wait = WebDriverWait(browser, 120)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 3)
    Select(browser.find_element(By.ID, "model")).select_by_value("babyai-liv")
    browser.find_element(By.ID, "trajectories").send_keys(str(tmp_path / "t.npz"))
    browser.find_element(By.ID, "labels").send_keys(str(tmp_path / "labels.json"))
    browser.find_element(By.ID, "evaluate").click()
    wait.until(seen.text_to_be_present_in_element((By.ID, "eval-status"), "videos evaluated"))

    rows = {row.get_attribute("data-metric"): row.find_elements(By.TAG_NAME, "td")[1].text
            for row in browser.find_elements(By.CSS_SELECTOR, "#report tbody tr")}
    assert rows["model"] == "babyai-liv" and rows["successes"] == "3" and rows["failures"] == "3"
    for metric in ("auroc_return", "auroc_final_value", "voc"):
        assert rows[metric] == f"{report[metric]:.4f}", (metric, rows[metric], report[metric])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#records tbody tr")) == len(episodes)
    table = browser.find_element(By.ID, "report")
    browser.execute_script("arguments[0].scrollIntoView()", table)
    table.screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 5_000

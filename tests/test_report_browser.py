"""The HTML reports in a real headless Chromium: tables and plots render, and a reviewer
can move between hypotheses, sites and runs and compare two runs side by side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.hypotheses import (
    Counterexample,
    ExampleQuery,
    Hypothesis,
    LabelledSample,
    Score,
    ScoredHypothesis,
)
from agent.report import write_report
from agent.runlog import RunLog

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian chromium and chromium-driver (scripts/test.sh installs them as root)")


def _score(fcr: float, kappa: float) -> Score:
    return Score(fcr=fcr, ci_low=fcr - 0.1, ci_high=min(1.0, fcr + 0.1), p0=0.5, kappa=kappa, degenerate=False, n_queries=12)


def _hyp(i: int, name: str, kappa: float) -> ScoredHypothesis:
    return ScoredHypothesis(
        id=i, round=i // 2, site="L18", status="scored", score=_score(0.5 + kappa / 2, kappa),
        hypothesis=Hypothesis(name=name, statement=f"the site encodes {name}", kind="python",
                              code="def feature(text):\n    return text.split()[0]"),
        examples=[ExampleQuery(query=f"Write a <b>guide</b> for {name}", label="write", samples=[
            LabelledSample(text="Write a poem", distance=0.03, accepted=True, label="write"),
            LabelledSample(text="Explain taxes", distance=0.3, accepted=False, label="explain")])],
        counterexamples=[Counterexample(query="q", query_label="write", sample="Draft a memo", sample_label="draft", distance=0.04)],
    )


def _explore_run(runs: Path, run: str, xid: str, names: list[str]) -> Path:
    log = RunLog(runs / run / "explore" / xid)
    log.write_json("config.json", {"run": run, "site": "L18", "kernel": "hard", "samples": 8, "only": "harmful", "judge": {"model": "judge-m"}})
    log.write_json("samples_L18.json", {"eps": {"eps": 0.1, "metric": "cosine", "quantile": 0.087}, "queries": [{}] * 12})
    for i, n in enumerate(names, 1):
        log.append("hypotheses", {"hypothesis": _hyp(i, n, 0.8 - 0.2 * i).model_dump()})
    log.append("other_sites", {"id": 1, "scores": {"L6": _score(0.55, 0.1).model_dump(), "L24": _score(0.7, 0.4).model_dump()}})
    log.append("timing", {"sampling_s": 3.0, "judge_s": 4.0, "labelling_s": 1.0, "scoring_s": 0.5})
    log.write_json("result.json", {"stopped": "budget"})
    return log.root


def _study(runs: Path) -> None:
    from agent.fcr_report import plot_by_layer
    from scope_core.api import FCRReport

    res = runs / "r1" / "results"
    res.mkdir(parents=True)
    reports = []
    for k, site in enumerate(["L6", "L12", "L18"]):
        g = {"fcr": 0.5 + 0.1 * k, "ci_low": 0.4 + 0.1 * k, "ci_high": 0.6 + 0.1 * k, "p0": 0.5, "kappa": 0.2 * k, "degenerate": False,
             "n_queries": 12, "n_undefined": 0, "n_no_weight": 0}
        reports.append({"feature": "harmfulness", "site": site, "kernel": "hard", "n_samples_per_query": 8,
                        "eps": {"site": site, "eps": 0.1, "metric": "cosine", "quantile": 0.05, "source": "quantile"},
                        "generator": g, "empirical": {**g, "fcr": 0.6}, "sampler": {}})
    (res / "fcr_harmfulness_L6+L12+L18.json").write_text(json.dumps({"reports": reports, "only": "harmful"}))
    plot_by_layer([FCRReport.model_validate(r) for r in reports], res / "fcr_harmfulness_L6+L12+L18.png", "study")


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--allow-file-access-from-files"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield drv
    drv.quit()


def _visible_sections(drv) -> list[str]:
    return [s.get_attribute("id") for s in drv.find_elements("css selector", "section.hyp") if s.is_displayed()]


def _img_ok(drv, css: str) -> bool:
    return drv.execute_script(f"const i = document.querySelector('{css}'); return !!i && i.complete && i.naturalWidth > 100;")


def test_reports_render_and_navigate_in_chromium(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    runs = tmp_path / "runs"
    _study(runs)
    a = _explore_run(runs, "r1", "x-a", ["frame", "verb", "length"])
    _explore_run(runs, "r2", "x-b", ["verb", "topic"])
    write_report(a)
    write_report(runs / "r2" / "explore" / "x-b")
    drv = browser

    # The index: both runs, the study table and its plot.
    drv.get((runs / "index.html").as_uri())
    assert len(drv.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) == 2
    assert len(drv.find_elements(By.CSS_SELECTOR, "table.study tbody tr")) == 3
    assert _img_ok(drv, "main img")

    # Compare side by side: two columns, the hypothesis both runs share is marked.
    Select(drv.find_element(By.ID, "cmp-a")).select_by_value("r1/x-a")
    Select(drv.find_element(By.ID, "cmp-b")).select_by_value("r2/x-b")
    drv.find_element(By.ID, "cmp-go").click()
    cols = drv.find_elements(By.CSS_SELECTOR, "#compare > div")
    assert len(cols) == 2
    assert [len(c.find_elements(By.CSS_SELECTOR, "tr")) - 1 for c in cols] == [3, 2]
    assert {e.text.split("\n")[0] for e in drv.find_elements(By.CSS_SELECTOR, "#compare tr.common td:nth-child(2)")} == {"verb"}
    assert "compare=" in drv.current_url
    drv.save_screenshot(str(tmp_path / "index.png"))

    # Into one run's report: one hypothesis shown at a time, ranked by κ.
    drv.find_element(By.LINK_TEXT, "r1/x-a").click()
    assert drv.title.startswith("autoscope r1 / x-a")
    assert _visible_sections(drv) == ["h1"]
    assert drv.find_element(By.CSS_SELECTOR, "section#h1 table.samples").is_displayed()
    assert "<b>" not in drv.find_element(By.CSS_SELECTOR, "section#h1 h4").get_attribute("innerHTML").replace("&lt;b&gt;", "")
    assert _img_ok(drv, "#plot")
    drv.find_element(By.CSS_SELECTOR, "#hyp-list a[data-h='h3']").click()
    assert _visible_sections(drv) == ["h3"]
    drv.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    assert _visible_sections(drv) == ["h2"]
    drv.find_element(By.CSS_SELECTOR, "section#h2 a.next").click()
    assert _visible_sections(drv) == ["h3"]

    # Sites: the ranking shows the chosen site's scores only.
    def shown_scores(site: str) -> list[str]:
        return [td.text for td in drv.find_elements(By.CSS_SELECTOR, f"td.score[data-site='{site}']") if td.is_displayed()]

    assert shown_scores("L18")[:3] == ["0.800 [0.700, 0.900]", "0.500", "0.600"] and not shown_scores("L24")
    Select(drv.find_element(By.ID, "site-select")).select_by_value("L24")
    assert shown_scores("L24")[:3] == ["0.700 [0.600, 0.800]", "0.500", "0.400"] and not shown_scores("L18")
    assert drv.find_element(By.ID, "ranking-site").text == "L24"
    drv.save_screenshot(str(tmp_path / "report.png"))

    # And back to all runs.
    drv.find_element(By.ID, "to-index").click()
    assert drv.find_element(By.TAG_NAME, "h1").text == "autoscope runs"
    assert (tmp_path / "index.png").stat().st_size > 10_000 and (tmp_path / "report.png").stat().st_size > 10_000

"""The MLflow UI as `make ui` serves it, checked in headless Chromium, through its REST API, and for safety."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own browser downloads are not used
# Without the background-networking flags Chromium keeps calling Google's hosts, which a closed CI network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EXPERIMENT = "mnist_5k"
RUNS = {  # run name -> (params, per-epoch accuracy, test_accuracy)
    "lenet5-mnist_5k": ({"train.model": "lenet5", "train.epochs": "3"}, [0.81, 0.93, 0.96], 0.9731),
    "mlp-mnist_5k": ({"train.model": "mlp", "train.epochs": "3"}, [0.72, 0.85, 0.90], 0.9156),
}
pytestmark = pytest.mark.e2e


MODEL = "mnist_5k-classifier"


def _fill_store(mlruns: Path, model_card: str) -> tuple[str, dict[str, str]]:
    """Two finished runs laid out as train/evaluate leave them: params, epoch metrics, test metrics, an artifact;
    and a registered model version whose description is a model card the export stage wrote."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlruns / 'mlflow.db'}")
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=(mlruns / "artifacts" / EXPERIMENT).as_uri())
    blessing = mlruns.parent / "blessing.json"
    run_ids = {}
    for name, (params, accuracy, test_accuracy) in RUNS.items():
        run = client.create_run(experiment_id, run_name=name, tags={"git.commit": "0" * 40, "device": "cpu"})
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value)
        for epoch, value in enumerate(accuracy):
            client.log_metric(run.info.run_id, "accuracy", value, step=epoch)
        client.log_metric(run.info.run_id, "test_accuracy", test_accuracy)
        blessing.write_text(json.dumps({"blessed": test_accuracy > 0.97}))
        client.log_artifact(run.info.run_id, str(blessing), artifact_path="evaluate")
        client.set_terminated(run.info.run_id, "FINISHED")
        run_ids[name] = run.info.run_id
    client.create_registered_model(MODEL)
    client.create_model_version(
        MODEL, f"runs:/{run_ids['lenet5-mnist_5k']}/model", run_id=run_ids["lenet5-mnist_5k"], description=model_card
    )
    return experiment_id, run_ids


def _get(url: str, data: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(data).encode() if data is not None else None, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory, reproduced_repo):
    """`make ui` on a free port against a store of two runs and a registered version carrying the model card of the
    session's reproduced pipeline; stopped (the whole process group) afterwards."""
    base = tmp_path_factory.mktemp("ui")
    mlruns = base / "mlruns"
    mlruns.mkdir()
    experiment_id, run_ids = _fill_store(mlruns, (reproduced_repo / "artifacts/export/model_card.md").read_text())
    port = free_port()
    log = (base / "server.log").open("w")
    # -o: the venv is there already; make must not reinstall it in the middle of a test run.
    command = [
        "make",
        "-C",
        str(ROOT),
        "--no-print-directory",
        "-o",
        ".venv/.installed",
        "ui",
        f"UI_PORT={port}",
        f"MLRUNS={mlruns}",
        f"BIN={Path(sys.executable).parent}",
    ]
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"make ui exited {process.returncode}:\n{(base / 'server.log').read_text()[-3000:]}")
            try:
                if _get(f"{url}/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"make ui did not answer on {url} within 180 s:\n{(base / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(1)
        yield {
            "url": url,
            "port": port,
            "pid": process.pid,
            "experiment_id": experiment_id,
            "run_ids": run_ids,
            "dir": base,
        }
    finally:
        stop_process_group(process, timeout=30)
        log.close()


def test_rest_api_lists_both_runs_with_their_metrics_and_artifacts(server):
    url = server["url"]
    status, body = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}")
    assert status == 200, body[:500]
    assert json.loads(body)["experiment"]["experiment_id"] == server["experiment_id"]
    status, body = _get(
        f"{url}/api/2.0/mlflow/runs/search",
        {"experiment_ids": [server["experiment_id"]], "order_by": ["metrics.test_accuracy DESC"]},
    )
    assert status == 200, body[:500]
    runs = json.loads(body)["runs"]
    assert [run["info"]["run_name"] for run in runs] == ["lenet5-mnist_5k", "mlp-mnist_5k"]
    for run in runs:
        metrics = {metric["key"]: metric["value"] for metric in run["data"]["metrics"]}
        assert metrics["test_accuracy"] == pytest.approx(RUNS[run["info"]["run_name"]][2])
        assert run["info"]["status"] == "FINISHED"
    run_id = server["run_ids"]["lenet5-mnist_5k"]
    status, body = _get(f"{url}/get-artifact?path=evaluate/blessing.json&run_uuid={run_id}")
    assert status == 200 and json.loads(body) == {"blessed": True}


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "../../../../../../etc/passwd", "/etc/passwd", "evaluate/../../../../etc/passwd"]
)
def test_artifacts_outside_the_run_are_refused(server, path):
    run_id = server["run_ids"]["lenet5-mnist_5k"]
    status, body = _get(f"{server['url']}/get-artifact?path={urllib.parse.quote(path)}&run_uuid={run_id}")
    assert 400 <= status < 500, (status, body[:200])
    assert b"root:" not in body


def test_the_server_listens_on_loopback_only(server):
    import psutil

    children = psutil.Process(server["pid"]).children(recursive=True)
    listening = {
        (connection.laddr.ip, connection.laddr.port)
        for process in children
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN
    }
    assert ("127.0.0.1", server["port"]) in listening
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening


def test_the_experiment_page_shows_both_runs_and_their_metrics_in_chromium(server):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (dev extra) is not installed")
    url, experiment_id = server["url"], server["experiment_id"]
    screenshots = {"runs": server["dir"] / "mlflow_ui.png", "compare": server["dir"] / "mlflow_ui_compare.png"}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(f"{url}/#/experiments/{experiment_id}/runs", wait_until="domcontentloaded")
            # A React app: the run names appear once its first search-runs call has come back.
            for name in RUNS:
                page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=90_000)
            # MLflow 3 lists metrics under "Columns" and shows none by default: pick one, as a user would.
            page.get_by_role("button", name="Columns").click()
            page.get_by_text("test_accuracy", exact=True).first.click()
            page.keyboard.press("Escape")
            value = page.get_by_text("0.9731", exact=True).first
            value.wait_for(state="visible", timeout=30_000)
            value.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshots["runs"]))

            # The compare view puts both runs' params and metrics side by side.
            query = urllib.parse.urlencode(
                {"runs": json.dumps(sorted(server["run_ids"].values())), "experiments": json.dumps([experiment_id])}
            )
            page.goto(f"{url}/#/compare-runs?{query}", wait_until="domcontentloaded")
            page.get_by_text("Comparing 2 Runs").first.wait_for(state="visible", timeout=90_000)
            for text in ("test_accuracy", "0.973", "0.916", "lenet5", "mlp"):  # metrics rounded to 3 decimals; params
                page.get_by_text(text, exact=True).first.wait_for(state="visible", timeout=30_000)
            page.get_by_text("test_accuracy", exact=True).first.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshots["compare"]), full_page=True)
        finally:
            browser.close()
    for screenshot in screenshots.values():
        assert screenshot.stat().st_size > 10_000
        shutil.copy(screenshot, Path(tempfile.gettempdir()) / screenshot.name)  # the latest ones, to look at


def test_the_model_version_page_shows_the_model_card_in_chromium(server):
    """The card renders as Markdown on the version's page: its headings, the per-class table and the gate."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (dev extra) is not installed")
    screenshot = server["dir"] / "mlflow_ui_model_card.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(f"{server['url']}/#/models/{MODEL}/versions/1", wait_until="domcontentloaded")
            heading = page.get_by_role("heading", name=f"Model card: {MODEL} version")
            heading.first.wait_for(state="visible", timeout=90_000)
            for name in ("Quantitative analysis", "Variants and their trade-offs", "Gate verdict", "Limitations"):
                page.get_by_role("heading", name=name).first.wait_for(state="visible", timeout=30_000)
            # The per-class table is a table, not pipes in a paragraph; the escaped names read as typed.
            page.get_by_role("columnheader", name="test recall").first.wait_for(state="visible", timeout=30_000)
            assert page.get_by_text("evaluate.min_accuracy", exact=False).count() >= 1
            assert page.get_by_text("\\_", exact=False).count() == 0  # no escape shows through
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    shutil.copy(screenshot, Path(tempfile.gettempdir()) / screenshot.name)

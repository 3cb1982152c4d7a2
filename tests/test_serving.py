"""`mlflow models serve` of the registry's champion answers a REST request with an image; predict reads models:/
URIs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tf_keras as keras

from components.export import serving as export_serving
from pipelines import predict
from tests.conftest import free_port, stop_process_group
from tfpipe import tracking

CLASS_NAMES = ["top", "middle", "bottom"]
MODEL_NAME = "serving_test"
SERVER_START_TIMEOUT_S = 90


def band_images() -> np.ndarray:
    """One 12x12 image per class: class k is a bright band in the k-th third."""
    images = np.full((3, 12, 12, 1), 20, np.uint8)
    for label in range(3):
        images[label, label * 4 : (label + 1) * 4] = 220
    return images


def build_band_model() -> keras.Model:
    inputs = keras.Input(shape=(12, 12, 1), dtype="float32", name="image")
    means = keras.layers.Flatten()(keras.layers.AveragePooling2D(pool_size=(4, 12))(inputs))
    logits = keras.layers.Dense(3, kernel_initializer="identity", use_bias=False)(keras.layers.Rescaling(0.05)(means))
    return keras.Model(inputs, keras.layers.Activation("softmax")(logits))


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A SQLite store where the serving module of a tiny model is registered and aliased champion."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the store puts artifacts beside the working directory's mlruns/
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("serving")  # in this store: an experiment another test made active is in another
        with mlflow.start_run():
            version = export_serving.register_serving_model(
                export_serving.ServingModule(build_band_model(), CLASS_NAMES),
                model_name=MODEL_NAME,
                example_images=band_images()[:1],
                num_classes=3,
                tags={"blessed": "true"},
            )
        mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, tracking.CHAMPION_ALIAS, str(version))
    assert version == 1
    return {"root": root, "uri": uri}


def wait_for_ping(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited {server.returncode}:\n{server.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise TimeoutError(f"mlflow models serve did not answer {url}/ping within {timeout_s} s")


def test_mlflow_models_serve_of_the_champion_classifies_an_image(champion):
    port = free_port()
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": champion["uri"],
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL_NAME}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=champion["root"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the workers it forks are stopped with it
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ping(url, server, SERVER_START_TIMEOUT_S)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": band_images().tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                predictions = json.loads(response.read())["predictions"]
        except urllib.error.HTTPError as error:
            os.killpg(server.pid, signal.SIGTERM)
            raise AssertionError(
                f"/invocations answered {error.code}: {error.read().decode()[-500:]}\n"
                f"server log:\n{server.communicate(timeout=15)[0][-3000:]}"
            ) from None
        probabilities = np.array(predictions)
        assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert probabilities.argmax(axis=1).tolist() == [0, 1, 2]
    finally:
        stop_process_group(server, timeout=15)


def test_predict_reads_the_champion_from_the_registry(champion, tmp_path, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion["uri"])
    path = tmp_path / "middle.png"
    Image.fromarray(np.kron(band_images()[1, ..., 0], np.ones((3, 3), np.uint8))).save(path)  # 36x36
    assert predict.main(["--model", f"models:/{MODEL_NAME}@champion", "--top-k", "1", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: middle ")
    assert predict.main(["--model", f"models:/{MODEL_NAME}@no_such_alias", str(path)]) == 2
    assert "cannot download the model" in capsys.readouterr().err

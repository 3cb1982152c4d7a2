"""The tf.distribute path on two logical CPU devices, in a real subprocess.

(Deterministic training is tested end to end: tests/test_pipeline_e2e.py runs `dvc repro -f --no-run-cache` twice.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = (
    "preprocess:\n  image_height: 12\n  image_width: 12\n"
    "train:\n  model: lenet5\n  epochs: 2\n  batch_size: 16\n  distribute: {distribute}\n"
    "  augmentation:\n    rotation: 0.05\n    erasing: 0.5\n"
)

TRAIN_ON_TWO_CPUS = """
import pipelines, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
from components.preprocess import stage as preprocess
from components.train import stage as train
preprocess.main()
train.main()
"""


def run_python(code_or_module: list[str], cwd: Path, mlflow_store: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    result = subprocess.run([sys.executable, *code_or_module], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_mirrored_strategy_trains_on_two_logical_cpus(prepared_dir, tmp_path, mlflow_store):
    import mlflow

    (tmp_path / "params.yaml").write_text(PARAMS.format(distribute="mirrored"))
    run_python(["-c", TRAIN_ON_TWO_CPUS], tmp_path, mlflow_store)
    run_id = json.loads((tmp_path / "artifacts/train/run.json").read_text())["run_id"]
    run = mlflow.get_run(run_id)
    assert run.data.tags["strategy"] == "mirrored (2 replicas)"
    assert run.data.tags["device"] == "CPU" and run.data.tags["precision"] == "float32"
    assert run.info.status == "FINISHED"

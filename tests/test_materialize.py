"""The embedded default dataset is written byte-for-byte the same, once."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import materialize, raw_folder, sources
from tfpipe.params_file import yaml_load


def test_mnist_5k_is_shipped_in_the_wheel():
    images, labels = sources.load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10


def test_png_encoding_is_deterministic_and_lossless(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, size=(28, 28)).astype(np.uint8)
    first, second = sources.encode_png(image), sources.encode_png(image.copy())
    assert first == second
    path = tmp_path / "x.png"
    path.write_bytes(first)
    assert np.array_equal(np.asarray(Image.open(path)), image)


def test_folder_is_idempotent_and_exact(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(1).integers(0, 256, size=(6, 4, 4)).astype(np.uint8)
    labels = np.array([0, 1, 0, 1, 0, 1])
    raw = tmp_path / "raw"
    assert sources.write_image_folder(images, labels, ["zero", "one"], raw) == 6
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.rglob("*.png")}
    assert sources.write_image_folder(images, labels, ["zero", "one"], raw) == 0
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.rglob("*.png")} == digest
    # A smaller dataset replaces the files this command wrote and removes the ones it no longer has.
    assert sources.write_image_folder(images[:2], labels[:2], ["zero", "one"], raw) == 2
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png")) == ["one/00001.png", "zero/00000.png"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_it_did_not_write_stop_it_before_anything_changes(tmp_path, monkeypatch, capsys):
    """`make repro` with the default source over a folder of the user's own photos: nothing is deleted."""
    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(1).integers(0, 256, size=(4, 4, 4)).astype(np.uint8)
    raw = tmp_path / "data/raw"
    sources.write_image_folder(images, np.array([0, 1, 0, 1]), ["zero", "one"], raw)
    (raw / "my_photos").mkdir()
    (raw / "my_photos/holiday.jpg").write_bytes(b"the user's photo")
    (raw / "one/00001.png").write_bytes(b"edited by hand")  # a file it wrote, changed since: the user's now
    before = _tree(raw)

    with pytest.raises(raw_folder.ForeignFilesError) as error:
        sources.write_image_folder(images[:2], np.array([0, 1]), ["zero", "one"], raw, source="mnist_5k")
    message = str(error.value)
    assert "holds 2 file(s)" in message and "my_photos/holiday.jpg" in message and "one/00001.png" in message
    assert "Nothing was changed" in message and "--source folder" in message
    assert _tree(raw) == before

    with pytest.raises(SystemExit) as exited:  # the command line says the same and exits non-zero
        materialize.main(["--raw-dir", str(raw), "--no-dvc"])
    assert "my_photos/holiday.jpg" in str(exited.value) and "--source folder" in str(exited.value)
    assert _tree(raw) == before


def test_files_dvc_can_restore_may_be_replaced(tmp_path, monkeypatch):
    """data/raw checked out by DVC (a clone + `dvc pull`), with no record of this command: another source may
    replace it."""
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True)
    raw = Path("data/raw")
    (raw / "cat").mkdir(parents=True)
    (raw / "cat/1.png").write_bytes(b"tracked by dvc")
    Path("data.dvc").write_text("outs:\n- path: data/raw\n")
    subprocess.run([sys.executable, "-m", "dvc", "commit", "--quiet", "--force", "data.dvc"], check=True)
    images = np.random.default_rng(1).integers(0, 256, size=(2, 4, 4)).astype(np.uint8)
    sources.write_image_folder(images, np.array([0, 1]), ["zero", "one"], raw)
    assert sorted(_tree(raw)) == ["one/00001.png", "zero/00000.png"]


def test_from_refuses_symlinks_leading_out_of_the_folder_and_copies_ones_inside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source, secret = tmp_path / "mine", tmp_path / "secret.txt"
    (source / "cat").mkdir(parents=True)
    (source / "cat/a.png").write_bytes(b"a")
    (source / "cat/b.png").symlink_to(source / "cat/a.png")  # inside the folder: copied as a file
    secret.write_bytes(b"private")
    (source / "cat/c.png").symlink_to(secret)
    (source / "dog").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match="2 entries that cannot be copied as image files") as error:
        sources.materialize("folder", tmp_path / "raw", source)
    assert "cat/c.png" in str(error.value) and "dog" in str(error.value)
    assert not (tmp_path / "raw").exists()
    (source / "cat/c.png").unlink()
    (source / "dog").unlink()
    sources.materialize("folder", tmp_path / "raw", source)
    assert _tree(tmp_path / "raw") == {"cat/a.png": b"a", "cat/b.png": b"a"}
    assert not any(path.is_symlink() for path in (tmp_path / "raw").rglob("*"))


def test_tfds_dataset_is_written_in_split_folders_with_its_class_order(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from components.ingest.layout import read_layout

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "data/raw"
    with tfds.testing.mock_data(num_examples=12):  # no network: tfds.load returns random examples
        materialize.main(["--source", "tfds:fashion_mnist", "--no-dvc"])
    classes = (raw / "classes.txt").read_text().splitlines()
    assert classes[:2] == ["T-shirt_top", "Trouser"] and len(classes) == 10  # tfds label order, "/" replaced
    files = sorted(path.relative_to(raw).as_posix() for path in raw.rglob("*.png"))
    assert len(files) == 24 and {file.split("/")[0] for file in files} == {"train", "test"}
    assert np.asarray(Image.open(raw / files[0])).shape == (28, 28)
    layout = read_layout(raw)
    assert layout.kind == "split_folders" and layout.class_names == classes


def test_rgb_tfds_dataset_keeps_three_channels(tmp_path):
    import tensorflow_datasets as tfds

    raw = tmp_path / "raw"
    with tfds.testing.mock_data(num_examples=3):
        raw_folder.write_files(sources.iter_tfds("cifar10", tmp_path / "tfds"), raw)
    image = next(raw.glob("train/*/*.png"))
    assert np.asarray(Image.open(image)).shape == (32, 32, 3)


def test_a_users_folder_is_copied_exactly_and_tracked_by_dvc(tmp_path, monkeypatch):
    import subprocess
    import sys

    source = tmp_path / "mine"
    for name in ("train/cat/a b.png", "test/dog/é.jpg", "train/cat/.DS_Store"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode())
    previous = tmp_path / "previous"
    (previous / "old").mkdir(parents=True)
    (previous / "old/stray.png").write_bytes(b"from the previous dataset")
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True)
    materialize.main(["--source", "folder", "--from", str(previous)])

    materialize.main(["--source", "folder", "--from", str(source)])  # replaces the previous dataset it wrote

    raw = project / "data/raw"
    assert sorted(path.relative_to(raw).as_posix() for path in raw.rglob("*") if path.is_file()) == [
        "test/dog/é.jpg",
        "train/cat/a b.png",
    ]
    assert "nfiles: 2" in (project / "data.dvc").read_text()


def _project(tmp_path, monkeypatch) -> Path:
    """A project folder with DVC initialised and the repository's params.yaml; the working directory."""
    import shutil
    import subprocess
    import sys

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", project / "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True)
    return project


def _state(project: Path) -> dict:
    """data/raw's files, data.dvc and params.yaml: what a failed run must leave as it was."""
    raw = project / "data/raw"
    return {
        "raw": _tree(raw) if raw.exists() else None,
        "data.dvc": (project / "data.dvc").read_text() if (project / "data.dvc").exists() else None,
        "params": (project / "params.yaml").read_text(),
    }


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def test_special_files_loops_and_long_names_are_named_and_change_nothing(tmp_path, monkeypatch):
    import os

    project = _project(tmp_path, monkeypatch)
    materialize.main(["--source", "folder", "--from", str(_folder(tmp_path / "first", {"cat/a.png": b"a"}))])
    before = _state(project)
    source = _folder(tmp_path / "second", {"cat/b.png": b"b", f"dog/{'x' * 246}.png": b"long"})
    os.mkfifo(source / "dog/pipe.png")
    (source / "dog/loop").symlink_to(source / "dog/loop")
    with pytest.raises(SystemExit) as error:
        materialize.main(["--source", "folder", "--from", str(source)])
    message = str(error.value)
    assert "dog/pipe.png: a named pipe (FIFO) file, not a regular file" in message
    assert "dog/loop: a symlink loop" in message and "Nothing was changed" in message
    assert _state(project) == before
    (source / "dog/pipe.png").unlink()
    (source / "dog/loop").unlink()
    materialize.main(["--source", "folder", "--from", str(source)])  # a 246-character name is fine
    assert (project / f"data/raw/dog/{'x' * 246}.png").read_bytes() == b"long"
    assert not raw_folder.staging_folders(project / "data/raw")


def test_class_names_ingest_would_refuse_stop_it_before_anything_is_copied(tmp_path, monkeypatch):
    project = _project(tmp_path, monkeypatch)
    materialize.main(["--source", "folder", "--from", str(_folder(tmp_path / "first", {"cat/a.png": b"a"}))])
    before = _state(project)
    markup = "<img src=x onerror=alert(1)>"
    files = {"cats (old)/a.png": b"a", "dog's toys/b.png": b"b", f"{markup}/c.png": b"c", " x/d.png": b"d"}
    with pytest.raises(SystemExit) as error:
        materialize.main(["--source", "folder", "--from", str(_folder(tmp_path / "second", files))])
    message = str(error.value)
    assert "2 class name(s) cannot be used" in message and repr(markup) in message and "' x'" in message
    assert "Rename those folders" in message and "Nothing was changed" in message
    assert _state(project) == before and not raw_folder.staging_folders(project / "data/raw")
    # the same names in a labels file are refused too; ordinary names with punctuation are copied
    labels = {"a.png": b"a", "b.png": b"b", "labels.csv": f'file,label\na.png,"{markup}"\nb.png,c#\n'.encode()}
    with pytest.raises(SystemExit, match="1 class name\\(s\\) cannot be used"):
        materialize.main(["--source", "folder", "--from", str(_folder(tmp_path / "third", labels))])
    assert _state(project) == before
    ordinary = {
        "cats (old)/a.png": b"a",
        "dog's toys/b.png": b"b",
        "1+1/c.png": b"c",
        "a,b/d.png": b"d",
        "c#/e.png": b"e",
    }
    materialize.main(["--source", "folder", "--from", str(_folder(tmp_path / "fourth", ordinary))])
    assert _tree(project / "data/raw") == ordinary


def test_a_failure_at_any_step_leaves_raw_data_dvc_and_params_as_they_were(tmp_path, monkeypatch):
    project = _project(tmp_path, monkeypatch)
    materialize.main(["--source", "folder", "--from", str(_folder(tmp_path / "first", {"cat/a.png": b"a"}))])
    before = _state(project)
    second = _folder(tmp_path / "second", {"dog/b.png": b"b"})

    def broken_dvc(*args):
        raise KeyboardInterrupt  # Ctrl-C while DVC hashes the new files

    monkeypatch.setattr(materialize, "_dvc", broken_dvc)
    with pytest.raises(SystemExit, match="interrupted.*are as they were"):
        materialize.main(["--source", "folder", "--from", str(second)])
    assert _state(project) == before and not raw_folder.staging_folders(project / "data/raw")
    monkeypatch.undo()
    monkeypatch.chdir(project)

    def unreadable(self):
        raise OSError(5, "Input/output error", str(self))

    monkeypatch.setattr(Path, "read_bytes", unreadable)  # a disk error while copying
    with pytest.raises(SystemExit, match="Input/output error.*\\nNothing was changed"):
        materialize.main(["--source", "folder", "--from", str(second)])
    monkeypatch.undo()
    monkeypatch.chdir(project)
    assert _state(project) == before and not raw_folder.staging_folders(project / "data/raw")
    # A killed run's staging folder is ours by its name: the next run removes it.
    (project / "data/.raw.tmp-killed").mkdir()
    materialize.main(["--source", "folder", "--from", str(second)])
    assert _tree(project / "data/raw") == {"dog/b.png": b"b"} and not raw_folder.staging_folders(project / "data/raw")


def test_switching_sources_back_and_forth_works(tmp_path, monkeypatch):
    """folder -> mnist_5k -> folder: each switch replaces what the last one wrote, and mnist_5k hashes to the value
    committed in this repository's data.dvc."""
    import yaml

    project = _project(tmp_path, monkeypatch)
    folder = _folder(tmp_path / "photos", {"cat/a.png": b"a", "dog/b.png": b"b"})
    materialize.main(["--source", "folder", "--from", str(folder)])
    materialize.main(["--source", "mnist_5k"])
    digest = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    committed = yaml.safe_load((Path(__file__).resolve().parents[1] / "data.dvc").read_text())["outs"][0]["md5"]
    assert digest == committed == materialize.MNIST_5K_DIGEST
    assert len(_tree(project / "data/raw")) == 5000
    materialize.main(["--source", "folder", "--from", str(folder)])
    assert _tree(project / "data/raw") == {"cat/a.png": b"a", "dog/b.png": b"b"}
    data = yaml_load((project / "params.yaml").read_text())["data"]
    assert data == {"source": "folder", "name": "photos", "kind": "auto", "target": None, "task": "auto"}


def test_a_tfds_dataset_downloads_and_prepares_for_real_from_a_local_server(tmp_path, monkeypatch):
    """Not a mock: tfds's own download manager fetches fashion_mnist's four files over HTTP (from a server on
    127.0.0.1 serving small files in the MNIST format), extracts them and prepares the dataset, then materialize
    writes it. A mock of tfds.load once hid a dependency the download path imports (importlib_resources)."""
    import gzip
    import http.server
    import threading
    from functools import partial

    from tensorflow_datasets.image_classification import mnist

    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    counts = {"train": 20, "t10k": 10}
    for prefix, count in counts.items():
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        (served / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 16 + images.tobytes(), mtime=0))
        (served / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0" * 8 + labels.tobytes(), mtime=0))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(mnist.FashionMNIST, "URL", f"http://127.0.0.1:{server.server_address[1]}/")
        monkeypatch.setattr(mnist, "_TRAIN_EXAMPLES", counts["train"])
        monkeypatch.setattr(mnist, "_TEST_EXAMPLES", counts["t10k"])
        monkeypatch.chdir(tmp_path)
        materialize.main(["--source", "tfds:fashion_mnist", "--no-dvc"])
    finally:
        server.shutdown()
    raw = tmp_path / "data/raw"
    assert len(list(raw.glob("train/*/*.png"))) == 20 and len(list(raw.glob("test/*/*.png"))) == 10
    assert (tmp_path / "data/tfds/fashion_mnist").is_dir()  # prepared by tfds itself

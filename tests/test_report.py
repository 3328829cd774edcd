"""report.html: unet3d-evaluate writes one beside its CSV, unet3d-report rewrites it; the page is one file whose
tables, order and pictures are checked here without a browser (tests/test_report_browser.py opens it in one)."""

import base64
import hashlib
import html.parser
import io
import shutil

import matplotlib.image
import nibabel
import numpy as np
import pytest

from helpers import read_log, run, write_config
from unet3d.config.experiment import load_experiment
from unet3d.report import slices
from unet3d.scripts.report import main as report_main


class Page(html.parser.HTMLParser):
    """What a test reads from a report: the case tables' rows, the pictures' sources, the figures' ids, the links."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.images, self.figures, self.links, self.cell = {}, [], [], [], None
        self.table = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "sortable" in (attrs.get("class") or ""):
            self.table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self.table is not None:
            self.table.append([])
        elif tag in ("td", "th") and self.table is not None:
            self.cell = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "figure":
            self.figures.append(attrs.get("id"))
        elif tag in ("a", "link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.table[-1].append(self.cell.strip())
            self.cell = None
        elif tag == "table":
            self.table = None


def decoded(uri):
    """The RGB(A) pixels of a ``data:image/png;base64`` URI."""
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    return matplotlib.image.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")


def has_colour(pixels, rgb):
    """Whether a picture holds a pixel of grey blended with ``rgb`` as the report fills errors (``slices.ALPHA``)."""
    grey = (pixels[..., :3] * 255 - slices.ALPHA * np.asarray(rgb)) / (1 - slices.ALPHA)
    return bool(((np.ptp(grey, axis=-1) < 4) & (grey.min(axis=-1) > -4)).any())


def digests(folder):
    """SHA-256 of every file under ``folder`` but the reports."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "report.html"}


@pytest.fixture(scope="module")
def evaluated_once(brats_data, tmp_path_factory):
    """Six predictions of the tiny config's training cases, evaluated by unet3d-evaluate: copies of the references,
    but case 002 misses its enhancing tumour and case 005 has an extra blob of oedema. Returns ``(predictions,
    config)``; tests change copies of the folder (``evaluated``)."""
    root = tmp_path_factory.mktemp("evaluated")
    tiny_config = write_config(root / "experiment" / "tiny.json", brats_data / "train")
    predictions = root / "predictions"
    predictions.mkdir()
    for case in load_experiment(tiny_config).cases("training"):
        image = nibabel.load(case.label)
        label_map = np.asarray(image.dataobj).copy()
        if case.id.endswith("002"):
            label_map[label_map == 4] = 1
        if case.id.endswith("005"):
            label_map[1:5, 1:5, 1:5] = 2
        nibabel.save(nibabel.Nifti1Image(label_map, image.affine), predictions / f"{case.id}.nii.gz")
    run("unet3d-evaluate", "--prediction_dir", predictions, "--config_filename", tiny_config, "--group", "training")
    return predictions, tiny_config


@pytest.fixture
def evaluated(evaluated_once, tmp_path):
    """A copy of ``evaluated_once``'s predictions, evaluation and report, and its config."""
    predictions, config = evaluated_once
    shutil.copytree(predictions, tmp_path / "predictions")
    return tmp_path / "predictions", config


def test_evaluate_writes_a_self_contained_report_worst_case_first(evaluated):
    predictions, _ = evaluated
    text = (predictions / "report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<link" not in text
    content = Page(text)
    assert all(link.startswith("#") for link in content.links), content.links
    [rows] = content.tables.values()
    header, body = rows[0], rows[1:]
    assert header[:2] == ["case", "mean Dice"] and len(body) == 6
    assert [row[0] for row in body[:2]] == ["BraTS20_Training_002", "BraTS20_Training_005"]
    assert [float(row[1]) for row in body] == sorted(float(row[1]) for row in body)
    scores = {(r["case"], r["region"]): float(r["dice"]) for r in read_log(predictions / "evaluation.csv")}
    assert float(body[0][header.index("ET Dice")]) == pytest.approx(scores["BraTS20_Training_002", "ET"], abs=1e-4)
    # Every case is drawn (6 under the limit); the missed enhancing tumour shows as false negatives, the blob as
    # false positives, each where the worst region's error is.
    assert len(content.figures) == 6 and len(content.images) == 6 + 1  # and the volume scatter
    pictures = dict(zip(content.figures, content.images[1:]))
    missed = decoded(next(uri for key, uri in pictures.items() if key.endswith("002")))
    extra = decoded(next(uri for key, uri in pictures.items() if key.endswith("005")))
    assert has_colour(missed, slices.FALSE_NEGATIVE) and not has_colour(missed, slices.FALSE_POSITIVE)
    assert has_colour(extra, slices.FALSE_POSITIVE) and not has_colour(extra, slices.FALSE_NEGATIVE)
    perfect = decoded(next(uri for key, uri in pictures.items() if key.endswith("001")))
    assert not has_colour(perfect, slices.FALSE_POSITIVE) and not has_colour(perfect, slices.FALSE_NEGATIVE)
    for uri in content.images:
        assert decoded(uri).shape[0] > 50


def test_report_rewrites_a_folder_and_draws_only_the_worst_beyond_the_limit(evaluated, brats_data, capsys):
    predictions, config = evaluated
    before = {**digests(predictions), **digests(brats_data)}
    report_main([str(predictions), "--config_filename", str(config), "--group", "training", "--pictures", "1",
                 "--cases", "BraTS20_Training_004", "--channel", "2"])
    assert capsys.readouterr().out.strip() == str(predictions / "report.html")
    content = Page((predictions / "report.html").read_text(encoding="utf-8"))
    assert [f.rsplit("-", 1)[-1] for f in content.figures] == ["BraTS20_Training_002", "BraTS20_Training_004"]
    text = (predictions / "report.html").read_text(encoding="utf-8")
    assert "Pictures of the 1 worst of 6 cases" in text and str(config) in text  # the config at a glance
    assert {**digests(predictions), **digests(brats_data)} == before


def report_error(capsys, *args):
    """Run unet3d-report in this process (each error costs no start-up); returns its one error line."""
    with pytest.raises(SystemExit) as stop:
        report_main([str(arg) for arg in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("unet3d-report: error: "), lines
    return lines[0]


def test_report_errors_are_one_line(evaluated, tmp_path, capsys):
    predictions, config = evaluated
    assert "--channel 4: the images have channels 0 to 3" in report_error(
        capsys, predictions, "--config_filename", config, "--group", "training", "--channel", 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no evaluation.csv" in report_error(capsys, empty)
    assert "not a folder" in report_error(capsys, tmp_path / "nowhere")
    # Outside a run the references are not known unless given as unet3d-evaluate took them.
    assert "--label_dir" in report_error(capsys, predictions)
    labels = tmp_path / "labels"
    labels.mkdir()
    for path in sorted(predictions.glob("*.nii.gz")):
        shutil.copy(path, labels / path.name)
    regions = ("--labels", 2, 1, 4, "--label_mode", "regions")
    assert "--cases: nobody" in report_error(capsys, predictions, "--label_dir", labels, *regions, "--cases", "nobody")
    # Labels other than those evaluated (each value on its own, read from the label maps) are refused.
    assert "scores region(s) WT, TC, ET, which the labels (label1, label2, label4)" in report_error(
        capsys, predictions, "--label_dir", labels)
    (labels / "BraTS20_Training_002.nii.gz").unlink()
    line = report_error(capsys, predictions, "--label_dir", labels, *regions)
    assert "BraTS20_Training_002" in line and "missing" in line


SORT_BY_MEAN_DICE = """(() => {
  const table = document.querySelector("table.sortable"), th = table.tHead.rows[0].cells[1];
  const column = () => Array.from(table.tBodies[0].rows, row => parseFloat(row.cells[1].textContent));
  const before = column();
  th.click();
  const first = column();
  th.click();
  return {before, first, second: column(), order: th.dataset.order};
})()"""
IMAGES = "Array.from(document.images, image => image.complete && image.naturalWidth > 0 && image.naturalHeight > 0)"


def check_in_chromium(report, tmp_path):
    """Open ``report`` from its file:// URL in headless Chromium: no error, no request but the file (and its data:
    URIs), the case table sorts both ways, every picture decodes; returns the screenshot's path."""
    from browser import Browser

    browser = Browser(tmp_path / "profile")
    try:
        browser.open(report.as_uri())
        sorted_rows = browser.evaluate(SORT_BY_MEAN_DICE)
        images = browser.evaluate(IMAGES)
        browser.screenshot(tmp_path / "report.png")
        assert not browser.errors(), browser.errors()
        assert [url for url in browser.requests() if not url.startswith(("file://", "data:"))] == []
    finally:
        browser.close()
    assert sorted_rows["before"] == sorted(sorted_rows["before"]) != sorted_rows["before"][::-1]  # worst first
    assert sorted_rows["second"] == sorted(sorted_rows["before"], reverse=True) and sorted_rows["order"] == "desc"
    assert images and all(images), images
    assert decoded_file(tmp_path / "report.png").shape[0] > 500
    return tmp_path / "report.png"


def decoded_file(path):
    """The pixels of a PNG file."""
    return matplotlib.image.imread(path, format="png")


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (Debian: apt-get install chromium)")
def test_the_evaluation_report_works_in_chromium(evaluated, tmp_path):
    predictions, _ = evaluated
    check_in_chromium(predictions / "report.html", tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (Debian: apt-get install chromium)")
def test_a_run_report_works_in_chromium(single_config, tmp_path):
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--set", "training.n_epochs=1")
    report = single_config.parent / "tiny" / "report.html"
    assert "Learning curves" in report.read_text(encoding="utf-8")
    check_in_chromium(report, tmp_path)

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ssmd.cli.main import build_parser, main

TINY = [
    "data.format=synthetic",
    "data.synthetic.n_images=12",
    "data.synthetic.image_size=128",
    "data.input_size=128",
    "model.fpn_channels=16",
    "model.head_convs=1",
    "train.max_iters=4",
    "train.batch_size=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.warmup_iters=1",
    "train.progress=false",
    "split.train=0.5",
    "split.val=0.25",
    "split.test=0.25",
]


def test_help_explains_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    text = parser.format_help()
    for command in ("train", "predict", "evaluate", "data", "demo"):
        assert command in text
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    assert "--max-dets" in capsys.readouterr().out


def test_help_texts_render_percent_signs_once() -> None:
    """argparse only %-formats some strings; a literal '%%' must never reach the reader."""
    import argparse

    parser = build_parser()
    texts = [parser.format_help()]
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    texts.append(sub.format_help())
                    stack.append(sub)
    assert len(texts) > 5
    for text in texts:
        assert "%%" not in text, text


def test_synth_convert_stats_and_evaluate_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "dsb"
    assert (
        main(["data", "synth", "--out", str(root), "-n", "3", "--size", "64", "--seed", "1"]) == 0
    )
    gt_path = tmp_path / "gt.json"
    assert main(["data", "convert", "--format", "dsb2018", str(root), "--out", str(gt_path)]) == 0
    gt = json.loads(gt_path.read_text())
    names = [img["file_name"] for img in gt["images"]]
    assert [img["id"] for img in gt["images"]] == [1, 2, 3]
    assert names == sorted(names)
    assert all({"file_name", "width", "height"} <= set(img) for img in gt["images"])
    assert (
        gt["categories"] == [{"id": 1, "name": "nucleus"}]
        or gt["categories"][0]["name"] == "nucleus"
    )
    # perfect predictions from the ground truth itself
    preds = [
        {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
    ]
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps(preds))
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--gt",
                str(gt_path),
                "--pred",
                str(pred_path),
                "--froc",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    for key in ("AP", "AP50", "AP75", "AR", "CPM", "sensitivity@0.125", "sensitivity@8"):
        assert key in metrics
    assert metrics["AP"] == pytest.approx(1.0)
    assert main(["data", "stats", "--format", "dsb2018", str(root)]) == 0
    assert "3" in capsys.readouterr().out


def test_bad_input_is_one_line_error_naming_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
                "annotations": [],
                "categories": [{"id": 1, "name": "n"}],
            }
        )
    )
    pred = tmp_path / "pred.json"
    pred.write_text(
        json.dumps([{"image_id": 7, "category_id": 1, "bbox": [0, 0, 2, 2], "score": 0.5}])
    )
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err
    assert "pred.json" in err and "image_id" in err and "7" in err
    assert main(["train", "train.max_iter=3"]) == 2
    assert "train.max_iter" in capsys.readouterr().err


def test_train_predict_evaluate_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    for name in (
        "config.yaml",
        "split.json",
        "metrics.jsonl",
        "last.pt",
        "best.pt",
        "test_metrics.json",
    ):
        assert (out / name).is_file(), name
    # resume a finished run with a longer schedule continues from step 4
    assert (
        main(
            [
                "train",
                *TINY,
                f"output_dir={out}",
                f"data.cache_dir={tmp_path / 'cache'}",
                "train.max_iters=6",
                "--resume",
                str(out / "last.pt"),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 6
    # predict on an image folder of odd-sized images, with ids as `data convert` assigns them
    root = tmp_path / "dsb"
    assert (
        main(["data", "synth", "--out", str(root), "-n", "2", "--size", "97", "--seed", "3"]) == 0
    )
    pred = tmp_path / "pred.json"
    viz = tmp_path / "viz"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(out / "best.pt"),
                "--format",
                "dsb2018",
                str(root),
                "--out",
                str(pred),
                "--viz",
                str(viz),
            ]
        )
        == 0
    )
    results = json.loads(pred.read_text())
    assert {r["image_id"] for r in results} <= {1, 2}
    assert all(0 <= r["bbox"][0] <= 97 and r["bbox"][2] >= 0 for r in results)
    assert len(list(viz.glob("*.png"))) == 2
    metrics = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "best.pt"),
                "--format",
                "dsb2018",
                str(root),
                "--out",
                str(metrics),
            ]
        )
        == 0
    )
    assert "AP50" in json.loads(metrics.read_text())
    # without SRC: the run's own test part, the numbers run_training reported for best.pt
    assert main(["evaluate", "--checkpoint", str(out / "best.pt"), "--out", str(metrics)]) == 0
    own = json.loads(metrics.read_text())
    reported = json.loads((out / "test_metrics.json").read_text())["test"]
    assert own["AP"] == pytest.approx(reported["AP"]) and own["AP50"] == pytest.approx(
        reported["AP50"]
    )


def test_demo_quick_writes_table_overlays_and_froc(tmp_path: Path) -> None:
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "demo_results.json").read_text())
    assert [r["run"] for r in rows] == ["supervised-10%", "pseudo-label-10%"]
    assert rows[0]["labeled_images"] == rows[1]["labeled_images"]
    # the supervised run is pseudo-labeling's stage 1: not trained twice
    runs = tmp_path / "runs"
    assert not (runs / "pseudo-label-10%" / "stage1" / "best.pt").exists()
    assert (runs / "supervised-10%" / "best.pt").is_file()
    assert (tmp_path / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "overlays").rglob("*.png"))) == 8


def test_demo_all_runs_adds_the_ceiling_and_ssmd() -> None:
    from ssmd.cli.demo import DEMO_RUNS, EXTRA_RUNS

    assert [r[0] for r in DEMO_RUNS + EXTRA_RUNS] == [
        "supervised-10%",
        "pseudo-label-10%",
        "supervised-100%",
        "ssmd-10%",
    ]


# ------------------------------------------------------------- issue 24: errors users hit
def _error_lines(err: str) -> list[str]:
    """stderr without the CPU-thread line that train/demo/experiment print first."""
    return [line for line in err.splitlines() if line.strip() and not line.startswith("ssmd: ")]


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Case name -> (argv, substrings the one error line must hold)."""
    out = f"output_dir={tmp / 'run'}"
    (tmp / "a_file").write_text("x")
    (tmp / "metrics.json").write_text('{"AP": 0.5}')
    (tmp / "random.pt").write_bytes(b"\x91\xd7\xaa.\x1bq\x97+" + bytes(range(256)))
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "ckpt_dir").mkdir()
    gt = tmp / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": "abc", "height": 10}],
                "annotations": [],
                "categories": [{"id": 1, "name": "n"}],
            }
        )
    )
    (tmp / "pred.json").write_text("[]")

    def predict(ckpt: str) -> list[str]:
        return ["predict", "--checkpoint", str(tmp / ckpt), "--format", "images", str(tmp),
                "--out", str(tmp / "p.json")]  # fmt: skip

    return {
        "lr=abc": (["train", out, "train.lr=abc"], ["train.lr", "'abc'", "a finite number"]),
        "eval_every=abc": (["train", out, "train.eval_every=abc"], ["train.eval_every", "'abc'"]),
        "max_iters=0": (["train", out, "train.max_iters=0"], ["train.max_iters = 0", ">= 1"]),
        "max_iters=-5": (["train", out, "train.max_iters=-5"], ["train.max_iters = -5"]),
        "coco root is a folder": (
            ["train", out, "data.format=coco", f"data.root={tmp}"],
            [str(tmp), "is a folder", "COCO JSON file"],
        ),
        "format=bogus": (
            ["train", out, "data.format=bogus"],
            ["'bogus'", "unknown format; known: ", "coco, ", "dsb2018, "],
        ),
        "output_dir under a file": (
            ["train", f"output_dir={tmp / 'a_file' / 'run'}"],
            ["output_dir", str(tmp / "a_file"), "is a file"],
        ),
        "checkpoint is JSON": (predict("metrics.json"), ["metrics.json: a JSON file"]),
        "checkpoint is random bytes": (predict("random.pt"), ["unrecognised binary data"]),
        "checkpoint is empty": (predict("empty.pt"), ["empty.pt: empty file (0 bytes)"]),
        "checkpoint is a folder": (predict("ckpt_dir"), ["ckpt_dir: is a folder"]),
        "coco width=abc": (
            ["evaluate", "--gt", str(gt), "--pred", str(tmp / "pred.json")],
            ["gt.json", "images[0].width", "'abc'"],
        ),
    }


BAD_INPUT_NAMES = [
    "lr=abc", "eval_every=abc", "max_iters=0", "max_iters=-5", "coco root is a folder",
    "format=bogus", "output_dir under a file", "checkpoint is JSON",
    "checkpoint is random bytes", "checkpoint is empty", "checkpoint is a folder",
    "coco width=abc",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUT_NAMES)
def test_issue24_inputs_end_in_one_line_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cases = _bad_inputs(tmp_path)
    assert sorted(cases) == sorted(BAD_INPUT_NAMES)
    argv, wanted = cases[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"ssmd {argv[0]}: error: ")
    for text in wanted:
        assert text in lines[0], (text, lines[0])
    assert not (tmp_path / "runs").exists()  # nothing written to the default output_dir


def test_resume_with_another_architecture_is_one_line_naming_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    common = [*TINY, f"output_dir={out}", f"data.cache_dir={tmp_path / 'c'}", "train.max_iters=2"]
    assert main(["train", *common]) == 0
    capsys.readouterr()
    argv = ["train", *common, "model.width_multiplier=0.5", "--resume", str(out / "last.pt")]
    assert main(argv) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert str(out / "last.pt") in lines[0]
    assert "model.width_multiplier = 0.25 in the checkpoint, 0.5 now" in lines[0]


def test_unexpected_error_says_where_to_report_and_logs_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from ssmd.tasks import detection as build

    def boom(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("boom in the engine\nsecond line")

    monkeypatch.setattr(build, "run_training", boom)
    out = tmp_path / "run"
    assert main(["train", f"output_dir={out}"]) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "internal error (ZeroDivisionError: boom in the engine second line)" in lines[0]
    assert "report it" in lines[0]
    logs = list(out.glob("ssmd-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    text = logs[0].read_text()
    assert "Traceback" in text and "boom in the engine" in text and f"output_dir={out}" in text
    # no output_dir (predict): the log goes to the temporary folder
    import ssmd.cli.main as cli

    monkeypatch.setattr(cli, "_predict", boom)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    ckpt = tmp_path / "x.pt"
    assert main(["predict", "--checkpoint", str(ckpt), "--format", "images", str(tmp_path),
                 "--out", str(tmp_path / "p.json")]) == 1  # fmt: skip
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(tmp_path / "tmp" / "ssmd-error-") in lines[0]
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "train", f"output_dir={out}"])


def test_evaluate_scores_a_classifier_on_the_official_isic_test_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: the Test layout was refused ('..._Training_GroundTruth.csv: CSV file not found')."""
    monkeypatch.syspath_prepend(Path(__file__).resolve().parents[1] / "data" / "classification")
    from test_isic_layouts import write_part

    rows = [(f"ISIC_{i:07d}", i % 7) for i in range(28)]
    write_part(tmp_path / "train", "Training", rows)
    write_part(tmp_path / "test", "Test", [(f"ISIC_9{i:06d}", i % 7) for i in range(14)])
    out = tmp_path / "run"
    argv = ["train", "task=classification", "data.format=isic2018", f"data.root={tmp_path / 'train'}",
            "data.image_size=8", "data.mean=[0.5]", "model.width_multiplier=0.125",
            "split.labeled_ratio=1.0", "train.max_iters=2", "train.batch_size=4",
            "train.eval_every=2", "train.checkpoint_every=2", "train.progress=false",
            f"output_dir={out}"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    metrics = tmp_path / "m.json"
    ckpt = str(out / "best.pt")
    argv = ["evaluate", "--checkpoint", ckpt, "--format", "isic2018", str(tmp_path / "test"),
            "--out", str(metrics)]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "all 14 images of" in said and "ISIC2018_Task3_Test_GroundTruth.csv" in said
    assert "AUC" in json.loads(metrics.read_text())

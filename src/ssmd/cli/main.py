"""The ``ssmd`` command: train, predict, evaluate, data tools and the demo.

Every sub-command explains itself with ``--help``. Errors in user input (a missing
file, a bad annotation, an unknown config key) end with a one-line message naming
the file, field and value, and exit status 2; ``--debug`` shows the traceback. Any other
exception is a bug: one line says where to report it and names the log file that holds its
traceback (in the run's ``output_dir`` when there is one, else the temporary folder), exit
status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssmd import __version__

__all__ = ["main"]

FORMATS = ("dsb2018", "coco", "images", "synthetic", "deeplesion", "busi")
# 3D formats that only `ssmd data convert / stats` read (no 2D detector predicts on them)
VOLUME_FORMATS = ("luna16",)
BUG_REPORT = "the ssmd issue tracker"
"""Where an unexpected error asks to be reported (with the log file it names)."""
# classification sources (ssmd predict / evaluate with a classification checkpoint)
CLS_FORMATS = ("medmnist", "isic2018", "chestxray14", "synthetic_cls")

EPILOG = """\
examples:
  ssmd demo                                          # the main job on generated data
  ssmd data convert --format dsb2018 stage1_train --out gt.json
  ssmd train --config configs/dsb2018_cpu.yaml data.root=stage1_train split.labeled_ratio=0.1
  ssmd predict --checkpoint runs/x/best.pt --format images my_pngs/ --out pred.json --viz overlays/
  ssmd evaluate --gt gt.json --pred pred.json --froc --out metrics.json
"""


def _add_source(p: argparse.ArgumentParser, volumes: bool = False) -> None:
    p.add_argument(
        "--format",
        required=True,
        choices=FORMATS + CLS_FORMATS + (VOLUME_FORMATS if volumes else ()),
        help="layout of SRC: dsb2018 (Kaggle folder), coco (JSON file), images (folder of images), synthetic (a number of generated images), busi (the folder holding Dataset_BUSI_with_GT); for classification checkpoints medmnist (.npz), isic2018 (folder), chestxray14 (folder), synthetic_cls (a number)",
    )
    p.add_argument(
        "src",
        metavar="SRC",
        help="the folder (dsb2018, images), COCO JSON file (coco) or image count (synthetic)",
    )
    p.add_argument(
        "--image-root",
        default=None,
        help="image folder of a COCO file (default: the JSON file's folder)",
    )
    p.add_argument(
        "--annotations",
        default=None,
        metavar="CSV",
        help="luna16: the LUNA16 annotations.csv (seriesuid,coordX,coordY,coordZ,diameter_mm); deeplesion: the DL_info CSV (default SRC/DL_info.csv)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ssmd`` command."""
    parser = argparse.ArgumentParser(
        prog="ssmd",
        description="Semi-supervised medical image detection: train detectors from a few labeled and many unlabeled images, predict, and evaluate with COCO AP and FROC.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ssmd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument(
        "--threads",
        default=None,
        metavar="N|auto",
        help="CPU threads for torch (default: SSMD_NUM_THREADS or OMP_NUM_THREADS if set, else "
        "auto = usable cores minus the cores other processes keep busy, from the load average); "
        "idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE unless set), so a shared machine "
        "slows ssmd down in proportion instead of ~25x",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a detector from a YAML config",
        description="Train a detector. The resolved config, split manifest, metrics.jsonl, last.pt (resumable) and best.pt (best validation AP) are written to output_dir.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML config (see configs/); defaults apply to anything it leaves out",
    )
    p.add_argument(
        "--resume", default=None, metavar="CKPT", help="continue a run from its last.pt exactly"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. data.root=DIR split.labeled_ratio=0.1 train.max_iters=500 method.name=supervised",
    )

    p = sub.add_parser(
        "predict",
        help="predict boxes with a trained checkpoint",
        description="Predict boxes for every image of SRC and write COCO results (image ids as 'ssmd data convert' assigns them).",
    )
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    _add_source(p, volumes=True)  # luna16: a detection3d checkpoint writes a LUNA16 CSV
    p.add_argument("--out", required=True, help="COCO results JSON to write")
    p.add_argument(
        "--viz",
        default=None,
        metavar="DIR",
        help="also write PNG overlays (green: predictions; magenta: ground truth when known)",
    )
    p.add_argument(
        "--model",
        default="student",
        choices=("student", "teacher"),
        help="which network of a mean-teacher run predicts (default: student, as in the SSMD paper)",
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--viz-score", type=float, default=0.3, help="minimum score of a drawn box")
    p.add_argument(
        "--backend",
        default="pytorch",
        choices=("pytorch", "onnxruntime"),
        help="onnxruntime: --checkpoint is an .onnx file from ssmd export (needs the onnx extra)",
    )

    p = sub.add_parser(
        "evaluate",
        help="COCO AP/AR and FROC of predictions (or of a checkpoint on a dataset)",
        description="Either --gt GT.json --pred PRED.json, or --checkpoint CKPT --format F SRC (predict and evaluate in one go).",
    )
    p.add_argument("--gt", default=None, help="COCO ground truth JSON")
    p.add_argument(
        "--pred", default=None, help="COCO results JSON (image_id, category_id, bbox xywh, score)"
    )
    p.add_argument(
        "--checkpoint", default=None, help="evaluate this checkpoint on SRC instead of --pred"
    )
    p.add_argument(
        "--format",
        default=None,
        choices=FORMATS + CLS_FORMATS + VOLUME_FORMATS,
        help="layout of SRC (with --checkpoint); a classification checkpoint without SRC is evaluated on its run's test part",
    )
    p.add_argument(
        "src",
        nargs="?",
        default=None,
        metavar="SRC",
        help="dataset to predict on (with --checkpoint; without SRC a checkpoint is evaluated on its run's --part)",
    )
    p.add_argument("--image-root", default=None, help="image folder of a COCO SRC")
    p.add_argument(
        "--annotations",
        default=None,
        metavar="CSV",
        help="luna16 SRC (a detection3d checkpoint): the LUNA16 annotations.csv",
    )
    p.add_argument("--model", default="student", choices=("student", "teacher"))
    p.add_argument(
        "--part",
        default="test",
        choices=("val", "test"),
        help="with --checkpoint and no SRC: the part of the run's own split to evaluate (default test)",
    )
    p.add_argument("--iou-type", default="bbox", choices=("bbox",), help="only boxes are evaluated")
    p.add_argument(
        "--max-dets",
        type=int,
        default=1000,
        help="detections per image kept for AP/AR (default 1000: nuclei images hold hundreds of objects; pycocotools' 100 would cap recall)",
    )
    p.add_argument(
        "--froc", action="store_true", help="also FROC sensitivities at 0.125..8 FPs/image and CPM"
    )
    p.add_argument(
        "--froc-hit",
        default="iou",
        choices=("iou", "center"),
        help="FROC hit rule: IoU >= 0.5 (DeepLesion) or centre inside the box (LUNA16)",
    )
    p.add_argument("--froc-plot", default=None, metavar="PNG", help="write the FROC curve as a PNG")
    p.add_argument(
        "--corloc",
        action="store_true",
        help="also CorLoc (top-scoring detection of the lesion's class, IoU >= 0.5, images with a lesion) with a bootstrap CI, the class-agnostic CorLoc, and the image-level AUC of P_l(I) when the GT has image labels (ssmd data convert --format busi)",
    )
    p.add_argument(
        "--corloc-rule",
        default="top1",
        choices=("top1", "score_threshold"),
        help="top1 (default): the single top detection; score_threshold: any detection with score >= --corloc-score (the paper's released script)",
    )
    p.add_argument(
        "--corloc-score", type=float, default=0.5, help="score for --corloc-rule score_threshold"
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=10000,
        metavar="N",
        help="bootstrap resamples of the test images (default 10000)",
    )
    p.add_argument(
        "--bootstrap-seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the resampling (default 0)",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="PRED_B.json",
        help="with --corloc: a second method's COCO results on the same GT; adds the CorLoc difference, its CI and paired bootstrap / paired t p-values",
    )
    p.add_argument(
        "--image-scores",
        default=None,
        metavar="JSON",
        help="with --corloc: image-level P_l(I) as [{image_id, scores: {normal, benign, malignant}}] (default: the top detection score per class)",
    )
    p.add_argument("--out", default=None, help="write the metrics as JSON")

    p = sub.add_parser(
        "data",
        help="convert datasets to COCO JSON, print statistics, write synthetic data",
        description="Dataset tools.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    q = dsub.add_parser(
        "convert", help="write a dataset as COCO JSON (image ids 1..N in sorted path order)"
    )
    _add_source(q, volumes=True)
    q.add_argument("--out", required=True, help="COCO JSON to write")
    q = dsub.add_parser(
        "check",
        help="decode every image and mask fully and report bad files, duplicates, class balance",
        description="Decode every image and mask of SRC fully and check sizes, pixel types, value ranges, empty or all-background masks, duplicate images (dHash) and class balance; print a report; exit status 1 when any error was found. Results are cached per file (path, size, mtime): a re-run decodes only changed files. ssmd data convert and ssmd train run the same checks (without the duplicate search) up front.",
    )
    _add_source(q)
    from ssmd.cli.data_check import add_check_arguments

    add_check_arguments(q)
    q = dsub.add_parser("stats", help="image/object counts and size histograms")
    _add_source(q, volumes=True)
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q = dsub.add_parser(
        "split",
        help="write a split manifest (train/val/test by image; strong = labeled, weak = unlabeled); busi: duplicate-aware",
        description="Draw a split by seed and write it as a manifest for split.manifest. For --format busi, pixel- and near-identical images are grouped (dHash, --dup-threshold bits) and each group kept on one side; groups with conflicting labels are dropped (--conflicts drop) or kept; only benign/malignant training images can be strong.",
    )
    _add_source(q)
    q.add_argument("--out", required=True, help="split manifest JSON to write")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        default=None,
        metavar=("TRAIN", "VAL", "TEST"),
        help="default 0.7 0.1 0.2 for busi, else 0.8 0.1 0.1",
    )
    q.add_argument(
        "--strong",
        default=None,
        metavar="N|R",
        help="strong (labeled) training images: a count (10, 50; 0 = all weak) or a fraction (0.1); default all",
    )
    q.add_argument(
        "--conflicts",
        default="drop",
        choices=("drop", "keep"),
        help="busi: duplicate groups whose labels differ are left out (drop, default) or kept",
    )
    q.add_argument(
        "--dup-threshold",
        type=int,
        default=64,
        metavar="BITS",
        help="busi: near-identical = dHash (256 bits) distance <= BITS (default 64; -1: pixel-identical only)",
    )
    q = dsub.add_parser("synth", help="write the synthetic nuclei set in the DSB2018 Kaggle layout")
    q.add_argument("--out", required=True, help="folder to create")
    q.add_argument("-n", "--num-images", type=int, default=50)
    q.add_argument("--size", type=int, default=256, help="image side in pixels")
    q.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "demo",
        help="the main job: synthetic data, supervised vs pseudo-labeling with 10%% labels, table, overlays, FROC plot",
        description="Generate the synthetic nuclei default, train the supervised detector with 10% of the labels and pseudo-labeling with the same 10% plus the rest as unlabeled images (the supervised run is its stage 1), evaluate both on a held-out synthetic test set, print a table and save overlays and a FROC plot (15 min measured on a 2-core VM while another training ran; about 10 min expected idle). --all-runs adds supervised with all labels and SSMD with 10%.",
    )
    p.add_argument("--output-dir", default="demo_output", help="where runs, overlays and plots go")
    p.add_argument(
        "--max-iters", type=int, default=None, help="override the training length of every run"
    )
    p.add_argument("--quick", action="store_true", help="a much shorter smoke run (for tests)")
    p.add_argument(
        "--all-runs",
        action="store_true",
        help="also train supervised with 100%% of the labels (the ceiling) and SSMD with 10%%",
    )

    p = sub.add_parser(
        "experiment",
        help="run methods x labeled ratios x seeds and write Table-1-style results",
        description="Run every (method, labeled ratio, seed) cell of an experiment file (configs/experiments/), resuming finished cells, then write results.csv, table.md (mean +- std, best, p-value), summary.json and a PNG. Several workers may share the output folder: cells are claimed atomically.",
    )
    p.add_argument("--config", required=True, metavar="EXP.yaml", help="experiment file")
    p.add_argument("--output-dir", default=None, help="override the file's output_dir")
    p.add_argument(
        "--dry-run", action="store_true", help="list the cells and their status; train nothing"
    )
    p.add_argument(
        "--report-only", action="store_true", help="rewrite the tables from finished cells only"
    )
    p.add_argument("--max-cells", type=int, default=None, help="stop after running this many cells")
    p.add_argument(
        "--ratios",
        type=float,
        nargs="+",
        default=None,
        metavar="R",
        help="only these of the file's labeled ratios (rows with their own ratios, e.g. fully supervised, are kept)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="only these of the file's seeds",
    )
    p.add_argument(
        "--rows",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="only these methods (row labels, e.g. Supervised SSMD); same cells as the full grid",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="a claimed cell whose lock was not refreshed for this long is taken over (default 1800; same-host dead workers are detected at once)",
    )
    from ssmd.cli.export import add_export_parser

    add_export_parser(sub)
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page for a training run or an experiment folder",
        description="Write DIR (a run folder of ssmd train, or an experiment folder with results.csv) as one HTML file with everything inlined: metrics / Table-1 tables with p-values, training curves, FROC and precision-recall, best and worst test overlays, the config and the commands that reproduce it.",
    )
    p.add_argument("dir", metavar="DIR", help="run folder or experiment folder")
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p = sub.add_parser(
        "pretrain",
        help="self-supervised pretraining of a backbone on unlabeled images (SimCLR, VICRegL)",
        description="Pretrain the backbone of a training config (its model section) on the images of its split (pretrain.part: unlabeled, train or all; labels unused) and write pretrain.output_dir/backbone.pt, which model.pretrained_weights loads into that detector or classifier. Needs the pretrain extra: pip install 'ssmd[pretrain]'.",
    )
    p.add_argument(
        "--config",
        default=None,
        help="a training config with an optional pretrain section (see configs/pretrain/)",
    )
    p.add_argument(
        "--resume", default=None, metavar="CKPT", help="continue from the pretraining's last.pt"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="pretrain.<key>=... for the pretraining (e.g. pretrain.method.name=vicregl pretrain.train.max_iters=200), any other key for the training config (e.g. split.labeled_ratio=0.1)",
    )
    return parser


def _load_source(
    fmt: str, src: str, image_root: str | None = None, annotations: str | None = None
) -> Any:
    from ssmd.data import build_dataset

    if fmt == "synthetic":
        return build_dataset("synthetic", None, n_images=int(src))
    kwargs: dict[str, Any] = {}
    if fmt == "coco" and image_root is not None:
        kwargs["image_root"] = image_root
    if annotations is not None:
        if fmt not in ("luna16", "deeplesion"):
            raise ValueError(f"--annotations applies to --format luna16 or deeplesion, not {fmt}")
        kwargs["annotations" if fmt == "luna16" else "info_csv"] = annotations
    return build_dataset(fmt, src, **kwargs)


def _cmd_train(args: argparse.Namespace) -> int:
    from ssmd.cli.data_check import precheck_config
    from ssmd.config import load_config
    from ssmd.tasks import get_task

    config = load_config(args.config, args.overrides)
    args.log_dir = config["output_dir"]  # where an unexpected error's traceback goes
    precheck_config(config)  # every file decoded (cached) before the first step
    summary = get_task(config).train(config, resume=args.resume)
    _print_metrics(summary["test"], title=f"test metrics of best.pt ({summary['output_dir']})")
    return 0


def _predict(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    from ssmd.tasks.detection import load_model, predict_dataset

    if getattr(args, "backend", "pytorch") == "onnxruntime":
        from ssmd.cli.export import load_onnx_detector

        model, state = load_onnx_detector(args.checkpoint)
    else:
        model, state = load_model(args.checkpoint, which=args.model)
    dataset = _load_source(
        args.format, args.src, args.image_root, getattr(args, "annotations", None)
    )
    print(
        f"predicting {len(dataset)} images with the {args.model} network of {args.checkpoint}",
        file=sys.stderr,
    )
    preds = predict_dataset(
        model, state["config"], dataset, batch_size=getattr(args, "batch_size", 4)
    )
    return dataset, preds, state


def _task_command(task: str, command: str) -> Callable[[argparse.Namespace], int] | None:
    """The ``predict`` / ``evaluate`` command of a checkpoint's ``task``; None for detection,
    whose commands are this module's own."""
    from ssmd.cli import classification, detection3d
    from ssmd.tasks import get_task

    get_task(task)  # an unknown task in a checkpoint is named
    commands: dict[str, dict[str, Callable[[argparse.Namespace], int]]] = {
        "classification": {
            "predict": classification.cmd_predict,
            "evaluate": classification.cmd_evaluate,
        },
        "detection3d": {"predict": detection3d.cmd_predict, "evaluate": detection3d.cmd_evaluate},
    }
    return commands.get(task, {}).get(command)


def _cmd_predict(args: argparse.Namespace) -> int:
    from ssmd.cli.classification import checkpoint_task
    from ssmd.evaluation import predictions_to_coco_results

    if args.backend == "onnxruntime":
        from ssmd.cli.export import onnx_task

        task = onnx_task(args.checkpoint)
    else:
        task = checkpoint_task(args.checkpoint)
    other = _task_command(task, "predict")
    if other is not None:
        return other(args)
    dataset, preds, _ = _predict(args)
    results = predictions_to_coco_results(
        [p["image_id"] for p in preds], preds, dataset.label_to_category
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results))
    print(
        f"wrote {len(results)} detections for {len(preds)} images to {out} (network: {args.model})"
    )
    if args.viz:
        _write_overlays(dataset, preds, Path(args.viz), args.viz_score)
        print(f"wrote {len(preds)} overlays to {args.viz}")
    return 0


def _write_overlays(dataset: Any, preds: list[dict[str, Any]], folder: Path, score: float) -> None:
    from ssmd.evaluation.visualize import draw_overlay

    for i, pred in enumerate(preds):
        record = dataset.records[i]
        sample = dataset[i]
        gt = sample.boxes if len(sample.boxes) else None
        name = Path(record.file_name).stem + ".png"
        draw_overlay(
            sample.image, folder / name, pred["boxes"], pred["scores"], gt, score_thresh=score
        )


def _print_metrics(metrics: dict[str, Any], title: str = "") -> None:
    from ssmd.evaluation import format_metrics_table

    if title:
        print(title)
    print(format_metrics_table(metrics))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ssmd.cli.classification import checkpoint_task
    from ssmd.evaluation import coco_ap, froc_from_coco, plot_froc, predictions_to_coco_results

    other = _task_command(checkpoint_task(args.checkpoint), "evaluate")
    if other is not None:
        return other(args)
    if args.pred is not None and str(args.pred).lower().endswith(".csv"):  # LUNA16 submission
        from ssmd.cli.detection3d import cmd_evaluate_csv

        return cmd_evaluate_csv(args)
    if args.checkpoint and args.src is None and args.corloc:
        raise SystemExit(
            "ssmd evaluate --corloc with a checkpoint needs the images: --format F SRC"
        )
    if args.checkpoint and args.src is None:  # the run's own held-out part
        from ssmd.tasks.detection import evaluate_checkpoint

        part_metrics = evaluate_checkpoint(args.checkpoint, args.part, args.model)
        print(f"{args.checkpoint} ({args.model}) on its run's {args.part} part:")
        _print_metrics(part_metrics)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(part_metrics, indent=2))
        return 0
    if args.checkpoint:
        if args.format is None:
            raise SystemExit("ssmd evaluate --checkpoint CKPT SRC needs --format F")
        from ssmd.data.datasets.coco import to_coco_dict

        dataset, preds, _ = _predict(args)
        gt: Any = to_coco_dict(dataset)
        results: Any = predictions_to_coco_results(
            [p["image_id"] for p in preds], preds, dataset.label_to_category
        )
    else:
        if args.gt is None or args.pred is None:
            raise SystemExit(
                "ssmd evaluate needs --gt GT.json --pred PRED.json, or --checkpoint CKPT --format F SRC"
            )
        gt, results = args.gt, args.pred
    metrics: dict[str, Any] = coco_ap(gt, results, max_dets=args.max_dets)
    if args.corloc:
        from ssmd.evaluation.corloc import corloc_report

        metrics.update(
            corloc_report(
                gt,
                results,
                compare_with=args.compare,
                image_scores=args.image_scores,
                rule=args.corloc_rule,
                score_threshold=args.corloc_score,
                n_boot=args.bootstrap,
                seed=args.bootstrap_seed,
            )
        )
    elif args.compare or args.image_scores:
        raise SystemExit("ssmd evaluate: --compare and --image-scores need --corloc")
    if args.froc or args.froc_plot:
        fr = froc_from_coco(gt, results, hit=args.froc_hit)
        metrics.update(fr.to_dict())
        if args.froc_plot:
            plot_froc(fr, args.froc_plot)
    _print_metrics(metrics)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2))
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "convert":
        from ssmd.cli.data_check import precheck
        from ssmd.data.datasets.coco import write_coco
        from ssmd.data.datasets.luna16 import write_volume_json

        dataset = _load_source(args.format, args.src, args.image_root, args.annotations)
        precheck(dataset, what=" data convert")  # a bad file fails here, named
        for line in getattr(dataset, "report_lines", list)():
            print(line)
        if getattr(dataset, "spatial_dims", 2) == 3:
            write_volume_json(dataset, args.out)
        else:
            write_coco(dataset, args.out)
        n_boxes = sum(len(dataset.annotation(i)[0]) for i in range(len(dataset)))
        print(f"wrote {len(dataset)} images and {n_boxes} boxes to {args.out}")
        return 0
    if args.data_command == "check":
        from ssmd.cli.data_check import cmd_check

        return cmd_check(
            args, _load_source(args.format, args.src, args.image_root, args.annotations)
        )
    if args.data_command == "stats":
        from ssmd.data import dataset_stats, format_stats
        from ssmd.data.datasets.luna16 import format_volume_stats, volume_stats

        dataset = _load_source(args.format, args.src, args.image_root, args.annotations)
        if getattr(dataset, "spatial_dims", 2) == 3:
            stats, text = volume_stats(dataset), format_volume_stats
        else:
            stats, text = dataset_stats(dataset), format_stats
        if hasattr(dataset, "report"):
            stats["report"] = dataset.report
        out = text(stats)
        if hasattr(dataset, "report_lines"):
            out += "\n" + "\n".join(dataset.report_lines()) + "\n"
        print(json.dumps(stats, indent=2) if args.json else out)
        return 0
    if args.data_command == "split":
        from ssmd.data.splits import make_split

        dataset = _load_source(args.format, args.src, args.image_root)
        strong = _strong_arg(args.strong)
        if args.format == "busi":
            from ssmd.data.datasets.busi import busi_split

            dups = dataset.duplicates(threshold=args.dup_threshold)
            split = busi_split(
                dataset, args.seed, args.fractions or (0.7, 0.1, 0.2), strong, args.conflicts, dups
            )
            print(dups.format().rstrip())
        else:
            split = make_split(
                dataset,
                seed=args.seed,
                fractions=args.fractions or (0.8, 0.1, 0.1),
                labeled_ratio=strong if isinstance(strong, float) else 1.0,
                labeled_count=strong if isinstance(strong, int) else None,
            )
        split.to_json(args.out)
        print(
            f"wrote {args.out}: train {len(split.train)} ({len(split.labeled)} strong/labeled, "
            f"{len(split.unlabeled)} weak/unlabeled), val {len(split.val)}, test {len(split.test)}"
            + (f", excluded {len(split.excluded)}" if split.excluded else "")
        )
        return 0
    if args.data_command == "synth":
        from ssmd.data.datasets.synthetic import write_dsb_layout

        write_dsb_layout(args.out, args.num_images, seed=args.seed, image_size=args.size)
        print(f"wrote {args.num_images} synthetic images in the DSB2018 layout to {args.out}")
        return 0
    raise SystemExit(
        "ssmd data needs an action: convert, check, stats, split or synth (see ssmd data --help)"
    )


def _strong_arg(text: str | None) -> int | float | None:
    """``--strong``: ``None`` (all), an ``int`` count or a ``float`` fraction."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--strong {text!r}: expected a count (10) or a fraction (0.1)") from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from ssmd.cli.demo import run_demo

    args.log_dir = args.output_dir
    run_demo(
        Path(args.output_dir), max_iters=args.max_iters, quick=args.quick, all_runs=args.all_runs
    )
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from ssmd.experiments import cell_status, load_experiment, run_experiment, write_report

    exp = load_experiment(args.config, output_dir=args.output_dir).restrict(
        ratios=args.ratios, seeds=args.seeds, rows=args.rows
    )
    args.log_dir = exp.output_dir
    cells = exp.cells()
    if args.dry_run:
        print(f"{exp.name}: {len(cells)} cells in {exp.output_dir}")
        for cell in cells:
            print(f"  {cell.id:<40} {cell_status(exp, cell, args.stale_after)}")
        return 0
    failed: list[str] = []
    if not args.report_only:
        outcome = run_experiment(exp, max_cells=args.max_cells, stale_after=args.stale_after)
        failed = outcome["failed"]
        if failed:
            print(f"failed cells (see their error.txt): {', '.join(failed)}", file=sys.stderr)
    write_report(exp)
    print((exp.output_dir / "table.md").read_text())
    print(f"results in {exp.output_dir} (results.csv, table.md, summary.json, plot_*.png)")
    return 1 if failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ssmd.experiments.html_report import write_html_report

    out = write_html_report(args.dir, args.out)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB, self-contained)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ssmd.cli.export import cmd_export

    return cmd_export(args)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ssmd.pretrain.job import load_pretrain_config, run_pretraining

    config = load_pretrain_config(args.config, args.overrides)
    args.log_dir = config["pretrain"]["output_dir"]
    run_pretraining(config, resume=args.resume)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ssmd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from ssmd.cli.threads import apply_torch_threads, configure_cpu_threads

    try:
        threads = configure_cpu_threads(args.threads)  # before torch is imported
    except ValueError as exc:
        print(f"ssmd: error: {exc}", file=sys.stderr)
        return 2
    apply_torch_threads(threads)
    if args.command in ("train", "demo", "experiment", "pretrain"):
        print(f"ssmd: {threads.threads} CPU thread(s) ({threads.reason})", file=sys.stderr)
    handlers = {
        "train": _cmd_train,
        "predict": _cmd_predict,
        "evaluate": _cmd_evaluate,
        "data": _cmd_data,
        "demo": _cmd_demo,
        "experiment": _cmd_experiment,
        "pretrain": _cmd_pretrain,
        "export": _cmd_export,
        "report": _cmd_report,
    }
    from ssmd.config import ConfigError
    from ssmd.engine.checkpoint import CheckpointError
    from ssmd.engine.trainer import NonFiniteLossError
    from ssmd.utils.errors import DataError

    known = (
        DataError,
        ConfigError,
        CheckpointError,
        NonFiniteLossError,
        OSError,  # a file or folder the user named (the message names it)
        ImportError,  # a missing optional extra (the message says what to install)
        ValueError,
        KeyError,
    )
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"ssmd {args.command}: interrupted", file=sys.stderr)
        return 130
    except known as exc:
        if args.debug:
            raise
        print(f"ssmd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        log = _crash_log(getattr(args, "log_dir", None), argv, exc)
        print(
            f"ssmd {args.command}: internal error ({type(exc).__name__}: {_one_line(exc)}); "
            f"this is a bug in ssmd: please report it on {BUG_REPORT} with the traceback "
            f"saved in {log}",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a ``KeyError``'s without the quotes repr adds)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _crash_log(log_dir: str | Path | None, argv: list[str] | None, exc: BaseException) -> Path:
    """Write the traceback of an unexpected ``exc`` to a log file; returns its path.

    The file goes into the run's ``output_dir`` when the command has one (``log_dir``),
    else (or when that folder cannot be written) into the system's temporary folder.
    """
    import platform
    import tempfile
    import time
    import traceback

    name = f"ssmd-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (
        f"ssmd {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
        f"command: ssmd {' '.join(sys.argv[1:] if argv is None else argv)}\n\n"
        + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    for folder in ([Path(log_dir)] if log_dir else []) + [Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return Path(tempfile.gettempdir()) / name


if __name__ == "__main__":
    sys.exit(main())

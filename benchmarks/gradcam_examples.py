"""Grad-CAM overlays of a trained classifier on the first test images of its own run.

    python benchmarks/gradcam_examples.py --checkpoint RUN/best.pt --n 8 --out DIR [--one-per-class]

Each PNG is ``<image id>_<true>_as_<predicted>.png``: the image and its Grad-CAM heatmap of the
predicted class side by side (``ssmd.models.gradcam``).
"""

from __future__ import annotations

import argparse

import torch

from ssmd.models.gradcam import write_gradcam_overlays
from ssmd.tasks.classification import Normalizer, build_classification_data, load_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="student", choices=("student", "teacher"))
    parser.add_argument(
        "--one-per-class", action="store_true", help="the first test image of each class instead"
    )
    args = parser.parse_args()
    model, state = load_classifier(args.checkpoint, which=args.model)
    config = state["config"]
    dataset, _ = build_classification_data(config)
    test = [dataset.index_of(n) for n in state["split"]["test"]]
    if args.one_per_class:
        first: dict[int, int] = {}
        for i in test:
            first.setdefault(int(dataset.labels[i].argmax()), i)
        test = [first[c] for c in sorted(first)]
    idx = test[: args.n]
    x, y = dataset.tensors(idx)
    norm = Normalizer(config["data"]["mean"], config["data"]["std"], dataset.in_channels)
    with torch.no_grad():
        pred = model(norm(x))[0].argmax(1)
    names = [
        f"{dataset.ids[i]}_{dataset.class_names[int(t.argmax())]}_as_{dataset.class_names[int(p)]}"
        for i, t, p in zip(idx, y, pred, strict=True)
    ]
    for path in write_gradcam_overlays(model, x, norm(x), names, args.out):
        print(path)


if __name__ == "__main__":
    main()

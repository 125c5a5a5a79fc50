"""Training and inference speed of ssmd's 3D RetinaNet against MONAI's RetinaNetDetector (issue 22).

Same input (batch of 1-channel 48^3 patches, one 8-voxel nodule each), comparable networks:
3D ResNet trunks with one basic block per stage and stages of 16, 32, 64 channels at strides
4, 8, 16 feeding a 32-channel FPN, heads of 4 GroupNorm convs (MONAI's fixed number; ssmd's
``head_convs=4``) and 3 cube anchors per location; CPU, one thread. They still differ: MONAI's
stem is a 7x7x7 stride-2 conv + max-pool, ssmd's a 3x3x3 stride-2 conv + a strided stage; MONAI
trains with an ATSS matcher and a hard-negative sampler, ssmd with the IoU matcher and the
focal loss over all anchors. So this is a ratio of two similar CPU-sized detectors, not of one network run twice. The two are timed alternately (after a warm-up step)
so that the load of a shared machine hits both alike.

    OMP_NUM_THREADS=1 python benchmarks/retinanet3d_vs_monai.py --steps 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def ssmd_model() -> torch.nn.Module:
    from ssmd.models.factory import create_model

    return create_model("retinanet3d", widths=(16, 16, 32, 64), fpn_channels=32, head_convs=4)


def monai_model() -> torch.nn.Module:
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN
    from monai.networks.blocks.feature_pyramid_network import ExtraFPNBlock
    from monai.networks.nets import resnet

    backbone = resnet.ResNet(
        block=resnet.ResNetBlock,
        layers=[1, 1, 1, 1],
        block_inplanes=[16, 32, 64, 128],  # layer4 is not used by the FPN below
        n_input_channels=1,
        conv1_t_stride=2,
        conv1_t_size=7,
        spatial_dims=3,
    )

    # resnet_fpn_feature_extractor fixes the FPN at 256 channels; build its FPN at 32 like ours
    class NoExtraLevel(ExtraFPNBlock):  # the default adds a max-pooled 4th level
        def forward(self, results, x, names):  # type: ignore[no-untyped-def]
            return results, names

    features = BackboneWithFPN(
        backbone,
        {"layer1": "0", "layer2": "1", "layer3": "2"},
        [16, 32, 64],
        32,
        extra_blocks=NoExtraLevel(),
        spatial_dims=3,
    )
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=[1, 2, 4], base_anchor_shapes=((4, 4, 4), (6, 6, 6), (10, 10, 10))
    )
    net = RetinaNet(
        spatial_dims=3,
        num_classes=1,
        num_anchors=3,
        feature_extractor=features,
        size_divisible=(16, 16, 16),
    )
    det = RetinaNetDetector(network=net, anchor_generator=anchors, debug=False)
    det.set_atss_matcher(num_candidates=4, center_in_gt=False)
    det.set_hard_negative_sampler(
        batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16
    )
    det.set_target_keys(box_key="boxes", label_key="labels")
    det.set_box_selector_parameters(
        score_thresh=0.05, topk_candidates_per_level=200, nms_thresh=0.1, detections_per_img=100
    )
    return det


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--patch", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    p = args.patch
    images = torch.randn(args.batch, 1, p, p, p)
    box = torch.tensor([[20.0, 20, 20, 28, 28, 28]])
    targets = [
        {"boxes": box, "labels": torch.ones(1, dtype=torch.int64)} for _ in range(args.batch)
    ]
    ours, theirs = ssmd_model(), monai_model()
    opt_o = torch.optim.Adam(ours.parameters(), 1e-3)
    opt_t = torch.optim.Adam(theirs.parameters(), 1e-3)

    def step_ours() -> None:
        ours.train()
        losses = ours.loss(ours(images), targets)
        opt_o.zero_grad()
        sum(losses.values()).backward()
        opt_o.step()

    def step_theirs() -> None:
        theirs.train()
        # MONAI's labels are 0-based foreground classes (ssmd's are 1..K, 0 = background)
        losses = theirs(list(images), [{**t, "labels": t["labels"] - 1} for t in targets])
        opt_t.zero_grad()
        (losses["classification"] + losses["box_regression"]).backward()
        opt_t.step()

    @torch.no_grad()
    def infer_ours() -> None:
        ours.eval()
        ours.predict(images)

    @torch.no_grad()
    def infer_theirs() -> None:
        theirs.eval()
        theirs(list(images), use_inferer=False)

    times: dict[str, list[float]] = {
        k: [] for k in ("train_ssmd", "train_monai", "infer_ssmd", "infer_monai")
    }
    for k in range(args.steps + 1):
        for name, fn in (
            ("train_ssmd", step_ours),
            ("train_monai", step_theirs),
            ("infer_ssmd", infer_ours),
            ("infer_monai", infer_theirs),
        ):
            t = time.perf_counter()
            fn()
            if k > 0:  # step 0 is a warm-up
                times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    out = {
        "median_seconds": {k: round(v, 4) for k, v in med.items()},
        "train_ratio_monai_over_ssmd": round(med["train_monai"] / med["train_ssmd"], 2),
        "infer_ratio_monai_over_ssmd": round(med["infer_monai"] / med["infer_ssmd"], 2),
        "params": {
            "ssmd": sum(x.numel() for x in ours.parameters()),
            "monai": sum(x.numel() for x in theirs.parameters()),
        },
        "batch": args.batch,
        "patch": p,
        "steps": args.steps,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""SSMD's views (Algorithm 1 lines 1-2) and instance-level adversarial perturbation (Eq. (8)-(9))."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmd.data.transforms.functional import drop_degenerate, rotate_boxes
from ssmd.losses.consistency import adaptive_consistency_loss
from ssmd.methods import perturb
from ssmd.methods.perturb import (
    instance_adversarial_perturbation,
    make_consistency_views,
    per_image_unit,
    scaled_cutout_size,
)
from ssmd.methods.ssmd import SSMD
from ssmd.models.detectors.retinanet import DenseOutputs


class MirrorDetector(nn.Module):
    """A dense "detector" that is flip-equivariant by construction (A = 1, K + 1 = 2).

    Levels are average pools with strides 8 and 16, then 3x3 convs whose kernels are
    left-right symmetric for the class logits and ``dy, dw, dh`` and antisymmetric (no
    bias) for ``dx``: its outputs on ``flip(x)`` are exactly ``hflip()`` of its outputs on ``x``.
    """

    activation = "softmax"

    def __init__(self, strides: tuple[int, ...] = (8, 16)) -> None:
        super().__init__()
        self.strides = strides
        cls = torch.randn(2, 3, 3, 3)
        box = torch.randn(4, 3, 3, 3)
        sym_cls = (cls + cls.flip(-1)) / 2
        sym_box = (box + box.flip(-1)) / 2
        sym_box[0] = (box[0] - box[0].flip(-1)) / 2  # dx: odd under the flip
        self.cls_weight = nn.Parameter(sym_cls)
        self.box_weight = nn.Parameter(sym_box)
        self.cls_bias = nn.Parameter(torch.tensor([0.5, -0.5]))

    def forward(self, x: Tensor) -> DenseOutputs:
        cls_maps, box_maps = [], []
        for s in self.strides:
            f = F.avg_pool2d(x, s)  # (B, 3, H/s, W/s)
            b, _, h, w = f.shape
            cls = F.conv2d(f, self.cls_weight, self.cls_bias, padding=1)
            cls_maps.append(cls.view(b, 1, 2, h, w))  # (B, A, K+1, H, W)
            box_maps.append(F.conv2d(f, self.box_weight, padding=1).view(b, 1, 4, h, w))
        return DenseOutputs(cls_maps, box_maps, tuple(int(v) for v in x.shape[2:]))


def test_mirror_detector_is_equivariant() -> None:
    net = MirrorDetector()
    x = torch.randn(2, 3, 64, 64)
    a, b = net(x), net(x.flip(-1)).hflip()
    for u, v in zip(a.cls_logits + a.box_deltas, b.cls_logits + b.box_deltas, strict=True):
        assert torch.allclose(u, v, atol=1e-5)


def test_cutout_size_scales_with_width() -> None:
    assert scaled_cutout_size(70, 448) == 70
    assert scaled_cutout_size(70, 256) == 40
    assert scaled_cutout_size(70, 128) == 20
    assert scaled_cutout_size(70, 4) == 1


def test_views_share_rotation_and_teacher_is_flipped_student() -> None:
    images = torch.randn(3, 3, 64, 64)
    views = make_consistency_views(images, rotate_degrees=10.0, flip=True, cutout_n=0)
    assert len(views.angles) == 3 and all(-10 <= a <= 10 for a in views.angles)
    assert any(a != 0 for a in views.angles)
    assert not torch.allclose(views.student, images)
    assert torch.equal(views.teacher, views.student.flip(-1))
    assert views.flipped and views.boxes is None


def test_views_rotate_boxes_for_the_supervised_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perturb, "random_angles", lambda n, m, g=None: [7.0, -4.0][:n])
    boxes = [
        torch.tensor([[10.0, 12.0, 30.0, 40.0], [0.0, 0.0, 1.0, 1.0]]),
        torch.tensor([[40.0, 40.0, 60.0, 50.0]]),
    ]
    labels = [torch.tensor([1, 1]), torch.tensor([1])]
    views = make_consistency_views(torch.randn(2, 3, 64, 64), boxes, labels, cutout_n=0)
    assert views.angles == [7.0, -4.0]
    assert views.boxes is not None and views.labels is not None
    for i, angle in enumerate((7.0, -4.0)):
        want, want_labels, _ = drop_degenerate(
            rotate_boxes(boxes[i], angle, (64, 64)), labels[i], (64, 64)
        )
        assert torch.allclose(views.boxes[i], want)
        assert torch.equal(views.labels[i], want_labels)
    assert views.boxes[0].shape[0] >= 1


def test_cutout_masks_are_independent() -> None:
    images = torch.ones(2, 1, 128, 128)
    views = make_consistency_views(
        images, rotate_degrees=0.0, flip=False, cutout_n=5, cutout_size=70, fill=0.0
    )
    zeros_s = views.student == 0
    zeros_t = views.teacher == 0
    for i in range(2):
        assert 400 <= int(zeros_s[i].sum()) <= 5 * 20 * 20  # side round(70 * 128 / 448) = 20
        assert 400 <= int(zeros_t[i].sum()) <= 5 * 20 * 20
    assert not torch.equal(zeros_s, zeros_t)


def test_per_image_unit_guards_zero() -> None:
    t = torch.stack([torch.full((2, 3, 3), 2.0), torch.zeros(2, 3, 3)])
    u = per_image_unit(t)
    assert u[0].norm().item() == pytest.approx(1.0)
    assert torch.equal(u[1], torch.zeros(2, 3, 3))


def _masked_cost(tau: float):  # type: ignore[no-untyped-def]
    def cost(s: DenseOutputs, t: DenseOutputs) -> Tensor:
        return adaptive_consistency_loss(s, t, fg_threshold=tau, detach_teacher=False)

    return cost


def test_eq9_norm_is_epsilon_and_low_confidence_gives_zero() -> None:
    teacher = MirrorDetector()
    teacher.requires_grad_(False)
    x = torch.randn(2, 3, 64, 64)
    student = MirrorDetector()(x).detach()
    # image 0: confident foreground everywhere; image 1: confident background everywhere
    for lvl in student.cls_logits:
        lvl[0, :, 1] = 10.0
        lvl[0, :, 0] = -10.0
        lvl[1, :, 0] = 10.0
        lvl[1, :, 1] = -10.0
    r_adv = instance_adversarial_perturbation(
        lambda v: teacher(v.flip(-1)).hflip(), x, student, _masked_cost(0.95), xi=5e-7, epsilon=2.0
    )
    assert r_adv.shape == x.shape and not r_adv.requires_grad
    assert r_adv[0].norm().item() == pytest.approx(2.0, rel=1e-5)
    assert torch.equal(r_adv[1], torch.zeros_like(r_adv[1]))  # below tau: no gradient, r_adv = 0
    assert all(p.grad is None for p in teacher.parameters())

    # a threshold nothing passes: g = 0 for every image
    none = instance_adversarial_perturbation(teacher, x, student, _masked_cost(1.0), epsilon=2.0)
    assert torch.equal(none, torch.zeros_like(x))


def test_eq9_direction_increases_the_cost() -> None:
    torch.manual_seed(4)
    teacher = MirrorDetector()
    teacher.requires_grad_(False)
    x = torch.randn(1, 3, 64, 64)
    student = MirrorDetector()(x).detach()
    cost = _masked_cost(0.0)
    r_adv = instance_adversarial_perturbation(teacher, x, student, cost, xi=1e-3, epsilon=1.0)
    r_rand = per_image_unit(torch.randn_like(x))
    with torch.no_grad():
        base = cost(student, teacher(x)).item()
        adv = cost(student, teacher(x + r_adv)).item()
        rand = cost(student, teacher(x + r_rand)).item()
    assert adv > base
    assert adv - base > abs(rand - base)


def test_eq8_xi_validation() -> None:
    net = MirrorDetector()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="xi"):
        instance_adversarial_perturbation(net, x, net(x), _masked_cost(0.5), xi=0.0)


def _mirror_ssmd(**kw: object) -> SSMD:
    params: dict[str, object] = {
        "rotate": 10.0,
        "flip": True,
        "cutout": False,
        "iap": False,
        "feature_noise": "none",
    }
    params.update(kw)
    return SSMD(MirrorDetector(), **params)  # type: ignore[arg-type]


def test_flip_aligned_consistency_is_zero_for_an_equivariant_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Student on Rot(x), teacher on Flip(Rot(x)) mapped back with hflip(): every anchor matches."""
    method = _mirror_ssmd()
    x = torch.randn(2, 3, 64, 64)
    aligned = method.unlabeled_consistency(x)
    assert aligned.item() < 1e-6
    # without the alignment (teacher's maps compared as they come) the cost is clearly not 0
    monkeypatch.setattr(DenseOutputs, "hflip", lambda self: self)
    assert method.unlabeled_consistency(x).item() > 1e-2


def test_acc_off_is_csd_cost_and_both_vanish_when_aligned() -> None:
    x = torch.randn(2, 3, 64, 64)
    for acc in (True, False):
        assert _mirror_ssmd(acc=acc).unlabeled_consistency(x).item() < 1e-6


def test_iap_perturbs_the_teacher_input_only() -> None:
    method = _mirror_ssmd(iap=True, tau=0.0, epsilon=2.0, rotate=0.0)
    x = torch.randn(2, 3, 64, 64)
    # with the adversarial perturbation the equivariant pair is no longer consistent
    assert method.unlabeled_consistency(x).item() > 1e-5
    assert all(p.grad is None for p in method.teacher.parameters())


def test_cutout_squares_mask_and_visible_fraction_by_hand() -> None:
    from ssmd.data.transforms.functional import (
        cutout_squares,
        fill_squares,
        squares_mask,
        visible_fraction,
    )

    squares = torch.tensor([[[2, 2, 6, 6]]])  # one 4x4 square at x, y in [2, 6)
    mask = squares_mask(squares, 10, 10)
    assert int(mask.sum()) == 16 and bool(mask[0, 2, 2]) and not bool(mask[0, 6, 6])
    boxes = torch.tensor(
        [
            [2.0, 2.0, 6.0, 6.0],  # fully erased
            [4.0, 4.0, 8.0, 8.0],  # 2x2 of 4x4 erased: 0.75 visible
            [7.0, 7.0, 9.0, 9.0],  # untouched
            [0.0, 0.0, 10.0, 10.0],  # 16 of 100 erased
        ]
    )
    frac = visible_fraction(boxes, mask[0])
    assert torch.allclose(frac, torch.tensor([0.0, 0.75, 1.0, 0.84]))
    filled = fill_squares(torch.ones(1, 2, 10, 10), squares)
    assert int((filled == 0).sum()) == 2 * 16
    drawn = cutout_squares(3, 5, 4, 10, 12, torch.Generator().manual_seed(0))
    assert drawn.shape == (3, 5, 4)
    assert bool((drawn[..., 2] - drawn[..., 0] == 4).all()) and int(drawn[..., 2].max()) <= 12
    assert int(drawn[..., 3].max()) <= 10 and int(drawn.min()) >= 0


def test_mostly_erased_boxes_are_dropped_from_the_targets() -> None:
    images = torch.ones(1, 1, 64, 64)
    # a grid of 8x8 boxes covering the whole image: each square of side 18 (round(70*64/448)
    # = 10 -> use cutout_size=126 to get 18) erases several of them
    grid = torch.tensor(
        [[x, y, x + 8.0, y + 8.0] for y in range(0, 64, 8) for x in range(0, 64, 8)]
    )
    labels = torch.ones(len(grid), dtype=torch.int64)
    kw = dict(rotate_degrees=0.0, flip=True, cutout_n=3, cutout_size=126, fill=0.0)
    g = torch.Generator().manual_seed(3)
    kept = make_consistency_views(images, [grid], [labels], min_visible=0.5, generator=g, **kw)
    g = torch.Generator().manual_seed(3)
    literal = make_consistency_views(images, [grid], [labels], min_visible=0.0, generator=g, **kw)
    assert literal.boxes is not None and kept.boxes is not None and kept.erased is not None
    assert literal.boxes[0].shape[0] == 64 and literal.dropped == 0
    assert kept.dropped >= 1 and kept.boxes[0].shape[0] == 64 - kept.dropped
    # every dropped box is at least half erased in the student's view (student pixels == 0)
    erased_s = kept.student[0, 0] == 0
    from ssmd.data.transforms.functional import visible_fraction

    vis = visible_fraction(grid, erased_s)
    assert int((vis < 0.5).sum()) == kept.dropped
    # the union mask holds the student's squares and the teacher's mirrored back
    erased_t = (kept.teacher[0, 0] == 0).flip(-1)
    assert torch.equal(kept.erased[0], erased_s | erased_t)


def test_erased_anchor_mask_follows_flatten_order() -> None:
    erased = torch.zeros(1, 32, 32, dtype=torch.bool)
    erased[0, :16, 16:] = True  # top-right quadrant
    cls = [torch.zeros(1, 2, 2, 4, 4), torch.zeros(1, 2, 2, 2, 2)]  # A = 2, strides 8, 16
    box = [torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 2, 2)]
    outputs = DenseOutputs(cls, box, (32, 32))
    mask = perturb.erased_anchor_mask(erased, outputs)
    assert mask.shape == (1, (16 + 4) * 2)
    # level 0: row (y * 4 + x) * 2 + a is erased iff y < 2 and x >= 2
    want0 = [y < 2 and x >= 2 for y in range(4) for x in range(4) for _ in range(2)]
    want1 = [y < 1 and x >= 1 for y in range(2) for x in range(2) for _ in range(2)]
    assert mask[0].tolist() == want0 + want1
    assert perturb.erased_anchor_mask(erased, outputs, levels=1).shape == (1, 32)


def test_background_fill_by_hand() -> None:
    from ssmd.methods.perturb import background_fill

    # image 0: channel 0 is mostly background at -2 with a few bright pixels; channel 1 ramps
    images = torch.zeros(2, 2, 3, 3)
    images[0, 0] = torch.tensor([[-2.0, -2.0, -2.0], [-2.0, -2.0, 1.0], [1.0, 3.0, 3.0]])
    images[0, 1] = torch.arange(9.0).view(3, 3)
    images[1] = 0.5
    med = background_fill(images, "median")
    assert med.shape == (2, 2, 1, 1)
    assert med.flatten().tolist() == [-2.0, 4.0, 0.5, 0.5]
    assert torch.equal(background_fill(images, "dataset_mean"), torch.zeros(2, 2, 1, 1))
    assert torch.equal(background_fill(images, -2.0), torch.full((2, 2, 1, 1), -2.0))
    with pytest.raises(ValueError, match="fill"):
        background_fill(images, "black")


def _dark_field(size: int = 64) -> Tensor:
    """A normalised fluorescence-like image: background -2 (raw 0), one bright nucleus."""
    image = torch.full((1, 1, size, size), -2.0)
    image[..., 24:40, 24:40] = 3.0
    return image


def test_rotated_in_corners_are_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perturb, "random_angles", lambda n, m, g=None: [10.0] * n)
    image = _dark_field()
    views = make_consistency_views(image, rotate_degrees=10.0, flip=False, cutout_n=0)
    assert views.fill is not None and views.fill.item() == -2.0
    assert views.student[0, 0, 0, 0].item() == pytest.approx(-2.0)  # rotated-in corner
    assert views.student[0, 0, 32, 32].item() == pytest.approx(3.0)  # the nucleus stays
    old = make_consistency_views(
        image, rotate_degrees=10.0, flip=False, cutout_n=0, fill="dataset_mean"
    )
    assert old.student[0, 0, 0, 0].item() == 0.0  # the grey of the old behaviour


def test_cutout_squares_are_background() -> None:
    image = _dark_field()
    g = torch.Generator().manual_seed(0)
    cut = make_consistency_views(
        image, rotate_degrees=0.0, flip=False, cutout_n=3, cutout_size=126, generator=g
    )
    assert cut.erased is not None
    erased_s = cut.erased[0]  # teacher squares are in the union too; check the student's own
    squares = cut.student[0, 0] != image[0, 0]
    assert bool(squares.any()) and bool((squares <= erased_s).all())
    # squares hide the nucleus with background, never with grey
    assert set(cut.student.unique().tolist()) <= {-2.0, 3.0}
    assert set(cut.teacher.unique().tolist()) <= {-2.0, 3.0}


def test_clean_teacher_view_has_no_squares() -> None:
    images = torch.randn(2, 3, 64, 64)
    g = torch.Generator().manual_seed(1)
    views = make_consistency_views(
        images,
        rotate_degrees=0.0,
        flip=True,
        cutout_n=3,
        cutout_size=126,
        fill=100.0,
        teacher_cutout=False,
        generator=g,
    )
    assert torch.equal(views.teacher, images.flip(-1))
    assert views.erased is not None
    assert torch.equal(views.erased, (views.student == 100.0).all(dim=1))  # student's only
    both = make_consistency_views(
        images, rotate_degrees=0.0, flip=True, cutout_n=3, cutout_size=126, fill=100.0
    )
    assert bool((both.teacher == 100.0).any())


def test_erased_box_fraction_and_mask_by_hand() -> None:
    from ssmd.methods.perturb import erased_box_mask, erased_fraction

    erased = torch.zeros(2, 20, 20, dtype=torch.bool)
    erased[0, :10, :10] = True  # image 0: the top-left 10 x 10 square
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # inside the square: 1
            [5.0, 5.0, 15.0, 15.0],  # 5 x 5 of 10 x 10: 0.25
            [10.0, 10.0, 20.0, 20.0],  # outside: 0
            [8.0, 0.0, 18.0, 10.0],  # 2 x 10 of 10 x 10: 0.2
            [4.5, 4.5, 9.5, 9.5],  # rounded outwards to [4, 10): inside, 1
            [3.0, 3.0, 3.0, 3.0],  # no pixel: 0
            [30.0, 30.0, 40.0, 40.0],  # outside the image: 0
        ]
    )
    frac = erased_fraction(erased, boxes.expand(2, -1, -1))
    want = torch.tensor([1.0, 0.25, 0.0, 0.2, 1.0, 0.0, 0.0])
    torch.testing.assert_close(frac[0], want)
    torch.testing.assert_close(frac[1], torch.zeros(7))  # image 1 has no square
    mask = erased_box_mask(erased, [boxes], threshold=0.2)
    assert mask[0].tolist() == [True, True, False, False, True, False, False]
    assert not bool(mask[1].any())
    # several box sets: an anchor is dropped when any of its boxes is hidden
    moved = boxes.clone().expand(2, -1, -1).clone()
    moved[0, 2] = torch.tensor([0.0, 0.0, 4.0, 4.0])  # the predicted box of anchor 2 is hidden
    both = erased_box_mask(erased, [boxes, moved], threshold=0.2)
    assert both[0].tolist() == [True, True, True, False, True, False, False]
    with pytest.raises(ValueError, match="box set"):
        erased_box_mask(erased, [])

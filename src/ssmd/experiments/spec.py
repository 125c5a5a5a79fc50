"""The experiment file: its schema, validation, and the grid of cells it describes.

An experiment file (``configs/experiments/*.yaml``) names a base config and the grid::

    name: table1_cpu
    base_config: configs/dsb2018_cpu.yaml      # relative to the working directory or this file
    output_dir: runs/experiments/table1_cpu
    overrides: [data.root=../shared/data/dsb2018/stage1_train]   # applied to every cell
    ratios: [0.1, 0.2]                         # split.labeled_ratio of the grid
    seeds: [0, 1, 2]                           # training seeds (split.seed stays fixed)
    metrics: [AP, AP50, CPM]                   # first = the table's and the plot's main metric
    test: paired_t                             # paired_t (default) | wilcoxon | welch
    baseline: Supervised                       # optional: every row's difference to this row
    percent: true                              # print metrics x 100 (Table 1 style)
    methods:
      - {label: Supervised, name: supervised}
      - {label: SSMD w/o ACC, name: ssmd, params: {acc: false}}
      - {label: Fully-supervised, name: supervised, ratios: [1.0], reference: true}

Each cell ``(method, ratio, seed)`` is one training run in ``<output_dir>/runs/<cell>/``
(``<label-slug>__r<ratio>__s<seed>``) with ``method`` *replaced* by ``{name, **params}``,
``split.labeled_ratio``, ``seed`` and ``output_dir`` set, after the experiment's and the
method's ``overrides`` (in which ``{ratio}`` and ``{seed}`` stand for the cell's, e.g.
``model.pretrained_weights=runs/pretrain/r{ratio}/backbone.pt`` for a backbone pretrained on
each ratio's unlabeled part). :meth:`Experiment.restrict` selects the rows, seeds and ratios
one worker runs (``--rows`` / ``--seeds`` / ``--ratios``); the cells keep their folders.

This module only describes the grid: running it is :mod:`ssmd.experiments.runner`, claiming
cells :mod:`ssmd.experiments.claims`, the tables :mod:`ssmd.experiments.report`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssmd.config import ConfigError, load_config

__all__ = [
    "TESTS",
    "TEST_NAMES",
    "Cell",
    "Experiment",
    "MethodSpec",
    "load_experiment",
    "slugify",
]

TESTS = ("paired_t", "wilcoxon", "welch")
TEST_NAMES = {
    "paired_t": "paired t-test over seeds",
    "wilcoxon": "Wilcoxon signed-rank test over seeds",
    "welch": "Welch's t-test",
}
_TOP_KEYS = {
    "name",
    "description",
    "base_config",
    "output_dir",
    "overrides",
    "ratios",
    "seeds",
    "metrics",
    "test",
    "percent",
    "methods",
    "baseline",
}
_METHOD_KEYS = {"label", "name", "params", "overrides", "ratios", "reference"}


def slugify(text: str) -> str:
    """``text`` as a folder name: lower case, other characters as ``-`` (``method`` if empty)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "method"


@dataclass(frozen=True)
class MethodSpec:
    """One row of the table: a registered method with its parameters.

    Attributes:
        label: row name (unique), e.g. ``"SSMD w/o ACC"``.
        name: registered method (``method.name``).
        params: ``method.<key>`` values.
        overrides: further ``key=value`` config overrides for this row.
        ratios: labeled ratios of this row (``None``: the experiment's).
        reference: shown but not ranked (e.g. fully supervised, Table 1's last row).
    """

    label: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    ratios: tuple[float, ...] | None = None
    reference: bool = False

    @property
    def slug(self) -> str:
        return slugify(self.label)


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    method: MethodSpec
    ratio: float
    seed: int

    @property
    def id(self) -> str:
        """``<label-slug>__r<ratio>__s<seed>``, the folder and lock name."""
        return f"{self.method.slug}__r{self.ratio:g}__s{self.seed}"


@dataclass
class Experiment:
    """A parsed experiment file (module docstring)."""

    name: str
    base_config: Path
    output_dir: Path
    overrides: list[str]
    ratios: list[float]
    seeds: list[int]
    metrics: list[str]
    methods: list[MethodSpec]
    test: str = "paired_t"
    percent: bool = True
    source: Path = Path("<experiment>")
    description: str = ""
    baseline: str | None = None
    parent: Experiment | None = field(default=None, repr=False, compare=False)

    def cells(self) -> list[Cell]:
        """All cells, seed-major (a partial run already has paired cells), then ratio, then row."""
        ratios = sorted({r for m in self.methods for r in (m.ratios or self.ratios)})
        out = []
        for seed in self.seeds:
            for ratio in ratios:
                for m in self.methods:
                    if ratio in (m.ratios or self.ratios):
                        out.append(Cell(m, ratio, seed))
        return out

    def restrict(
        self,
        ratios: list[float] | None = None,
        seeds: list[int] | None = None,
        rows: list[str] | None = None,
    ) -> Experiment:
        """The same experiment with only the given shared ``ratios``, ``seeds`` and/or ``rows``.

        A row with its own ratios (e.g. fully supervised at 1.0) keeps them: ``--ratios 0.1
        0.2`` runs Table 1's 10% and 20% columns and its reference row. Finished cells of the
        other ratios / seeds stay on disk but are not run or reported by this object.

        ``rows`` are method labels (case-insensitive) or their slugs, e.g. ``["Supervised",
        "SSMD"]`` runs those two rows first; the cells are the same (same folders) as in the
        full grid.

        Raises:
            ConfigError: a ratio, seed or row the experiment file does not list.
        """
        out = copy.copy(self)
        out.parent = self.parent or self
        if rows is not None:
            known = {m.label.lower(): m for m in self.methods} | {m.slug: m for m in self.methods}
            unknown = [r for r in rows if r.lower() not in known]
            if unknown:
                raise ConfigError(
                    f"{self.source}: row {unknown[0]!r} is not in the file's methods "
                    f"{[m.label for m in self.methods]}"
                )
            wanted = {id(known[r.lower()]) for r in rows}
            out.methods = [m for m in self.methods if id(m) in wanted]
        if ratios is not None:
            missing = [r for r in ratios if not any(abs(r - x) < 1e-9 for x in self.ratios)]
            if missing:
                raise ConfigError(
                    f"{self.source}: ratio {missing[0]:g} is not in the file's ratios {self.ratios}"
                )
            out.ratios = [x for x in self.ratios if any(abs(r - x) < 1e-9 for r in ratios)]
        if seeds is not None:
            missing_seeds = [s for s in seeds if s not in self.seeds]
            if missing_seeds:
                raise ConfigError(
                    f"{self.source}: seed {missing_seeds[0]} is not in the file's seeds {self.seeds}"
                )
            out.seeds = [s for s in self.seeds if s in seeds]
        return out

    def report_view(self) -> Experiment:
        """What the report covers, whatever subset (:meth:`restrict`) this worker runs.

        Every row and seed of the file, and those of the file's shared ratios that this object
        covers or that have a finished cell, so that workers running different
        ``--rows`` / ``--seeds`` / ``--ratios`` of one output folder all write the same,
        complete ``table.md`` instead of each overwriting it with its own slice.
        """
        full = self.parent or self
        view = copy.copy(full)
        view.parent = None
        done = {
            c.ratio
            for c in full.cells()
            if c.method.ratios is None and (full.run_dir(c) / "result.json").is_file()
        }
        view.ratios = [r for r in full.ratios if r in done or r in self.ratios]
        return view

    def run_dir(self, cell: Cell) -> Path:
        return self.output_dir / "runs" / cell.id

    def cell_config(self, cell: Cell) -> dict[str, Any]:
        """The resolved config of ``cell``."""
        overrides = [
            o.replace("{ratio}", f"{cell.ratio:g}").replace("{seed}", str(cell.seed))
            for o in [*self.overrides, *cell.method.overrides]
        ]
        config = copy.deepcopy(load_config(self.base_config, overrides))
        config["method"] = {"name": cell.method.name, **copy.deepcopy(cell.method.params)}
        config.setdefault("split", {})["labeled_ratio"] = float(cell.ratio)
        config["seed"] = int(cell.seed)
        config["output_dir"] = str(self.run_dir(cell))
        return config

    def row_init(self, method: MethodSpec) -> str:
        """The row's initialisation: ``scratch`` or its ``model.pretrained_weights`` as written
        (``{ratio}`` / ``{seed}`` not filled in)."""
        config = load_config(self.base_config, [*self.overrides, *method.overrides])
        return str(config.get("model", {}).get("pretrained_weights") or "scratch")

    @property
    def task(self) -> str:
        return str(load_config(self.base_config, list(self.overrides)).get("task", "detection"))


def _fail(source: Path, key: str, value: object, need: str) -> ConfigError:
    return ConfigError(f"{source}: {key} = {value!r}: {need}")


def _resolve(path: str, source: Path) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    beside = source.parent / p
    return beside if beside.exists() else p


def load_experiment(path: str | Path, output_dir: str | Path | None = None) -> Experiment:
    """Parse and validate an experiment file (module docstring).

    Args:
        path: the YAML file.
        output_dir: overrides the file's ``output_dir``.

    Raises:
        ConfigError: missing file, bad YAML, an unknown or invalid field (named with its value),
            an unknown method, or a base config / override that does not load.
    """
    src = Path(path)
    if not src.is_file():
        raise ConfigError(f"{src}: experiment file not found")
    try:
        raw = yaml.safe_load(src.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{src}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: top level must be a mapping")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _fail(src, unknown[0], raw[unknown[0]], f"unknown key; known: {sorted(_TOP_KEYS)}")
    for key in ("base_config", "methods", "ratios", "seeds"):
        if key not in raw:
            raise ConfigError(f"{src}: field {key!r} is required")
    base = _resolve(str(raw["base_config"]), src)
    if not base.is_file():
        raise _fail(src, "base_config", raw["base_config"], "file not found")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise _fail(src, "overrides", overrides, "expected a list of key=value strings")
    ratios = raw["ratios"]
    if not isinstance(ratios, list) or not ratios:
        raise _fail(src, "ratios", ratios, "expected a non-empty list")
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0.0 < float(r) <= 1.0:
            raise _fail(src, "ratios", r, "each labeled ratio must be in (0, 1]")
    seeds = raw["seeds"]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise _fail(src, "seeds", seeds, "expected a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        raise _fail(src, "seeds", seeds, "seeds repeat")
    metrics = raw.get("metrics") or ["AP"]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise _fail(src, "metrics", metrics, "expected a list of metric names")
    test = raw.get("test", "paired_t")
    if test not in TESTS:
        raise _fail(src, "test", test, f"expected one of {TESTS}")
    methods_raw = raw["methods"]
    if not isinstance(methods_raw, list) or not methods_raw:
        raise _fail(src, "methods", methods_raw, "expected a non-empty list")
    methods: list[MethodSpec] = []
    for i, m in enumerate(methods_raw):
        where = f"methods[{i}]"
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, dict) or "name" not in m:
            raise _fail(src, where, m, "expected a mapping with 'name' (and label, params, ...)")
        bad = sorted(set(m) - _METHOD_KEYS)
        if bad:
            raise _fail(
                src, f"{where}.{bad[0]}", m[bad[0]], f"unknown key; known: {sorted(_METHOD_KEYS)}"
            )
        params = m.get("params") or {}
        if not isinstance(params, dict):
            raise _fail(src, f"{where}.params", params, "expected a mapping of method parameters")
        m_over = m.get("overrides") or []
        if not isinstance(m_over, list) or not all(isinstance(o, str) for o in m_over):
            raise _fail(src, f"{where}.overrides", m_over, "expected a list of key=value strings")
        m_ratios = m.get("ratios")
        if m_ratios is not None and (
            not isinstance(m_ratios, list)
            or not m_ratios
            or not all(isinstance(r, int | float) and 0.0 < float(r) <= 1.0 for r in m_ratios)
        ):
            raise _fail(src, f"{where}.ratios", m_ratios, "expected a list of ratios in (0, 1]")
        spec = MethodSpec(
            label=str(m.get("label", m["name"])),
            name=str(m["name"]),
            params=dict(params),
            overrides=tuple(m_over),
            ratios=None if m_ratios is None else tuple(float(r) for r in m_ratios),
            reference=bool(m.get("reference", False)),
        )
        if any(s.slug == spec.slug for s in methods):
            raise _fail(
                src, f"{where}.label", spec.label, "labels must be unique (as folder names)"
            )
        methods.append(spec)
    baseline = raw.get("baseline")
    if baseline is not None:
        ranked = [s.label for s in methods if not s.reference]
        if baseline not in ranked:
            raise _fail(
                src, "baseline", baseline, f"expected a ranked row's label, one of {ranked}"
            )
    out = (
        Path(output_dir)
        if output_dir is not None
        else Path(raw.get("output_dir") or f"runs/experiments/{src.stem}")
    )
    exp = Experiment(
        name=str(raw.get("name", src.stem)),
        base_config=base,
        output_dir=out,
        overrides=list(overrides),
        ratios=[float(r) for r in ratios],
        seeds=[int(s) for s in seeds],
        metrics=list(metrics),
        methods=methods,
        test=str(test),
        percent=bool(raw.get("percent", True)),
        source=src,
        description=str(raw.get("description", "")),
        baseline=None if baseline is None else str(baseline),
    )
    try:  # every row's config must load (typos in overrides fail now, not hours later)
        base_cfg = load_config(base, exp.overrides)
        for spec in methods:
            load_config(base, [*exp.overrides, *spec.overrides])
    except ConfigError as exc:
        raise ConfigError(f"{src}: {exc}") from exc
    from ssmd.tasks import get_task

    known = get_task(base_cfg).methods.names()  # the methods of the file's task
    for i, spec in enumerate(methods):
        if spec.name not in known:
            raise _fail(
                src,
                f"methods[{i}].name",
                spec.name,
                f"unknown method of task {base_cfg.get('task', 'detection')!r}; known: {sorted(known)}",
            )
    return exp

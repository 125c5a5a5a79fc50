"""Experiments: methods x labeled ratios x seeds, resumable and shareable between workers.

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
each ratio's unlabeled part). A finished cell has ``result.json`` (written atomically) and is
never re-run; an interrupted one resumes from its ``last.pt``. A pseudo-labeling cell
whose stage 1 (the supervised detector) already exists as a finished run of the same ratio
and seed with the same config — another threshold's ``<run>/stage1``, or the supervised row's
run — reuses it instead of training it again (:func:`shared_stage1`).

**Workers.** Any number of processes, on one or several machines sharing ``output_dir``,
may run the same experiment: a cell is claimed by creating ``<output_dir>/locks/<cell>.lock``
with ``O_CREAT | O_EXCL`` (atomic, also on NFS v3+), refreshed every minute while the cell
runs. A lock is stale when its process is gone (same host) or it was not refreshed for
``stale_after`` seconds (another host); a stale lock is broken under a second exclusive
``.break`` lock, so two workers cannot both take it over.

**Report** (rewritten after every cell, from whatever has finished): ``results.csv`` (one
row per finished cell), ``table.md`` (Table 1's layout per metric: mean +- std over seeds,
the best of the ranked methods in bold with its gain over the second best, and the p-value
between the two, paired by seed, with the test named; with ``baseline`` set, a second table
per metric gives every ranked row's difference to the baseline row and its p-value, the
question a semi-supervised user asks first), ``summary.json`` and
``plot_<metric>.png`` (the main metric against the labeled ratio, one line per method).
Each cell records its initialisation (``init``: ``scratch`` or the ``model.pretrained_weights``
file, e.g. a backbone from ``ssmd pretrain``) in ``result.json`` and ``results.csv``; when a row
starts from pretrained weights, ``table.md`` gets an *Init* column saying which.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssmd.config import ConfigError, load_config
from ssmd.evaluation.statistics import compare, mean_std

__all__ = [
    "Cell",
    "Experiment",
    "MethodSpec",
    "cell_status",
    "claim",
    "collect_results",
    "load_experiment",
    "run_experiment",
    "write_report",
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
HEARTBEAT_SECONDS = 60.0


def _slug(text: str) -> str:
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
        return _slug(self.label)


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
    if base_cfg.get("task", "detection") == "detection":
        from ssmd.methods import METHODS

        for i, spec in enumerate(methods):
            if spec.name not in METHODS.names():
                raise _fail(
                    src,
                    f"methods[{i}].name",
                    spec.name,
                    f"unknown method; known: {sorted(METHODS.names())}",
                )
    return exp


# ---------------------------------------------------------------------------- claiming
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_owner(lock: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(lock.read_text() or "{}"))
    except (OSError, ValueError):
        return {}


def is_stale(lock: Path, stale_after: float) -> bool:
    """Whether ``lock``'s owner is gone (same host, dead pid) or silent for ``stale_after`` s."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    owner = _lock_owner(lock)
    same_host = owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int)
    if same_host and not _pid_alive(owner["pid"]):
        return True
    return age > stale_after


def _create(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}, fh)
    return True


def claim(lock: Path, stale_after: float = 1800.0) -> bool:
    """Create ``lock`` exclusively; break it first if it is stale. True if this process owns it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    if _create(lock):
        return True
    if not is_stale(lock, stale_after):
        return False
    breaker = lock.with_name(lock.name + ".break")
    if breaker.exists() and time.time() - breaker.stat().st_mtime > 60:
        breaker.unlink(missing_ok=True)  # a breaker that died while breaking
    if not _create(breaker):
        return False
    try:
        if is_stale(lock, stale_after):  # re-check under the breaker lock
            lock.unlink(missing_ok=True)
        return _create(lock)
    finally:
        breaker.unlink(missing_ok=True)


@contextmanager
def _held(lock: Path) -> Iterator[None]:
    """Refresh ``lock``'s mtime every minute while the body runs; remove it afterwards."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(lock)
            except OSError:
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        owner = _lock_owner(lock)
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            lock.unlink(missing_ok=True)


def cell_status(exp: Experiment, cell: Cell, stale_after: float = 1800.0) -> str:
    """``done``, ``running (host:pid)``, ``stale lock`` or ``todo``.

    A pseudo-labeling cell that would reuse a finished stage 1 says so: ``todo (stage 1:
    <run>)``.
    """
    if (exp.run_dir(cell) / "result.json").is_file():
        return "done"
    lock = exp.output_dir / "locks" / f"{cell.id}.lock"
    if lock.exists():
        if is_stale(lock, stale_after):
            return "stale lock"
        owner = _lock_owner(lock)
        return f"running ({owner.get('host', '?')}:{owner.get('pid', '?')})"
    if cell.method.name == "pseudo_label":
        shared = shared_stage1(exp, cell, exp.cell_config(cell))
        if shared is not None:
            return f"todo (stage 1: {shared.relative_to(exp.run_dir(cell).parent)})"
    return "todo"


# ---------------------------------------------------------------------------- running
def _train(
    config: dict[str, Any], resume: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    if config.get("task", "detection") == "classification":
        from ssmd.engine.classification import run_classification_training  # lazy: optional

        return dict(run_classification_training(config, resume=resume if resume else False))
    from ssmd.engine.build import run_training

    return run_training(config, resume=resume, log=log)


def shared_stage1(exp: Experiment, cell: Cell, config: dict[str, Any]) -> Path | None:
    """A finished run of the same ratio and seed that can be this pseudo-labeling cell's stage 1.

    Pseudo-labeling rows that differ only in stage-2 settings (the threshold) have the same
    stage 1, and so does the supervised row of their split and seed: the first finished one
    whose config matches (:func:`ssmd.engine.pseudo_label.stage1_mismatch`) — another row's
    ``<run>/stage1`` or a supervised ``<run>`` — is reused instead of trained again. ``None``
    for other methods, a cell whose own stage 1 already started, or when nothing matches.
    """
    if cell.method.name != "pseudo_label" or config["method"].get("stage1_dir"):
        return None
    own = exp.run_dir(cell) / "stage1"
    if (own / "config.yaml").is_file():  # started (or finished) its own: keep it
        return None
    from ssmd.engine.pseudo_label import stage1_mismatch

    runs = exp.run_dir(cell).parent
    for other in sorted(runs.glob(f"*__r{cell.ratio:g}__s{cell.seed}")):
        if other == exp.run_dir(cell):
            continue
        for candidate in (other / "stage1", other):
            if stage1_mismatch(config, candidate) is None:
                return candidate
    return None


def run_cell(exp: Experiment, cell: Cell, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one cell (resuming its ``last.pt``) and write its ``result.json``.

    A pseudo-labeling cell reuses a matching finished stage 1 (:func:`shared_stage1`).
    """
    run_dir = exp.run_dir(cell)
    config = exp.cell_config(cell)
    shared = shared_stage1(exp, cell, config)
    if shared is not None:
        config["method"]["stage1_dir"] = str(shared)
        log(f"experiment: {cell.id} reuses the finished stage 1 {shared}")
    last = run_dir / "last.pt"
    start = time.time()
    summary = _train(config, last if last.is_file() else None, log)
    test = summary.get("test", summary)
    result = {
        "cell": cell.id,
        "label": cell.method.label,
        "method": cell.method.name,
        "params": cell.method.params,
        "ratio": cell.ratio,
        "seed": cell.seed,
        "init": str(config.get("model", {}).get("pretrained_weights") or "scratch"),
        "test": {k: v for k, v in test.items() if isinstance(v, int | float)},
        "train_seconds": summary.get("train_seconds_total", summary.get("train_seconds")),
        "wall_seconds": round(time.time() - start, 1),
        "run_dir": str(run_dir),
        "host": socket.gethostname(),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(run_dir / "result.json", json.dumps(result, indent=2))
    return result


def run_experiment(
    exp: Experiment,
    log: Callable[[str], None] = print,
    max_cells: int | None = None,
    stale_after: float = 1800.0,
    report: bool = True,
) -> dict[str, Any]:
    """Run every unfinished, unclaimed cell (module docstring); returns ``{"ran", "failed", ...}``.

    A failing cell is logged (``<run>/error.txt``), released and left for a later call; the
    other cells go on.
    """
    ran: list[str] = []
    failed: list[str] = []
    skipped: list[str] = []
    for cell in exp.cells():
        if max_cells is not None and len(ran) + len(failed) >= max_cells:
            break
        if (exp.run_dir(cell) / "result.json").is_file():
            continue
        lock = exp.output_dir / "locks" / f"{cell.id}.lock"
        if not claim(lock, stale_after):
            skipped.append(cell.id)
            log(f"experiment: {cell.id} is claimed by another worker; skipping")
            continue
        with _held(lock):
            if (exp.run_dir(cell) / "result.json").is_file():  # finished while we looked
                continue
            log(f"experiment: running {cell.id}")
            try:
                run_cell(exp, cell, log)
                ran.append(cell.id)
            except Exception as exc:  # one bad cell must not stop the grid
                failed.append(cell.id)
                exp.run_dir(cell).mkdir(parents=True, exist_ok=True)
                (exp.run_dir(cell) / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
                log(f"experiment: {cell.id} failed: {type(exc).__name__}: {exc}")
        if report:
            write_report(exp)
    if report:
        write_report(exp)
    return {"ran": ran, "failed": failed, "claimed_elsewhere": skipped}


# ---------------------------------------------------------------------------- report
def collect_results(exp: Experiment) -> list[dict[str, Any]]:
    """``result.json`` of every finished cell, in grid order."""
    rows = []
    for cell in exp.cells():
        path = exp.run_dir(cell) / "result.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    return rows


def _values(rows: list[dict[str, Any]], label: str, ratio: float, metric: str) -> dict[int, float]:
    out = {}
    for r in rows:
        v = r["test"].get(metric)
        ok = isinstance(v, int | float) and math.isfinite(float(v))
        if ok and r["label"] == label and float(r["ratio"]) == ratio:
            out[int(r["seed"])] = float(v)
    return out


def _versus(a: dict[str, Any], b: dict[str, Any], test: str, scale: float) -> dict[str, Any]:
    """Row ``a`` against row ``b`` on the seeds both have: the mean paired difference (x
    ``scale``) and, from 2 such seeds on, the p-value. ``{}`` without a common seed."""
    seeds = sorted(set(a["by_seed"]) & set(b["by_seed"]))
    if not seeds:
        return {}
    xa = [a["by_seed"][s] for s in seeds]
    xb = [b["by_seed"][s] for s in seeds]
    out: dict[str, Any] = {
        "diff": scale * sum(x - y for x, y in zip(xa, xb, strict=True)) / len(seeds),
        "paired_seeds": seeds,
    }
    if len(seeds) >= 2:
        out["p_value"] = compare(xa, xb, test=test)["p_value"]  # type: ignore[arg-type]
    return out


def summarize(exp: Experiment, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric and ratio: mean/std/n per row, the best ranked row, its gain and the p-value."""
    scale = 100.0 if exp.percent else 1.0
    ratios = sorted(set(exp.ratios))
    out: dict[str, Any] = {"test": exp.test, "percent": exp.percent, "metrics": {}}
    for metric in exp.metrics:
        per_ratio: dict[str, Any] = {}
        for ratio in sorted({r for m in exp.methods for r in (m.ratios or exp.ratios)}):
            cells: dict[str, Any] = {}
            for m in exp.methods:
                vals = _values(rows, m.label, ratio, metric)
                if vals:
                    mean, std = mean_std([v * scale for v in vals.values()])
                    cells[m.label] = {"mean": mean, "std": std, "n": len(vals), "by_seed": vals}
            ranked = sorted(
                (
                    lab
                    for lab in cells
                    if not next(m for m in exp.methods if m.label == lab).reference
                ),
                key=lambda lab: cells[lab]["mean"],
                reverse=True,
            )
            entry: dict[str, Any] = {"cells": cells}
            if ratio in ratios and len(ranked) >= 1:
                entry["best"] = ranked[0]
            if ratio in ratios and len(ranked) >= 2:
                a, b = ranked[0], ranked[1]
                entry["second"] = b
                entry["gain"] = cells[a]["mean"] - cells[b]["mean"]
                top_two = _versus(cells[a], cells[b], exp.test, scale)
                if "p_value" in top_two:
                    entry["p_value"] = top_two["p_value"]
                    entry["paired_seeds"] = top_two["paired_seeds"]
            if ratio in ratios and exp.baseline in cells:
                versus = {
                    lab: _versus(cells[lab], cells[exp.baseline], exp.test, scale)
                    for lab in ranked
                    if lab != exp.baseline
                }
                entry["vs_baseline"] = {lab: v for lab, v in versus.items() if v}
            per_ratio[f"{ratio:g}"] = entry
        out["metrics"][metric] = per_ratio
    return out


def _pct(r: float) -> str:
    return f"{100 * r:g}%"


def _cell_text(cell: dict[str, Any], digits: int, n_seeds: int) -> str:
    """``mean ± std``; a single seed has no spread, so it shows the value alone with ``(n=1)``."""
    if cell["n"] < 2:
        text = f"{cell['mean']:.{digits}f}"
    else:
        text = f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"
    if cell["n"] < n_seeds:
        text += f" (n={cell['n']})"
    return text


def format_table(
    exp: Experiment,
    summary: dict[str, Any],
    metric: str,
    inits: dict[str, str] | None = None,
) -> str:
    """Table 1's layout for ``metric`` (markdown); ``inits`` (row label -> initialisation), when
    some row is not ``scratch``, adds an *Init* column."""
    digits = 1 if exp.percent else 3
    ratios = sorted(set(exp.ratios))
    per_ratio = summary["metrics"][metric]
    unit = " (x100)" if exp.percent else ""
    shown = inits if inits and any(v != "scratch" for v in inits.values()) else None

    def label(m: MethodSpec) -> str:
        return f"{m.label} | {shown.get(m.label, 'scratch')}" if shown else m.label

    lines = [f"### {metric}{unit}", ""]
    lines.append(
        "| Method | " + ("Init | " if shown else "") + " | ".join(_pct(r) for r in ratios) + " |"
    )
    lines.append("|---|" + ("---|" if shown else "") + "---:|" * len(ratios))
    for m in exp.methods:
        if m.ratios is not None and not set(m.ratios) & set(ratios):
            continue  # reference rows at other ratios go below
        row = []
        for r in ratios:
            entry = per_ratio.get(f"{r:g}", {})
            cell = entry.get("cells", {}).get(m.label)
            if cell is None:
                row.append("—")
                continue
            text = _cell_text(cell, digits, len(exp.seeds))
            if entry.get("best") == m.label:
                text = f"**{text}**"
                if "gain" in entry:
                    text += f" +{entry['gain']:.{digits}f}"
            row.append(text)
        lines.append(f"| {label(m)} | " + " | ".join(row) + " |")
    for m in exp.methods:
        if m.ratios is None or set(m.ratios) & set(ratios):
            continue
        parts = []
        for r in m.ratios:
            cell = per_ratio.get(f"{r:g}", {}).get("cells", {}).get(m.label)
            if cell is not None:
                parts.append(f"{_cell_text(cell, digits, len(exp.seeds))} at {_pct(r)} labels")
        first = "; ".join(parts) if parts else "—"
        lines.append(f"| {label(m)} | {first} |" + " |" * (len(ratios) - 1))
    pvals = []
    for r in ratios:
        entry = per_ratio.get(f"{r:g}", {})
        if "p_value" in entry:
            pvals.append(f"{entry['p_value']:.4f}")
        elif "second" in entry:
            pvals.append("n/a (< 2 paired seeds)")
        else:
            pvals.append("—")
    lines.append(
        "| *p*-value (best vs second) | " + ("| " if shown else "") + " | ".join(pvals) + " |"
    )
    lines.append("")
    pairs = [
        f"{_pct(r)}: {per_ratio[f'{r:g}']['best']} vs {per_ratio[f'{r:g}']['second']}"
        for r in ratios
        if "second" in per_ratio.get(f"{r:g}", {})
    ]
    lines.append(
        f"Mean ± sample std over seeds {exp.seeds}; bold: best ranked method, with its gain over "
        f"the second best; *p*-values: {TEST_NAMES[exp.test]} (scipy) between the two"
        + (f" ({'; '.join(pairs)})" if pairs else "")
        + "."
    )
    if exp.baseline is not None and any("vs_baseline" in e for e in per_ratio.values()):
        lines += ["", *_baseline_table(exp, per_ratio, metric, digits, ratios)]
    return "\n".join(lines)


def _baseline_table(
    exp: Experiment, per_ratio: dict[str, Any], metric: str, digits: int, ratios: list[float]
) -> list[str]:
    """Every ranked row's difference to ``exp.baseline`` and its p-value, per ratio."""
    unit = " (x100)" if exp.percent else ""
    lines = [
        f"{metric}{unit} difference to {exp.baseline}:",
        "",
        "| Method | " + " | ".join(_pct(r) for r in ratios) + " |",
        "|---|" + "---:|" * len(ratios),
    ]
    for m in exp.methods:
        if m.reference or m.label == exp.baseline:
            continue
        row = []
        for r in ratios:
            vs = per_ratio.get(f"{r:g}", {}).get("vs_baseline", {}).get(m.label)
            if vs is None:
                row.append("—")
                continue
            n = len(vs["paired_seeds"])
            p = f"p = {vs['p_value']:.4f}" if "p_value" in vs else "p n/a"
            note = f", n={n}" if n < len(exp.seeds) else ""
            row.append(f"{vs['diff']:+.{digits}f} ({p}{note})")
        lines.append(f"| {m.label} | " + " | ".join(row) + " |")
    lines += [
        "",
        f"Mean difference over the seeds both rows have (n: their number where fewer than "
        f"{len(exp.seeds)}), so it may differ from the difference of the means above; "
        f"*p*-value: {TEST_NAMES[exp.test]} (scipy) on those seeds (none below 2).",
    ]
    return lines


def write_report(exp: Experiment) -> dict[str, Any]:
    """Write ``results.csv``, ``table.md``, ``summary.json`` and ``plot_<metric>.png``.

    They cover :meth:`Experiment.report_view`: all finished cells of the file, not just the
    rows / seeds / ratios this call's ``exp`` was restricted to.
    """
    exp = exp.report_view()
    exp.output_dir.mkdir(parents=True, exist_ok=True)
    rows = collect_results(exp)
    metric_keys = list(exp.metrics)
    for r in rows:
        metric_keys += [k for k in r["test"] if k not in metric_keys]
    header = ["cell", "label", "method", "ratio", "seed", *metric_keys, "train_seconds", "run_dir"]
    header.append("init")
    tmp = exp.output_dir / f".results.csv.{uuid.uuid4().hex}.tmp"
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in rows:
            writer.writerow(
                [r["cell"], r["label"], r["method"], r["ratio"], r["seed"]]
                + [r["test"].get(k, "") for k in metric_keys]
                + [r.get("train_seconds", ""), r.get("run_dir", ""), r.get("init", "scratch")]
            )
    os.replace(tmp, exp.output_dir / "results.csv")
    summary = summarize(exp, rows)
    done = len(rows)
    total = len(exp.cells())
    head = [f"# {exp.name}", ""]
    if exp.description:
        head += [exp.description.strip(), ""]
    head += [
        f"Experiment file: `{exp.source}`; base config: `{exp.base_config}`; "
        f"overrides: `{' '.join(exp.overrides) or '(none)'}`.",
        f"Finished cells: {done}/{total}.",
        "",
    ]
    inits = {m.label: exp.row_init(m) for m in exp.methods}
    body = [format_table(exp, summary, m, inits) for m in exp.metrics]
    _write_atomic(exp.output_dir / "table.md", "\n".join(head) + "\n" + "\n\n".join(body) + "\n")
    _write_atomic(exp.output_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    if rows:
        _plot(exp, summary, exp.metrics[0])
    return summary


def _plot(exp: Experiment, summary: dict[str, Any], metric: str) -> Path | None:
    from ssmd.evaluation.plots import plot_curves

    series: dict[str, Any] = {}
    per_ratio = summary["metrics"][metric]
    for m in exp.methods:
        xs, ys, es = [], [], []
        for key in sorted(per_ratio, key=float):
            cell = per_ratio[key]["cells"].get(m.label)
            if cell is not None:
                xs.append(float(key))
                ys.append(cell["mean"])
                es.append(cell["std"])
        if xs:
            series[m.label] = (xs, ys, es)
    if not series:
        return None
    path = exp.output_dir / f"plot_{_slug(metric)}.png"
    return plot_curves(
        series,
        path,
        xlabel="labeled fraction",
        ylabel=f"{metric} (x100)" if exp.percent else metric,
        title=exp.name,
        percent_x=True,
    )

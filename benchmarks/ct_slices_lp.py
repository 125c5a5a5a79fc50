"""Run the ct_slices recipe (LP paper: FPN-3DCE baseline, then +LP / +MM) and print the table.

    python benchmarks/ct_slices_lp.py --config configs/ct_slices_synthetic_cpu.yaml [key=value ...]

Stage 1 is the baseline (``<output_dir>/stage1``), the final run the baseline + LP / MM; the
sensitivities at 0.5, 1, 2, 4, 8 FPs per image (IoU >= 0.5) on the test key slices of both,
and the precision / recall of the propagated and mined boxes against the hidden truth, are
printed as JSON (``ssmd train --config ...`` runs the same recipe and prints the final metrics).
"""

from __future__ import annotations

import argparse
import json
import time

from ssmd.config import load_config
from ssmd.tasks.detection import run_training

RATES = ("0.5", "1", "2", "4", "8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    start = time.perf_counter()
    summary = run_training(config)

    def row(test: dict[str, float]) -> dict[str, float | None]:
        out: dict[str, float | None] = {f"sens@{r}": test.get(f"sensitivity@{r}") for r in RATES}
        out["AP50"] = test.get("AP50")
        return out

    print(
        json.dumps(
            {
                "baseline (stage 1)": row(summary["stage1"]["test"]),
                "final": row(summary["test"]),
                "slice_labels": summary["slice_labels"],
                "wall_seconds": round(time.perf_counter() - start, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Task B's accuracy against task A's for every arm and seed of runs/continual, and the validation sweep.

python docs/results/continual/plot.py runs/continual runs/continual-sweep docs/results/continual/tradeoff.png
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

run, sweep, out = (Path(a) for a in sys.argv[1:4])
experiment = json.loads((run / "pipeline.json").read_text())["experiment"]
fig, (test_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
for arm in experiment["arms"]:
    points = []
    for r in arm["runs"]:
        results = Path(r["eval_dir"]) / "results.json"
        if results.is_file():
            data = json.loads(results.read_text())
            points.append((100 * data["suites"]["addition"]["accuracy"], 100 * data["accuracy"]))
    if points:
        xs, ys = zip(*points, strict=True)
        test_ax.scatter(xs, ys, label=f"{arm['label']} ({len(points)} seeds)", alpha=0.8)
test_ax.set(xlabel="A: addition accuracy % (200 test)", ylabel="B: multiplication accuracy % (200 test)")
test_ax.set_title("test sets, each point a seed")
test_ax.legend(fontsize=8)


def accuracy(name: str, task: str) -> float:
    return 100 * json.loads((sweep / f"eval-{name}-{task}" / "results.json").read_text())["accuracy"]


for method, alphas in (("wise_ft", ["0", "0.25", "0.5", "0.75"]), ("lines", ["0", "0.25", "0.5", "0.75"])):
    xs = [accuracy(f"{method}-{a}", "addition") for a in alphas]
    ys = [accuracy(f"{method}-{a}", "multiplication") for a in alphas]
    val_ax.plot(xs, ys, marker="o", label=method)
    shift = (4, 4) if method == "wise_ft" else (4, -10)  # two labels can share a point
    for x, y, a in zip(xs, ys, alphas, strict=True):
        val_ax.annotate(
            f"{method[0].upper()} α={a}", (x, y), fontsize=7, xytext=shift, textcoords="offset points"
        )
for name, label, color in (("A", "A", "black"), ("S", "A→SFT-B", "gray")):
    x, y = accuracy(name, "addition"), accuracy(name, "multiplication")
    val_ax.scatter([x], [y], marker="s", color=color, label=label, zorder=3)
val_ax.set(
    xlabel="A: addition accuracy % (100 validation)", ylabel="B: multiplication accuracy % (100 validation)"
)
val_ax.set_title("alpha sweep on validation, seed 0")
val_ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out, dpi=110)
print(out)

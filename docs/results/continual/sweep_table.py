"""The alpha sweep on validation (sweep.sh's output): a table, and the alpha each method keeps (the highest mean of
the two validation accuracies; WiSE-FT at alpha 0 is A itself, listed as a check, not a candidate).

    python docs/results/continual/sweep_table.py runs/continual-sweep
"""

import json
import sys
from pathlib import Path


def accuracy(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["accuracy"]


root = Path(sys.argv[1])
rows = [("A (sft-a)", "A"), ("A→SFT-B", "S")]
rows += [(f"{m} α={a}", f"{m}-{a}") for m in ("wise_ft", "lines") for a in ("0", "0.25", "0.5", "0.75")]
print("| model | B: multiplication % | A: addition % | mean % |")
print("|---|---|---|---|")
best: dict[str, tuple[float, str]] = {}
for label, name in rows:
    b, a = (100 * accuracy(root / f"eval-{name}-{t}") for t in ("multiplication", "addition"))
    print(f"| {label} | {b:.1f} | {a:.1f} | {(a + b) / 2:.1f} |")
    method = name.rsplit("-", 1)[0]
    candidate = method == "lines" or (method == "wise_ft" and name != "wise_ft-0")  # WiSE-FT at 0 is A itself
    if candidate and (a + b) / 2 > best.get(method, (-1.0, ""))[0]:
        best[method] = ((a + b) / 2, name.rsplit("-", 1)[1])
for method, (score, alpha) in best.items():  # ties keep the smaller alpha (closer to A)
    print(f"{method}: alpha {alpha} (mean {score:.1f}%)")

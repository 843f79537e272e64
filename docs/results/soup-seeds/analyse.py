import json, sys
sys.path.insert(0, "/work/main/src")
import numpy as np
from r1lab.experiments.stats import mcnemar_exact
R = "/work/main/runs/"
def load(path):
    return {r["prompt"]: float(r["correct"]) for r in map(json.loads, open(path)) if r["kind"] == "greedy"}
arms = {
    "seed 0 (best on validation)": R + "quickstart-seeds/evals/rl-416150ad/samples.jsonl",
    "seed 1": R + "quickstart-seeds/evals/rl-e99c4df3/samples.jsonl",
    "seed 2": R + "quickstart-seeds/evals/rl-41f8c9a6/samples.jsonl",
    "uniform soup (3 seeds)": R + "eval-soup-uniform/samples.jsonl",
    "greedy soup (seeds 0 + 2)": R + "eval-soup-greedy/samples.jsonl",
}
data = {k: load(v) for k, v in arms.items()}
prompts = sorted(data["seed 0 (best on validation)"])
assert all(set(d) == set(prompts) for d in data.values()), "not the same problems"
base = np.array([data["seed 0 (best on validation)"][q] for q in prompts])
rows = []
for k, d in data.items():
    a = np.array([d[q] for q in prompts])
    only_arm, only_base, p = mcnemar_exact(a, base)
    rows.append(f"| {k} | {100*a.mean():.1f} | {100*(a.mean()-base.mean()):+.1f} | {only_arm} / {only_base} | {p:.3g} |")
print("| model | accuracy % (500 test problems) | Δ vs seed 0, pts | solves only this / only seed 0 | McNemar p (exact) |")
print("|---|---|---|---|---|")
print("\n".join(rows))

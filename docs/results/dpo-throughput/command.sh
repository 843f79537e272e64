# run from the repository root (2026-12-01, 2-core AMD EPYC with AVX2, fp32, one torch thread)
/work/shared/bin/heavy timeout 900 .venv/bin/python benchmarks/dpo_throughput.py --steps 6 --batch-size 4 --rounds 2 --precision fp32 --threads 1

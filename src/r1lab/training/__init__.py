"""Training infrastructure shared by the SFT and RL loops.

- `accel`: build the Accelerator from TrainConfig (precision check, "auto" -> bf16 where supported), seeding.
- `optim`: AdamW and the warmup + cosine/linear/constant schedules.
- `checkpoint`: atomic `checkpoints/step-N/` (HF model + optimizer/scheduler/RNG/data position), find, restore.
- `tracking`: metrics.jsonl, rich progress with ETA, TensorBoard; rank 0 only.
- `run_dir`: output folder checks and `state.json`.
"""

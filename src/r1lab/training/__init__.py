"""Training infrastructure shared by the SFT and RL loops (import from the submodules).

- `accel`: `build_accelerator(train_cfg, model_cfg)` -> (Accelerator, precision): precision check ("auto" ->
  bf16 where supported; fp16 on CPU is a UserError), gloo group on CPU under torchrun; `seed_everything`.
- `optim`: `build_optimizer` (AdamW, no decay on 1-D params, fused), `build_scheduler` (warmup +
  cosine/linear/constant down to min_lr_ratio), `lr_factor`.
- `data_order`: `EpochOrder` (seeded permutation per epoch, global batches; resumable from the step alone),
  `shard` (a rank's length-grouped micro-batches).
- `checkpoint`: `save_checkpoint` / `find_latest_checkpoint` / `load_checkpoint`: atomic
  `checkpoints/step-N/` (HF model + optimizer, scheduler, every rank's RNG, loop meta), `save_total_limit`.
- `tracking`: `Tracker`: metrics.jsonl, rich progress with ETA, TensorBoard; no-op off rank 0.
- `rundir`: `ensure_writable` (UserError for an unwritable output_dir), `write_state` / `read_state`.
- `interrupt`: `StopFlag`: SIGINT/SIGTERM stop the loop at a step boundary (raises `StopRequested`).
"""

"""Training infrastructure shared by the SFT and RL loops (import from the submodules).

- `accel`: `build_accelerator(train_cfg, model_cfg)` -> (Accelerator, precision): precision check ("auto" ->
  bf16 where supported; fp16 on CPU is a UserError), gloo group on CPU under torchrun; `seed_everything`.
- `optim`: `build_optimizer` (AdamW, no decay on 1-D params, fused), `build_scheduler` (warmup +
  cosine/linear/constant down to min_lr_ratio), `lr_factor`.
- `data_order`: `EpochOrder` (seeded permutation per epoch: SFT's global batches `batch(step)`, RL's prompt
  stream `at(position)`; resumable from the step or position alone), `shard` (a rank's micro-batches).
- `checkpoint`: `save_checkpoint` / `find_latest_checkpoint` / `load_checkpoint` / `save_final`: atomic
  `checkpoints/step-N/` (HF model + optimizer, scheduler, every rank's RNG, loop meta), `save_total_limit`;
  a full disk is one `DiskFull` error (partial folder removed, state.json failed, space needed).
- `resume`: `resume_point` (train.resume; a fresh run refuses a folder with checkpoints), `restore` (checks
  the checkpoint's meta against the run, then loads it): the one resume path of SFT and RL.
- `distributed`: `world`, `reduce_sum`, `all_reduce_sum`, `gather_objects`: the cross-rank helpers.
- `tracking`: `Tracker`: metrics.jsonl, rich progress with ETA, the `report_to` backends (`backends`:
  TensorBoard, W&B offline, MLflow SQLite, trackio); no-op off rank 0.
- `rundir`: `ensure_writable` (UserError for an unwritable output_dir; leaves nothing behind),
  `write_state` / `read_state`.
- `interrupt`: `StopFlag`: SIGINT/SIGTERM stop the loop at a step boundary (raises `StopRequested`).
"""

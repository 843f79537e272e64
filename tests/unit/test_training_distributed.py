"""training/distributed.py, the one cross-rank helper set: sums and gathers over a real 2-process gloo group."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from r1lab.training.distributed import all_reduce_sum, gather_objects, reduce_sum, world


def _worker(rank: int, init: str, results) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        mine = torch.tensor([1.0, 2.0]) * (rank + 1)
        summed = reduce_sum(mine)
        sums = all_reduce_sum({"a": torch.tensor(rank + 1.0), "b": torch.tensor(10.0 * rank)})
        results[rank] = (
            world(),
            summed.tolist(),
            mine.tolist(),  # the input is left as it was
            {k: v.item() for k, v in sums.items()},
            gather_objects({"rank": rank}),
        )
    finally:
        dist.destroy_process_group()


def test_sums_and_gathers_over_two_processes(tmp_path) -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(f"file://{tmp_path / 'store'}", results), nprocs=2, join=True)
        got = dict(results)
    for rank in (0, 1):
        where, summed, mine, sums, gathered = got[rank]
        assert where == (rank, 2)
        assert summed == [3.0, 6.0] and mine == [1.0 * (rank + 1), 2.0 * (rank + 1)]
        assert sums == {"a": 3.0, "b": 10.0}
        assert gathered == [{"rank": 0}, {"rank": 1}]


def test_one_process_is_a_no_op() -> None:
    t = torch.tensor([1.0])
    assert world() == (0, 1) and reduce_sum(t) is t and gather_objects(5) == [5]
    assert all_reduce_sum({"x": t}) == {"x": t}

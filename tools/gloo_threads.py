"""Which torch.distributed calls leave gloo's threads running after `destroy_process_group()`.

Launch it under torchrun; rank 0 prints, per case, how many gloo threads (`gloo_tcp_loop`, `pt_gloo_runloop`, named in
/proc/self/task) are alive after the case ran, its objects were deleted and collected, and the process group was
destroyed. A process group whose threads outlive it is still alive in C++ during interpreter shutdown, when a
teardown abort ("terminate called without an active exception") can strike.

    torchrun --nproc_per_node 2 tools/gloo_threads.py all_reduce
    torchrun --nproc_per_node 2 tools/gloo_threads.py ddp          # also: verify_params, broadcast, ddp_step
    torchrun --nproc_per_node 2 tools/gloo_threads.py ddp first    # torch.distributed.nn imported before the group

What holds the group after `ddp`: DDP's constructor imports torch._dynamo, which imports
torch.distributed.nn.functional, whose functions take `group=group.WORLD` as a default argument, evaluated at that
import: the live group. With `first` that module is imported while no group exists (the defaults are None), as
`ris_nb.distributed.init_distributed` does.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import weakref

import torch
import torch.distributed as dist
import torch.nn as nn


def gloo_threads() -> int:
    "Threads of this process whose name says gloo (its TCP loop and the process group's workers); Linux only."
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            n += "gloo" in open(f"/proc/self/task/{t}/comm").read()
        except OSError:
            pass
    return n


def run_case(case: str) -> str:
    "Run one case on a 4×4 linear layer; what is left of its Python objects afterwards."
    model = nn.Linear(4, 4)
    if case == "all_reduce":
        dist.all_reduce(torch.ones(3))
    elif case == "verify_params":
        dist._verify_params_across_processes(dist.group.WORLD, list(model.parameters()))
    elif case == "broadcast":
        dist._broadcast_coalesced(dist.group.WORLD, list(model.state_dict().values()), 2**20, 0)
    elif case in ("ddp", "ddp_step"):
        ddp = nn.parallel.DistributedDataParallel(model)
        if case == "ddp_step":
            ddp(torch.randn(2, 4)).sum().backward()
        alive = weakref.ref(ddp)
        ddp.reducer = ddp.logger = None
        del ddp, model
        gc.collect()
        return f"DDP object collected: {alive() is None}"
    else:
        raise SystemExit(
            f"gloo_threads.py: unknown case {case!r}; expected all_reduce, verify_params, broadcast, ddp, ddp_step"
        )
    return ""


def main() -> None:
    case = sys.argv[1] if len(sys.argv) > 1 else "ddp"
    if sys.argv[2:] == ["first"]:
        importlib.import_module("torch.distributed.nn")
    dist.init_process_group("gloo")
    before = gloo_threads()
    note = run_case(case)
    dist.barrier()
    dist.destroy_process_group()
    gc.collect()
    if int(os.environ.get("RANK", 0)) == 0:
        print(
            (
                f"{' '.join(sys.argv[1:]) or case}: {before} gloo threads with the group, {gloo_threads()} after "
                f"destroy_process_group() {note}"
            ).rstrip(),
            flush=True,
        )


if __name__ == "__main__":
    main()

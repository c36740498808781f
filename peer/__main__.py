"""`python -m peer`, and the `swarm-peer` command."""

import gc

# The imports below (aiohttp, click, asyncio, ours) set off about 70 collections of objects
# that live as long as the process: 15 ms of a 0.2 s start (20 alternating starts, median
# 0.197 s against 0.211 s). run_loop freezes them before the daemon starts.
gc.disable()
from peer.cli import main  # noqa: E402

gc.enable()


def run() -> None:
    main(prog_name="swarm-peer")


if __name__ == "__main__":
    run()

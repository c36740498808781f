"""`python -m tracker start ...` runs the same CLI as `swarm-tracker`."""

from tracker.cli import main

main(prog_name="swarm-tracker")

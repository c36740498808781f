from peer.cli import main

main(prog_name="swarm-peer")

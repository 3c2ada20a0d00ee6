"""The load generator, ledger check and rollout report behind scripts/loadgen.py."""

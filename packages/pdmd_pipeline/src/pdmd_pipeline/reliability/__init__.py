"""Fault injection for the reliability report (`pdmd reliability report` → reports/reliability.md).

Modules (one job each):
- `faults`   — real faults for a small CPU model: a prompt source that hands the trainer a corrupt (Inf/NaN)
               conditioning batch at chosen rollouts (model kind "pdmd_pipeline.reliability.faults:build_faulty_mlp"),
               and a checkpoint writer that stalls half-way through its temp file so a parent can SIGKILL it.
- `stall`    — `python -m pdmd_pipeline.reliability.stall --step K -- <pdmd args>`: the `pdmd` CLI with that
               stalling writer installed (the process a kill scenario SIGKILLs mid-write).
- `scenarios`— each injected fault as a function returning a `FaultOutcome` (what was injected, what happened,
               whether anything was lost, whether the behaviour is the required one).
- `report`   — run the scenarios and write the markdown report; `commands` — `pdmd reliability report`.
"""

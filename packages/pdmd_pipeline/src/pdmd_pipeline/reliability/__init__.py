"""Fault injection for the reliability report (`pdmd reliability report` → reports/reliability.md).

Modules (one job each):
- `faults`   — real faults for a small CPU model: a prompt source that hands the trainer a corrupt (Inf/NaN)
               conditioning batch at chosen rollouts (model kind "pdmd_pipeline.reliability.faults:build_faulty_mlp"),
               a checkpoint writer that stalls half-way through its temp file so a parent can SIGKILL it, and a
               SIGKILL at a chosen point of replacing a committed DCP checkpoint.
- `stall`    — `python -m pdmd_pipeline.reliability.stall --step K -- <pdmd args>`: the `pdmd` CLI with that
               stalling writer installed (the process a kill scenario SIGKILLs mid-write).
- `scenarios`— each injected fault as a function returning a `FaultOutcome` (what was injected, what happened,
               whether anything was lost, whether the behaviour is the required one).
- `edges`    — faults at a run's edges without SLURM: a re-saved checkpoint killed between its renames, stop
               signals during / after the last step, ranks that got different signals; `signal_job` is the job
               process they run (it sends itself real signals, or SIGKILLs itself mid-replace).
- `report`   — run the scenarios and write the markdown report; `commands` — `pdmd reliability report`.
"""

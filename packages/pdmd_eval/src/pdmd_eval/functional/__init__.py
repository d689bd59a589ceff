"""Pure metric math on arrays and tensors (no sample sets, no registry): what the registered metrics in
`pdmd_eval.metrics` compute, usable on their own — the split torchmetrics makes between functional and modular."""

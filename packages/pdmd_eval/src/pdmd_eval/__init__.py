"""pdmd_eval: diversity, fidelity, motion and adherence metrics for sample sets; statistics and tables.

Independent of pdmd_core. Module map (import the module you need; this package imports nothing heavy):

- ``samples``   SampleSet / SampleRecord, load_sample_set, save_sample_set, group_by_prompt, pair_indices
- ``evaluate``  evaluate(sample_set, reference, metrics, feature_net, real, models, ...) -> {name: MetricResult};
                compare(a, b) (paired test), save_results / load_results, default_metrics
- ``registry``  Metric, MetricResult, REGISTRY, get_metric, available_metrics (directions ↑/↓, units, needs)
- ``metrics/``  the built-in metrics (diversity, fidelity, motion, adherence, modes)
- ``context``   EvalContext: inputs, lazily loaded networks, feature caches
- ``functional/`` the pure math: ``fidelity`` (frechet_distance, knn_precision_recall), ``diversity`` (pairwise
          cosine, Vendi), ``motion`` (mean_flow_magnitude, dynamic degree, RAFT), ``adherence``, ``modes``
- ``stats``     bootstrap_ci, paired_comparison, ratio_of_means_ci
- nets:   ``features`` (.pt2 feature nets, batching, video pooling), ``backbones`` (CLIP, DINO, LPIPS,
          Inception), ``weights`` (PDMD_WEIGHTS_DIR, MissingWeightsError)
- output: ``tables`` (Markdown / CSV / LaTeX), ``figures`` (scatter, motion bars, grids, strips, GIFs), ``cli``
"""

__version__ = "0.1.0"

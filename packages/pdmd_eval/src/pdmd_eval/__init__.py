"""pdmd_eval: diversity, fidelity, motion and adherence metrics for sample sets; statistics and tables.

Independent of pdmd_core. Module map (import the module you need; this package imports nothing heavy):

- ``samples``   SampleSet / SampleRecord, load_sample_set, save_sample_set(..., storage="array"|"media"),
                group_by_prompt, pair_indices
- ``writer``    SampleSetWriter(folder, kind, benchmark, extras, fps=16, quality="lossless", resume=False):
                ``.append(record, sample)`` one sample at a time as PNG / MP4 + manifest line; ``.has(pid, seed)``
- ``reader``    open_sample_set(folder) -> SampleReader (lazy, both layouts): records, kind, fps, shape(i),
                read(i) (uint8 media / float32 array), read_float, iter_samples, fingerprint, to_sample_set
- ``media``     PNG / MP4 encode-decode (PyAV; lossless H.264 RGB by default), MediaError
- ``cache``     FeatureCache: per-sample results in atomic safetensors shards (resumable evaluation)
- ``evaluate``  evaluate(sample_set, reference, metrics, feature_net, real, models, ..., device="cpu"|"cuda"|"auto",
                cache=FOLDER, protocol=ProtocolOptions()) -> {name: MetricResult};
                compare(a, b) (paired test), save_results / load_results, default_metrics
- ``registry``  Metric, MetricResult, REGISTRY, get_metric, available_metrics (directions ↑/↓, units, needs),
                PRESETS / expand_metric_names (``table2``, ``table3``)
- ``metrics/``  the built-in metrics: CPU tier (diversity, fidelity, motion, adherence, modes) and ``protocol``,
                the paper's protocol, streamed and resumable:
                Table 2  optical_flow_raft ↑, dynamic_degree_vbench ↑, fid_teacher ↓, fvd_i3d_teacher ↓
                Table 3  dino_similarity ↓, lpips_distance ↑, clip_similarity ↓;  also temporal_flickering ↑
- ``context``   EvalContext (inputs, lazily loaded networks on ``device``, per_sample + cache), ProtocolOptions
- ``functional/`` the pure math: ``fidelity`` (frechet_distance, knn_precision_recall), ``diversity`` (pairwise
          cosine, Vendi), ``motion`` (mean_flow_magnitude, dynamic degree, RAFT), ``adherence``, ``modes``
- ``stats``     bootstrap_ci, paired_comparison, ratio_of_means_ci
- nets:   ``features`` (.pt2 feature nets, batching, video pooling), ``backbones`` (CLIP, DINO, LPIPS,
          Inception), ``standard`` (paper-comparable FID Inception from torch-fidelity, I3D from cd-fvd),
          ``weights`` (PDMD_WEIGHTS_DIR, MissingWeightsError)
- benchmarks: ``bench_flow`` (Farneback accuracy), ``bench_memory`` (peak RSS / time of media sets at scale)
- output: ``tables`` (Markdown / CSV / LaTeX), ``figures`` (scatter, motion bars, grids, strips, GIFs), ``cli``

Study pipeline, in short::

    with SampleSetWriter(folder, "video", benchmark, fps=16, resume=True) as w:   # sampler side
        if not w.has(pid, 42): w.append(SampleRecord(arm, pid, prompt, 42, steps, nfe, ckpt), clip)
    results = evaluate(open_sample_set(arm_folder), reference=open_sample_set(base40_folder),
                       metrics=["table2"], device="auto", cache=out / "cache")          # or `pdmd eval`
    save_results(results, out / "results.json", label=arm)                              # `pdmd tables` merges

The CPU tier switches to media files with one argument: ``save_sample_set(s, folder, storage="media")``
(pixels are then rounded to uint8; ``load_sample_set`` and ``pdmd eval`` read both layouts).
"""

__version__ = "0.1.0"

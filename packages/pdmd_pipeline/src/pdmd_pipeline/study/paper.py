"""The paper's published numbers (Fan et al., arXiv 2510.27684 v3; shared/spec/phased-dmd.md §3.8), shown as a
reference row beside each of ours. Keys: the study's arm names, `teacher` for the base model (40 steps, CFG 4).
Dynamic degree is a percentage in the paper; the tables show ours as a percentage too."""

from __future__ import annotations

# Table 3: diversity (T2I), 21 short prompts × 8 seeds: (DINOv3 cosine similarity ↓, LPIPS ↑) per model column.
TABLE3: dict[str, dict[str, tuple[float, float]]] = {
    "teacher": {"wan2.1": (0.708, 0.607), "wan2.2": (0.732, 0.531), "qwen": (0.907, 0.483)},
    "dmd_full": {"wan2.1": (0.825, 0.522)},
    "sgts": {"wan2.1": (0.826, 0.521), "wan2.2": (0.828, 0.447), "qwen": (0.941, 0.309)},
    "phased_k2_sgts": {"wan2.1": (0.782, 0.544), "wan2.2": (0.768, 0.481), "qwen": (0.958, 0.322)},
}
TABLE3_COLUMNS = {"wan2.1": "Wan2.1-T2V-14B", "wan2.2": "Wan2.2-T2V-A14B", "qwen": "Qwen-Image-20B"}

# Table 2: video, Wan2.2-A14B, 4 steps / 2 phases: (optical flow ↑, dynamic degree % ↑, FID ↓, FVD ↓).
TABLE2: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "teacher": {"t2v": (10.26, 79.55, 0.0, 0.0), "i2v": (9.32, 82.27, 0.0, 0.0)},
    "sgts": {"t2v": (3.23, 65.45, 55.70, 763.1), "i2v": (7.87, 80.00, 18.45, 370.0)},
    "phased_k2_sgts": {"t2v": (9.30, 82.27, 47.24, 700.9), "i2v": (9.84, 83.64, 17.47, 334.7)},
}

# Table 6 (App. C.1): number of phases, T2V: (OF ↑, DD % ↑, FID ↓, FVD ↓). Its Base and DMD2 rows are Table 2's T2V
# numbers: the same evaluation (Table 6's 2-phase row is Table 2's Phased DMD T2V row).
TABLE6: dict[str, tuple[float, float, float, float]] = {
    **{arm: TABLE2[arm]["t2v"] for arm in ("teacher", "sgts")},
    "phased_k2_sgts": (9.30, 82.27, 47.24, 700.9),
    "phased_k4": (9.43, 83.18, 45.40, 578.2),
}

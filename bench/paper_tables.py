"""The ShuffleNet V2 paper's published figures that the bench compares against.

Source: N. Ma, X. Zhang, H.-T. Zheng, J. Sun, "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design", ECCV 2018 — Table 1 (G1), Table 2 (G2), Table 3
(G3) and Table 4 (G4). Setup there: GTX 1080Ti with cuDNN 7.0
in benchmark mode (batches/s) and an ARM Snapdragon 810 with one thread (images/s).
Guideline networks are 10 stacked blocks on a 56x56 input with FLOPs held fixed per
width column x1/x2/x4.
"""

from __future__ import annotations

CITATION = "Ma et al., ShuffleNet V2, ECCV 2018"

# Table 1 — ratio: ((c1, c2) GPU, GPU x1/x2/x4, (c1, c2) ARM, ARM x1/x2/x4).
G1_ROWS = {
    "1:1": ((128, 128), (1480, 723, 232), (32, 32), (76.2, 21.7, 5.3)),
    "1:2": ((90, 180), (1296, 586, 206), (22, 44), (72.9, 20.5, 5.1)),
    "1:6": ((52, 312), (876, 489, 189), (13, 78), (69.1, 17.9, 4.6)),
    "1:12": ((36, 432), (748, 392, 163), (9, 108), (57.6, 15.1, 4.4)),
}
# Table 2 — groups: (c GPU, GPU x1/x2/x4, c CPU, CPU x1/x2/x4).
G2_ROWS = {
    1: (128, (2451, 1289, 437), 64, (40.0, 10.2, 2.3)),
    2: (180, (1725, 873, 341), 90, (35.0, 9.5, 2.2)),
    4: (256, (1026, 644, 338), 128, (32.9, 8.7, 2.1)),
    8: (360, (634, 445, 230), 180, (27.8, 7.5, 1.8)),
}
# Table 3 — structure: (GPU x1/x2/x4, CPU x1/x2/x4); c = 128 (GPU) or 64 (CPU) at x1.
G3_C = {"gpu": 128, "cpu": 64}
G3_ROWS = {
    "1-fragment": ((2446, 1274, 434), (40.2, 10.1, 2.3)),
    "2-fragment-series": ((1790, 909, 336), (38.6, 10.1, 2.2)),
    "4-fragment-series": ((752, 745, 349), (38.4, 10.1, 2.3)),
    "2-fragment-parallel": ((1537, 803, 320), (33.4, 9.1, 2.2)),
    "4-fragment-parallel": ((691, 572, 292), (35.0, 8.4, 2.1)),
}
# Table 4 — (relu, shortcut): (GPU x1/x2/x4, CPU x1/x2/x4); bottleneck c = 32 at x1.
G4_C = 32
G4_ROWS = {
    (True, True): ((2427, 2066, 1436), (56.7, 16.9, 5.0)),
    (True, False): ((2647, 2256, 1735), (61.9, 18.8, 5.2)),
    (False, True): ((2672, 2121, 1458), (57.3, 18.2, 5.1)),
    (False, False): ((2842, 2376, 1782), (66.3, 20.2, 5.4)),
}

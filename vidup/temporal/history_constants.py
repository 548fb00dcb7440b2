"""Constants of the rectified history blend, shared by its OpenCV path (`seeding`) and its torch twin
(`torch_ops`). A leaf, so the twins import it and not each other."""

FRACTION = 16  # 8-bit path: sub-code steps of the blended detail (16 x 255 x gain_max 2 fits in int16)
RANGE_FLOOR = 0.02  # of the peak code: the smallest local range the reactive term divides by (flat areas)
ENERGY_SIGMA_FACTOR = 3.0  # detail energy is compared over a Gaussian this many times the detail sigma

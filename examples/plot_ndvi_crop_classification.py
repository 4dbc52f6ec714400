"""
Crop types from cloudy satellite time series (NDVI)
===================================================

Vegetation follows a seasonal cycle -- green-up, peak, senescence, harvest --
whose timing and shape differ between crops. Satellites such as Sentinel-2
revisit a field every few days, so each pixel gives a time series of its
vegetation index, and classifying those series by crop type is a classic use
of recurrent networks.

The catch is clouds: a cloudy date tells nothing about the ground, so after
cloud masking every pixel keeps a *different* set of dates, and its series
has its own length. An :class:`~sklstm.LSTMClassifier` reads such series as
they are. A :class:`~sklearn.ensemble.RandomForestClassifier`, the usual
baseline, needs one fixed-length vector per pixel, so for it the series are
first interpolated onto a common grid of dates.
"""

# %%
# Simulating red and near-infrared reflectance over a season
# ----------------------------------------------------------
# Green leaves absorb red light (for photosynthesis) and scatter near-infrared
# (NIR) light strongly; bare soil reflects both moderately. The Normalized
# Difference Vegetation Index is
#
# .. math:: \mathrm{NDVI} = \frac{\mathrm{NIR} - \mathrm{Red}}
#                                {\mathrm{NIR} + \mathrm{Red}},
#
# about 0.1-0.25 over bare soil and 0.8-0.9 over a dense canopy.
#
# Each pixel's green canopy cover over the day of the year ``t`` follows a
# double logistic curve, a rise at the start of season ``sos`` and a fall at
# its end ``eos`` (the usual model of crop phenology):
#
# .. math:: v(t) = A \left(\frac{1}{1 + e^{-(t - \mathrm{sos})/r}}
#                    - \frac{1}{1 + e^{-(t - \mathrm{eos})/s}}\right)
#
# and each band mixes a soil and a canopy reflectance in proportion to
# ``v``. The crops differ in timing, speed and amplitude: winter wheat is
# already growing in spring and is harvested in July; maize and soybean are
# sown in spring, with soybean later and shorter; grassland greens up early
# and stays green. Every pixel draws its own dates, amplitude, soil
# brightness and sensor noise.
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from sklstm import LSTMClassifier
from sklstm.preprocessing import SequenceScaler

warnings.filterwarnings("ignore", category=ConvergenceWarning)  # few epochs

rng = np.random.RandomState(0)
DATES = np.arange(80, 311, 5)  # day of year of each overpass: every 5 days

# crop: (start of season, rise rate, end of season, fall rate, amplitude)
PHENOLOGY = {
    "winter wheat": (95, 8, 185, 6, 0.90),
    "maize": (160, 7, 255, 7, 0.95),
    "soybean": (172, 6, 245, 5, 0.85),
    "grassland": (105, 10, 300, 15, 0.70),
}
CROPS = np.array(list(PHENOLOGY))


def canopy_cover(day, sos, rise, eos, fall, amplitude):
    """Double logistic green-up and senescence, in [0, amplitude]."""
    return amplitude * (1 / (1 + np.exp(-(day - sos) / rise))
                        - 1 / (1 + np.exp(-(day - eos) / fall)))


def simulate_pixel(crop):
    """True NDVI on every date, and the observed (cloud-free) red and NIR."""
    sos, rise, eos, fall, amplitude = PHENOLOGY[crop]
    cover = canopy_cover(
        DATES, sos + rng.normal(scale=8), rise * rng.uniform(0.8, 1.2),
        eos + rng.normal(scale=8), fall * rng.uniform(0.8, 1.2),
        amplitude * rng.uniform(0.85, 1.05),
    ).clip(0, 1)
    soil = rng.uniform(0.8, 1.2)  # brighter or darker soil
    red = (0.18 * soil) * (1 - cover) + 0.04 * cover
    nir = (0.26 * soil) * (1 - cover) + 0.45 * cover
    red = red + rng.normal(scale=0.008, size=DATES.size)  # sensor noise
    nir = nir + rng.normal(scale=0.015, size=DATES.size)
    return red, nir


# %%
# Clouds remove dates
# -------------------
# About 40% of the overpasses are cloudy, and clouds come in spells of bad
# weather rather than independently (a two-state Markov chain). Cloudy dates
# are simply dropped: **each pixel's sequence keeps its clear dates, in
# order**. Because the gaps differ from pixel to pixel, every timestep carries
# two features: the NDVI and the day of the year it was observed, so the
# network knows *when* each value happened.
def clear_dates(n_dates):
    clear = np.empty(n_dates, dtype=bool)
    clear[0] = rng.rand() < 0.6
    for i in range(1, n_dates):
        stay = 0.75  # weather tends to persist from one overpass to the next
        clear[i] = clear[i - 1] if rng.rand() < stay else rng.rand() < 0.6
    clear[rng.randint(n_dates)] = True  # at least one clear date
    return clear


n_pixels = 800
labels = rng.choice(CROPS, size=n_pixels)
sequences, ndvi_full, clear_masks = [], [], []
for crop in labels:
    red, nir = simulate_pixel(crop)
    ndvi = (nir - red) / (nir + red)
    clear = clear_dates(DATES.size)
    # One sequence per pixel: (n_clear_dates, 2) = [NDVI, day of year].
    sequences.append(np.column_stack([ndvi[clear], DATES[clear]]))
    ndvi_full.append(ndvi)
    clear_masks.append(clear)
lengths = np.array([len(sequence) for sequence in sequences])
print(f"{n_pixels} pixels, {DATES.size} overpasses each; after cloud masking "
      f"{lengths.min()} to {lengths.max()} clear dates per pixel "
      f"(median {int(np.median(lengths))})")

# %%
# The LSTM on the variable-length series
# --------------------------------------
# The list of ``(n_clear_dates, 2)`` arrays goes straight into a pipeline.
# :class:`~sklstm.preprocessing.SequenceScaler` puts NDVI and day of year on
# the same scale.
index_train, index_test = train_test_split(
    np.arange(n_pixels), test_size=0.3, stratify=labels, random_state=0
)
train_sequences = [sequences[i] for i in index_train]
test_sequences = [sequences[i] for i in index_test]
y_train, y_test = labels[index_train], labels[index_test]

lstm = make_pipeline(
    SequenceScaler(),
    LSTMClassifier(hidden_layer_sizes=(32,), learning_rate_init=0.01,
                   batch_size=32, max_iter=40, random_state=0),
)
lstm.fit(train_sequences, y_train)
lstm_accuracy = accuracy_score(y_test, lstm.predict(test_sequences))

# %%
# The random forest on interpolated series
# ----------------------------------------
# A random forest compares feature ``j`` of one pixel with feature ``j`` of
# another, so feature ``j`` must mean the same date for every pixel. Padding
# the clear observations would not do that -- the 10th clear date is in May
# for one pixel and in August for another. So each pixel's clear NDVI values
# are linearly interpolated onto a fixed grid of dates, every 10 days (values
# before the first or after the last clear date are held constant), the
# classic gap-filling step of crop-mapping pipelines. That gives every pixel
# the same 24 features.
GRID = np.arange(80, 311, 10)


def interpolate(sequence):
    ndvi, day = sequence[:, 0], sequence[:, 1]
    return np.interp(GRID, day, ndvi)


X_grid = np.stack([interpolate(sequence) for sequence in sequences])
forest = RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=2)
forest.fit(X_grid[index_train], y_train)
forest_accuracy = accuracy_score(y_test, forest.predict(X_grid[index_test]))

print(f"test accuracy, LSTMClassifier on the clear dates:       "
      f"{lstm_accuracy:.3f}")
print(f"test accuracy, RandomForest on NDVI interpolated to {GRID.size} "
      f"dates: {forest_accuracy:.3f}")

# %%
# Both models make most of their mistakes between maize and soybean, whose
# seasons overlap once every field's sowing date and growth speed vary. The
# forest needed a gap-filling step designed by hand; the LSTM reads the clear
# observations with their dates as they come, and would take more bands per
# date (red, NIR, other indices) as more features without any change.

# %%
# What the data look like
# -----------------------
# Left: one pixel of each crop, its true NDVI on every date (line) and what
# the satellite saw through the clouds (dots). Right: the median NDVI profile
# of each crop over all pixels, from the interpolated series.
colors = dict(zip(CROPS, ["tab:orange", "tab:green", "tab:olive", "tab:blue"]))
fig, (ax_pixels, ax_profiles) = plt.subplots(1, 2, figsize=(11, 4),
                                              sharey=True)
for crop in CROPS:
    pixel = int(np.flatnonzero(labels == crop)[0])
    ax_pixels.plot(DATES, ndvi_full[pixel], color=colors[crop], lw=1,
                   alpha=0.6)
    ax_pixels.plot(sequences[pixel][:, 1], sequences[pixel][:, 0], "o",
                   color=colors[crop], ms=4, label=f"{crop} ({lengths[pixel]} "
                   "clear dates)")
    ax_profiles.plot(GRID, np.median(X_grid[labels == crop], axis=0),
                     color=colors[crop], lw=2, label=crop)
ax_pixels.set_title("One pixel per crop: true NDVI and clear observations")
ax_pixels.set_xlabel("day of year")
ax_pixels.set_ylabel("NDVI")
ax_pixels.legend(fontsize="x-small", loc="upper right", ncol=2)
ax_pixels.set_ylim(0, 1.1)
ax_profiles.set_title("Median NDVI profile per crop")
ax_profiles.set_xlabel("day of year")
ax_profiles.legend(fontsize="x-small", loc="upper right", ncol=2)
fig.tight_layout()
plt.show()

"""The order of the examples in the gallery: from first steps to case studies."""

ORDER = [
    "quickstart.py",
    "plot_forecasting.py",
    "plot_sequence_classification.py",
    "plot_variable_length.py",
    "plot_early_stopping.py",
    "plot_grid_search.py",
    "plot_persistence.py",
    "dask_grid_search.py",
    "plot_ndvi_crop_classification.py",
]


class ExampleOrder:
    """sphinx-gallery sort key: the ORDER above, then any other file by name."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        if filename in ORDER:
            return (ORDER.index(filename), filename)
        return (len(ORDER), filename)

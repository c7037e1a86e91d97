"""Codes from a Dask cluster into one cache, then a classifier on one machine.

The texture patches of ``similar_data_penultimate.py`` are written as PNG
files (as a user's images would lie on shared storage). A LocalCluster of
two worker processes stands in for a real cluster: ``skcnn.dask.extract``
computes the packaged EfficientNet-Lite0's penultimate codes there, each
worker writing its own shard, merged into ``codes.h5`` at the end. Then,
without Dask, an ordinary scikit-learn pipeline whose transformer reads the
same cache fits and scores a classifier: every image is a hit.

About 20 seconds on a quiet 2-core CPU (starting the workers is most of it):

    python examples/dask_local_cluster.py
"""

import tempfile
import time
from pathlib import Path

import numpy as np
from dask.distributed import Client, LocalCluster
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skcnn.dask
from skcnn import CNNFeatureTransformer
from skcnn.datasets import load_texture_patches


def write_pngs(folder: Path, images: np.ndarray, prefix: str) -> list[str]:
    paths = [folder / f"{prefix}{i:04d}.png" for i in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        Image.fromarray(image).save(path)
    return [str(p) for p in paths]


if __name__ == "__main__":  # worker processes import this file: start the cluster only here
    X_train, y_train = load_texture_patches("train", n_per_class=40, patch_size=32)
    X_test, y_test = load_texture_patches("test", n_per_class=40, patch_size=32)
    params = dict(backbone="efficientnet_lite0", layer="penultimate", input_size=96)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train, test = write_pngs(folder, X_train, "train"), write_pngs(folder, X_test, "test")
        cache = folder / "codes.h5"

        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            start = time.perf_counter()
            codes, info = skcnn.dask.extract(
                train + test, client=client, cache=cache, paths_per_task=40, return_info=True, **params
            )
            print(
                f"{codes.shape[0]} images -> codes {codes.shape} on {len(client.scheduler_info()['workers'])} "
                f"workers in {info.n_tasks} tasks, {time.perf_counter() - start:.1f} s: {info.cache_info}"
            )
            print(f"files beside the cache after the merge: {sorted(p.name for p in folder.glob('codes.h5*'))}")

        # One machine, no Dask: the pipeline's transformer reads the merged cache.
        model = make_pipeline(
            CNNFeatureTransformer(**params, cache=str(cache)),
            StandardScaler(),
            LogisticRegression(C=0.1, max_iter=2000),
        )
        start = time.perf_counter()
        model.fit(train, y_train)
        accuracy = model.score(test, y_test)
        print(
            f"held-out accuracy {accuracy:.3f} in {time.perf_counter() - start:.1f} s; "
            f"last transform: {model[0].cache_info_} (no network run)"
        )

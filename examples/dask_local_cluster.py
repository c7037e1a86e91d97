"""
Codes from a Dask cluster into one cache, then a classifier on one machine
==========================================================================

For more images than one machine computes in time, ``skcnn.dask.extract``
runs ``CNNFeatureTransformer``'s network on the workers of a Dask cluster:
each worker process loads the network once, writes its codes to its own
shard of an HDF5 code cache, and the shards are merged into one file at the
end. Any scikit-learn pipeline whose transformer has the same parameters and
reads that cache then fits without running the network at all.

Here a ``LocalCluster`` of two worker processes stands in for a real
cluster, and texture patches from scikit-image's CC0 photos, written as PNG
files, stand in for a user's images on shared storage.

The code below the ``if __name__ == "__main__":`` guard starts the cluster.
The workers are processes started with ``spawn``, which import the main
module when it is a file: without the guard, every worker would start a
cluster of its own. sphinx-gallery runs this example with ``__name__`` set
to ``"__main__"``, as ``python examples/dask_local_cluster.py`` does.
"""

import shutil
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


# %%
# Codes on the cluster
# --------------------
# ``preload`` imports skcnn (and torch) as each worker starts, so that the
# time of the extraction below is the network's, not the imports'.
if __name__ == "__main__":
    X_train, y_train = load_texture_patches("train", n_per_class=40, patch_size=32)
    X_test, y_test = load_texture_patches("test", n_per_class=40, patch_size=32)
    params = dict(backbone="efficientnet_lite0", layer="penultimate", input_size=96)
    folder = Path(tempfile.mkdtemp())
    train, test = write_pngs(folder, X_train, "train"), write_pngs(folder, X_test, "test")
    cache = folder / "codes.h5"

    start = time.perf_counter()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, preload=["skcnn.dask"]) as cluster,
        Client(cluster) as client,
    ):
        print(f"{len(client.scheduler_info()['workers'])} workers up in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        codes, info = skcnn.dask.extract(
            train + test, client=client, cache=cache, paths_per_task=40, return_info=True, **params
        )
        print(
            f"{codes.shape[0]} images -> codes {codes.shape} in {info.n_tasks} tasks, "
            f"{time.perf_counter() - start:.1f} s: {info.cache_info}"
        )
    print(f"files beside the cache after the merge: {sorted(p.name for p in folder.glob('codes.h5*'))}")

# %%
# A classifier on one machine
# ---------------------------
# No Dask: the pipeline's transformer has the parameters the workers used, so
# every image is a cache hit.
if __name__ == "__main__":
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
    shutil.rmtree(folder)

"""Choose the layer and pooling of the codes by cross-validation.

Texture patches from scikit-image's CC0 photos (brick, grass, gravel), the
packaged ImageNet-trained EfficientNet-Lite0, and a linear SVM. The network
runs on the CPU; this takes about a minute on 2 cores.

    python examples/choose_layer_by_grid_search.py
"""

from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from skcnn import CNNFeatureTransformer
from skcnn.datasets import load_texture_patches

X_train, y_train = load_texture_patches("train", n_per_class=30, patch_size=48)
X_test, y_test = load_texture_patches("test", n_per_class=30, patch_size=48)

pipe = make_pipeline(
    CNNFeatureTransformer(backbone="efficientnet_lite0", input_size=96),
    StandardScaler(),
    LinearSVC(C=0.01),
)
grid = GridSearchCV(
    pipe,
    {
        "cnnfeaturetransformer__layer": ["blocks.1", "blocks.3", "blocks.5", "penultimate"],
        "cnnfeaturetransformer__pooling": ["avg", "max"],
    },
    cv=3,
)
grid.fit(X_train, y_train)

print(f"{'layer':<12} {'pooling':<8} cross-validated accuracy")
for params, mean, std in zip(
    grid.cv_results_["params"], grid.cv_results_["mean_test_score"], grid.cv_results_["std_test_score"], strict=True
):
    print(
        f"{params['cnnfeaturetransformer__layer']:<12} {params['cnnfeaturetransformer__pooling']:<8} "
        f"{mean:.3f} +/- {std:.3f}"
    )
print(f"\nbest: {grid.best_params_}")
print(f"held-out accuracy of the best pipeline: {grid.score(X_test, y_test):.3f}")

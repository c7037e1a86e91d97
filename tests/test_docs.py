"""The API reference lists every public name, with its parameters, and builds without a warning."""

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

import skcnn

#: Sphinx builds and subprocesses: `make test-slow`.
pytestmark = pytest.mark.slow

DOCS = Path(__file__).parents[1] / "docs"

# The real configuration, without the gallery (its examples take minutes; CI
# builds the whole site with `make docs`).
CONF = f"""
__file__ = {str(DOCS / "conf.py")!r}
exec(compile(open(__file__).read(), __file__, "exec"))
extensions.remove("sphinx_gallery.gen_gallery")
templates_path = [{str(DOCS / "_templates")!r}]
root_doc = "index"
"""


@pytest.fixture(scope="module")
def api_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    source, templates = root / "source", root / "templates" / "autosummary"
    source.mkdir()
    templates.mkdir(parents=True)
    for template in (DOCS / "_templates" / "autosummary").iterdir():
        # The mini-galleries of examples are sphinx-gallery's directive.
        text = re.sub(r"\n\.\. minigallery::.*", "\n", template.read_text(), flags=re.S)
        (templates / template.name).write_text(text)
    (source / "conf.py").write_text(CONF.replace(repr(str(DOCS / "_templates")), repr(str(templates.parent))))
    (source / "index.rst").write_text("skcnn\n=====\n\n.. toctree::\n\n   api\n")
    out = root / "html"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(source), str(out)],
        capture_output=True,
        text=True,
    )
    return build, out


def test_the_api_reference_builds_without_a_warning(api_site):
    build, _ = api_site
    assert build.returncode == 0, build.stderr[-4000:]


def test_every_public_name_of_skcnn_has_a_page_linked_from_the_reference(api_site):
    _, out = api_site
    reference = html.unescape((out / "api.html").read_text())
    names = [name for name in skcnn.__all__ if not name.startswith("__")]
    missing = [name for name in names if f'href="generated/skcnn.{name}.html' not in reference]
    assert not missing, missing
    for name in names:
        page = html.unescape((out / "generated" / f"skcnn.{name}.html").read_text())
        assert f"skcnn.{name}" in page


@pytest.mark.parametrize("name", ["CNNFeatureTransformer", "CNNClassifier", "LayerSearchCV", "advise_layer"])
def test_estimator_and_function_pages_show_parameters_attributes_and_examples(api_site, name):
    _, out = api_site
    page = re.sub(r"<[^>]+>", "", html.unescape((out / "generated" / f"skcnn.{name}.html").read_text()))
    assert "Parameters" in page and "Examples" in page
    if name[0].isupper():
        assert "Attributes" in page


def first_python_block(path: Path) -> str:
    return re.search(r"```python\n(.*?)```", path.read_text(), re.S).group(1)


def test_the_first_snippet_runs_offline_as_written(tmp_path):
    readme = first_python_block(DOCS.parent / "README.md")
    for page in (DOCS / "index.md", DOCS / "user_guide" / "getting_started.md"):
        assert first_python_block(page) == readme, f"{page.name}'s first snippet differs from the README's"
    # No network is needed (weights from pip), and a solver that does not converge is an error.
    run = subprocess.run(
        [sys.executable, "-W", "error::sklearn.exceptions.ConvergenceWarning", "-c", readme],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "", "HOME": str(tmp_path), "TORCH_HOME": str(tmp_path / "torch"), "NO_PROXY": "*"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "Recommended: layer=" in run.stdout and float(run.stdout.split()[-1]) > 0.9
    assert (tmp_path / "codes.h5").stat().st_size > 0

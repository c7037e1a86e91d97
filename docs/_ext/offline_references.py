"""Build the docs offline: intersphinx only for inventories that can be fetched.

On a machine without internet, intersphinx would warn once per unreachable
inventory, and every reference into numpy, scikit-learn or torch would be a
broken reference; with ``-W`` either fails the build. This extension probes
each inventory before intersphinx loads it and leaves out the ones that do
not answer; a reference into a project whose inventory is not loaded (or
that has none configured, such as timm or h5py) is shown as plain code.
References into skcnn itself, and into loaded inventories, stay strict.
"""

import builtins
import importlib.util
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sphinx.util import logging

logger = logging.getLogger(__name__)

# The top-level modules each inventory documents.
PROJECT_MODULES = {
    "python": set(sys.stdlib_module_names) | set(dir(builtins)),
    "numpy": {"numpy"},
    "sklearn": {"sklearn"},
    "torch": {"torch"},
    "torchvision": {"torchvision"},
}


def reachable(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/objects.inv", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def drop_unreachable_inventories(app, config) -> None:
    mapping = dict(config.intersphinx_mapping)
    timeout = config.intersphinx_timeout or 5
    with ThreadPoolExecutor(max(len(mapping), 1)) as pool:
        answers = dict(
            zip(mapping, pool.map(lambda entry: reachable(entry[0], timeout), mapping.values()), strict=True)
        )
    offline = sorted(name for name, ok in answers.items() if not ok)
    if offline:
        logger.info("intersphinx: no inventory reachable for %s; references into them are shown as code", offline)
    config.intersphinx_mapping = {name: entry for name, entry in mapping.items() if answers[name]}
    app.env_linked_modules = set().union(*(PROJECT_MODULES.get(name, set()) for name in config.intersphinx_mapping))


def unlinked_external_as_code(app, env, node, contnode):
    """A reference outside skcnn with no loaded inventory: the code, unlinked."""
    if node.get("refdomain") != "py":
        return None
    root = node.get("reftarget", "").lstrip("~.").split(".")[0]
    if root == "skcnn" or root in app.env_linked_modules or not is_module(root):
        return None  # skcnn's own, linked, or a name that is no module: a broken reference stays one
    return contnode


def is_module(name: str) -> bool:
    if name in dir(builtins) or name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def setup(app):
    # Before intersphinx validates the mapping (800) and loads it (builder-inited).
    app.connect("config-inited", drop_unreachable_inventories, priority=100)
    # After intersphinx has tried the loaded inventories (500).
    app.connect("missing-reference", unlinked_external_as_code, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

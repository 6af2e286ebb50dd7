"""A distribution as pip leaves it (a module and its .dist-info with entry points), on a path of its own.

The tests of third-party backends and plugins install one of these on `sys.path`, so that
`importlib.metadata` finds its entry points exactly as it finds those of a pip-installed package.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]],
                       modules: dict[str, str]) -> Path:
    """Write distribution `name` 1.0 into `site`: its modules (module name: source) and its
    entry points (group: {name: "module:attribute"}). Returns `site`, for `sys.path`."""
    dist_info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
        for group, entries in entry_points.items()))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return site

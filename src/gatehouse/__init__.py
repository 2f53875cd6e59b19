"""gatehouse: an identity-aware access proxy that speaks Pomerium's configuration and assertions."""

__version__ = "0.1.0"


def build_kind() -> str:
    """``"compiled"`` when the request path was compiled by mypyc at install, else
    ``"pure Python"`` (``GATEHOUSE_PURE_PYTHON=1`` or no C compiler; see setup.py)."""
    from .http import server

    return "compiled" if not server.__file__.endswith(".py") else "pure Python"

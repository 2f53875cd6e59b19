"""Configuration: the Pomerium-compatible options model, loading, validation and reload."""

from .loader import LoadedConfig, load_file, load_text
from .options import Options
from .routes import RouteOptions, UpstreamURL

__all__ = ["LoadedConfig", "Options", "RouteOptions", "UpstreamURL", "load_file", "load_text"]

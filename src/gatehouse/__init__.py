"""gatehouse: an identity-aware access proxy that speaks Pomerium's configuration and assertions."""

__version__ = "0.1.0"

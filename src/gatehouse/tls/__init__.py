"""TLS: server certificates (config, autocert, generated fallback) by SNI, listener
hardening, the HTTP redirect listener, and upstream TLS settings."""

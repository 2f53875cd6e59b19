"""The client certificate chain of a TLS connection, as the client sent it.

Read once per connection by the HTTP/1.1 and HTTP/2 protocols and handed to each
exchange; unverified on purpose: the handshake takes any certificate unless
``reject_connection`` is set (see ``tls/client_auth``), and each request is judged
against its route's client CA (``tls/client_trust``).
"""

from __future__ import annotations

import ssl

#: ``_ssl.ENCODING_DER``: the value ``Certificate.public_bytes`` takes for DER.
_ENCODING_DER = 2


def peer_chain(ssl_object: object) -> tuple[bytes, ...]:
    """The certificates the client sent (leaf first, DER); empty without one.

    Read through ``_sslobj.get_unverified_chain`` (public as ``get_unverified_chain``
    only from Python 3.13).
    """
    inner = getattr(ssl_object, "_sslobj", None)
    if inner is None or not isinstance(ssl_object, ssl.SSLObject):
        return ()
    if ssl_object.getpeercert(binary_form=True) is None:
        return ()
    chain = inner.get_unverified_chain() or ()
    return tuple(c.public_bytes(_ENCODING_DER) for c in chain if c is not None)

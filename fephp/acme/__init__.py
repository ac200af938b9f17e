"""ACME (RFC 8555) for fephp, from the subscriber's side: the client, its state folder, the renewal decisions.

:class:`AcmeService` keeps certificates valid for name sets; nothing in the
server runs it yet (issue 20): the parent process will, the plain listener
will answer HTTP-01 from a :class:`ChallengeTokens` and the ``ssl:``
listener TLS-ALPN-01 from a :class:`TlsAlpnResponder`, workers will load
from :class:`Storage`.
"""

from .ari import RenewalWindow, cert_id
from .client import AcmeClient, ExternalAccount, Issued
from .errors import (
    AcmeError,
    CAProblem,
    ChallengeFailed,
    OrderFailed,
    PollTimeout,
    Problem,
    ProtocolViolation,
    StorageError,
)
from .jws import AccountKey
from .keys import KeyType
from .manager import load_or_obtain
from .renewal import is_renewal_due, renewal_due_at, retry_delays
from .responder import CHALLENGE_PATH, ChallengeSolver, ChallengeTokens, Http01, Http01Responder
from .service import AcmeService, CertificateState
from .storage import Storage, Stored
from .tlsalpn import ACME_TLS_1, TlsAlpnResponder, validation_certificate

__all__ = [
    "ACME_TLS_1",
    "CHALLENGE_PATH",
    "AccountKey",
    "AcmeClient",
    "AcmeError",
    "AcmeService",
    "CAProblem",
    "CertificateState",
    "ChallengeFailed",
    "ChallengeSolver",
    "ChallengeTokens",
    "ExternalAccount",
    "Http01",
    "Http01Responder",
    "Issued",
    "KeyType",
    "OrderFailed",
    "PollTimeout",
    "Problem",
    "ProtocolViolation",
    "RenewalWindow",
    "Storage",
    "StorageError",
    "Stored",
    "TlsAlpnResponder",
    "cert_id",
    "is_renewal_due",
    "load_or_obtain",
    "renewal_due_at",
    "retry_delays",
    "validation_certificate",
]

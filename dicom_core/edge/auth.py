"""Who may call the API: the authentication mode, bearer-token validation and the reader/writer roles.

Modes (`DICOMWEB_AUTH_MODE`):
- `none`: the API is open (local default; a WARNING says so at start-up);
- `function`: the Functions host checks function keys (the FunctionApp's auth level becomes FUNCTION);
  the app itself checks nothing, and the local host, like Core Tools, does not check keys;
- `entra`: the app validates Microsoft Entra ID bearer tokens: RS256 signature by a key of the authority's
  JWKS, issuer, audience, expiry and not-before (with clock skew), then the role the method needs in the
  `roles` claim. Reading (GET, HEAD) needs the reader role, writing (POST, PUT, DELETE, anything else) the
  writer role; the writer role does not imply the reader role, so an ingestion client cannot read patient data.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from dicom_core.model.errors import ForbiddenError, UnauthorizedError
from dicom_core.settings import Settings

if TYPE_CHECKING:
    from dicom_core.edge.jwks import JwksCache

LOGGER = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})
SIGNING_ALGORITHM = "RS256"  # Entra ID signs with RS256 only; none, HS256 and the rest are refused before any key
ENTRA_LOGIN = "https://login.microsoftonline.com"
REALM = "dicomweb"
REQUIRED_CLAIMS = ("exp", "iss", "aud")


class AuthMode(enum.StrEnum):
    """How callers are authenticated."""

    NONE = "none"
    FUNCTION = "function"
    ENTRA = "entra"


@dataclass(frozen=True)
class Caller:
    """Who made a request, as far as the app knows it."""

    subject: str
    roles: frozenset[str]


ANONYMOUS = Caller(subject="", roles=frozenset())


class Authenticator(Protocol):
    """Checks one request's credentials and returns its caller, or raises UnauthorizedError / ForbiddenError."""

    async def authorize(self, method: str, authorization: str | None) -> Caller:
        """Return the caller of a request with this method and Authorization header."""
        ...


class OpenAccess:
    """Mode none, and mode function (where the Functions host checked the key before the app was called)."""

    async def authorize(self, method: str, authorization: str | None) -> Caller:
        """Let every request through."""
        return ANONYMOUS


@dataclass(frozen=True)
class TokenRules:
    """What an Entra ID token must satisfy besides its signature and its issuer."""

    audiences: tuple[str, ...]
    reader_role: str
    writer_role: str
    clock_skew_seconds: int
    # Issuers accepted besides the one the discovery document names (e.g. Entra's v1.0 issuer of the tenant).
    extra_issuers: frozenset[str] = frozenset()


class EntraAuthenticator:
    """Mode entra: bearer tokens validated against the authority's signing keys, then the method's role."""

    def __init__(self, keys: JwksCache, rules: TokenRules) -> None:
        self._keys = keys
        self._rules = rules

    async def authorize(self, method: str, authorization: str | None) -> Caller:
        """Validate the bearer token and check that it has the role ``method`` needs."""
        claims = await self.validate(bearer_token(authorization))
        caller = Caller(subject=str(claims.get("oid") or claims.get("sub") or ""), roles=_roles(claims))
        needed = required_role(method, self._rules)
        if needed not in caller.roles:
            raise ForbiddenError(f"The token lacks the role {needed}, which {method} requests need.",
                                 headers={"WWW-Authenticate": _challenge("insufficient_scope")})
        return caller

    async def validate(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature, issuer, audience and validity period are right."""
        import jwt  # PyJWT and cryptography load in mode entra only (start-up time)

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid_token("The bearer token is not a well-formed JWT.") from exc
        if header.get("alg") != SIGNING_ALGORITHM:
            raise _invalid_token(f"The token must be signed with {SIGNING_ALGORITHM}.")
        key_id = header.get("kid")
        key = await self._keys.key(key_id) if isinstance(key_id, str) and key_id else None
        if key is None:
            raise _invalid_token("The token is not signed by a key of the configured authority.")
        issuers = {await self._keys.issuer(), *self._rules.extra_issuers}
        try:
            return jwt.decode(token, key=key, algorithms=[SIGNING_ALGORITHM], audience=list(self._rules.audiences),
                              issuer=issuers, leeway=self._rules.clock_skew_seconds,
                              options={"require": list(REQUIRED_CLAIMS)})
        except jwt.ExpiredSignatureError as exc:
            raise _invalid_token("The token has expired.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise _invalid_token("The token is not valid yet.") from exc
        except jwt.InvalidAudienceError as exc:
            raise _invalid_token("The token is for another audience.") from exc
        except jwt.InvalidIssuerError as exc:
            raise _invalid_token("The token is from another issuer.") from exc
        except jwt.InvalidSignatureError as exc:
            raise _invalid_token("The token's signature is wrong.") from exc
        except jwt.PyJWTError as exc:
            raise _invalid_token(f"The token is invalid: {exc}") from exc


def mode_of(settings: Settings) -> AuthMode:
    """The authentication mode of the settings; an unknown one is an error (never silently open)."""
    try:
        return AuthMode(settings.auth_mode)
    except ValueError:
        choices = ", ".join(mode.value for mode in AuthMode)
        raise ValueError(f"Setting DICOMWEB_AUTH_MODE must be one of {choices}, not {settings.auth_mode!r}") from None


def authenticator_for(settings: Settings) -> Authenticator:
    """The authenticator of the settings' mode, checking the entra settings; logs once what the mode means."""
    mode = mode_of(settings)
    if mode is AuthMode.NONE:
        LOGGER.warning("DICOMWEB_AUTH_MODE is none: the API is OPEN, anyone who can reach it can read and write "
                       "every study. Set DICOMWEB_AUTH_MODE to entra (or function) outside a development machine.")
        return OpenAccess()
    if mode is AuthMode.FUNCTION:
        LOGGER.info("DICOMWEB_AUTH_MODE is function: the Functions host checks function keys (not the local host)")
        return OpenAccess()
    if not settings.auth_audiences:
        raise ValueError("DICOMWEB_AUTH_MODE entra needs DICOMWEB_AUTH_AUDIENCE (e.g. api://<client-id>)")
    authority = entra_authority(settings)
    tenant = settings.auth_tenant_id
    extra_issuers = frozenset({f"https://sts.windows.net/{tenant}/"} if tenant else ())  # Entra's v1.0 tokens
    rules = TokenRules(audiences=settings.auth_audiences, reader_role=settings.auth_reader_role,
                       writer_role=settings.auth_writer_role, clock_skew_seconds=settings.auth_clock_skew_seconds,
                       extra_issuers=extra_issuers)
    LOGGER.info("DICOMWEB_AUTH_MODE is entra: bearer tokens of %s for %s; roles %s (read), %s (write)",
                authority, ", ".join(rules.audiences), rules.reader_role, rules.writer_role)
    from dicom_core.edge.jwks import JwksCache  # see EntraAuthenticator.validate

    return EntraAuthenticator(JwksCache(authority), rules)


def entra_authority(settings: Settings) -> str:
    """The OpenID issuer base: DICOMWEB_AUTH_AUTHORITY, else the v2.0 endpoint of DICOMWEB_AUTH_TENANT_ID."""
    if settings.auth_authority:
        return settings.auth_authority
    if settings.auth_tenant_id:
        return f"{ENTRA_LOGIN}/{settings.auth_tenant_id}/v2.0"
    raise ValueError("DICOMWEB_AUTH_MODE entra needs DICOMWEB_AUTH_TENANT_ID or DICOMWEB_AUTH_AUTHORITY")


def required_role(method: str, rules: TokenRules) -> str:
    """The role a request with ``method`` needs: the reader role to read, the writer role for anything else."""
    return rules.reader_role if method.upper() in READ_METHODS else rules.writer_role


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 when it is missing or malformed."""
    if not authorization or not authorization.strip():
        raise UnauthorizedError("A bearer token is required.", headers={"WWW-Authenticate": _challenge()})
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise UnauthorizedError("The Authorization header must read 'Bearer <token>'.",
                                headers={"WWW-Authenticate": _challenge("invalid_request")})
    return token


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    roles = claims.get("roles")
    if isinstance(roles, str):
        return frozenset({roles})
    if isinstance(roles, list):
        return frozenset(role for role in roles if isinstance(role, str))
    return frozenset()


def _invalid_token(message: str) -> UnauthorizedError:
    return UnauthorizedError(message, headers={"WWW-Authenticate": _challenge("invalid_token", message)})


def _challenge(error: str | None = None, description: str | None = None) -> str:
    """A `WWW-Authenticate: Bearer` challenge (RFC 6750 §3): no error code when no token was sent."""
    parts = [f'Bearer realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        # RFC 6750 allows printable ASCII but the quote and the backslash in error_description.
        text = "".join(char for char in description if " " <= char <= "~" and char not in '"\\')
        parts.append(f'error_description="{text}"')
    return ", ".join(parts)

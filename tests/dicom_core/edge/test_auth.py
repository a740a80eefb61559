"""Authentication modes, bearer-token validation and roles, against a JWKS served on loopback by the test."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from dicom_core.edge import auth
from dicom_core.edge.auth import EntraAuthenticator, OpenAccess, TokenRules
from dicom_core.edge.jwks import JwksCache
from dicom_core.model.errors import ForbiddenError, ServiceUnavailableError, UnauthorizedError
from dicom_core.settings import Settings
from tests.identity_provider import AUDIENCE, READER, WRITER, IdentityProvider, SigningKey, hs256_token, unsigned_token

RULES = TokenRules(audiences=(AUDIENCE,), reader_role=READER, writer_role=WRITER, clock_skew_seconds=60)


@pytest.fixture(scope="module")
def provider() -> Iterator[IdentityProvider]:
    with IdentityProvider().serving() as serving:
        yield serving


@pytest.fixture
def authenticator(provider: IdentityProvider) -> EntraAuthenticator:
    return EntraAuthenticator(JwksCache(provider.authority), RULES)


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def rejected(authenticator: EntraAuthenticator, method: str, authorization: str | None) -> UnauthorizedError:
    with pytest.raises(UnauthorizedError) as caught:
        await authenticator.authorize(method, authorization)
    return caught.value


# --- valid tokens and roles -----------------------------------------------------------------------------------

async def test_reader_token_may_read(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    caller = await authenticator.authorize("GET", bearer(provider.token(roles=[READER])))
    assert caller.subject == "test-object-id"
    assert caller.roles == {READER}


async def test_writer_token_may_write(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    for method in ("POST", "PUT", "DELETE"):
        await authenticator.authorize(method, bearer(provider.token(roles=[WRITER])))


async def test_reader_token_may_not_write(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    with pytest.raises(ForbiddenError) as caught:
        await authenticator.authorize("POST", bearer(provider.token(roles=[READER])))
    assert WRITER in caught.value.message
    assert 'error="insufficient_scope"' in caught.value.headers["WWW-Authenticate"]


async def test_writer_role_does_not_imply_reader(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    with pytest.raises(ForbiddenError):
        await authenticator.authorize("GET", bearer(provider.token(roles=[WRITER])))


async def test_token_with_both_roles_may_read_and_write(
    authenticator: EntraAuthenticator, provider: IdentityProvider
) -> None:
    token = bearer(provider.token(roles=[READER, WRITER]))
    await authenticator.authorize("GET", token)
    await authenticator.authorize("DELETE", token)


async def test_token_without_roles_is_forbidden(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    with pytest.raises(ForbiddenError):
        await authenticator.authorize("GET", bearer(provider.token(roles=[])))


async def test_one_of_several_audiences_is_enough(provider: IdentityProvider) -> None:
    rules = TokenRules(audiences=("other", AUDIENCE), reader_role=READER, writer_role=WRITER, clock_skew_seconds=0)
    await EntraAuthenticator(JwksCache(provider.authority), rules).authorize("GET", bearer(provider.token()))


# --- missing and malformed credentials -------------------------------------------------------------------------

async def test_no_authorization_header_is_401_with_a_bare_bearer_challenge(
    authenticator: EntraAuthenticator,
) -> None:
    error = await rejected(authenticator, "GET", None)
    assert error.headers["WWW-Authenticate"] == 'Bearer realm="dicomweb"'


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "token-without-scheme"])
async def test_malformed_authorization_header_is_401_invalid_request(
    authenticator: EntraAuthenticator, header: str
) -> None:
    error = await rejected(authenticator, "GET", header)
    assert 'error="invalid_request"' in error.headers["WWW-Authenticate"]


async def test_garbage_token_is_401_invalid_token(authenticator: EntraAuthenticator) -> None:
    error = await rejected(authenticator, "GET", bearer("not.a.jwt"))
    assert 'error="invalid_token"' in error.headers["WWW-Authenticate"]


# --- invalid tokens --------------------------------------------------------------------------------------------

async def test_expired_token_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    now = int(time.time())
    error = await rejected(authenticator, "GET", bearer(provider.token(iat=now - 7200, nbf=now - 7200, exp=now - 600)))
    assert "expired" in error.message
    assert 'error="invalid_token"' in error.headers["WWW-Authenticate"]


async def test_expiry_within_the_clock_skew_is_accepted(
    authenticator: EntraAuthenticator, provider: IdentityProvider
) -> None:
    await authenticator.authorize("GET", bearer(provider.token(exp=int(time.time()) - 30)))


async def test_token_not_valid_yet_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    error = await rejected(authenticator, "GET", bearer(provider.token(nbf=int(time.time()) + 600)))
    assert "not valid yet" in error.message


async def test_token_without_expiry_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    await rejected(authenticator, "GET", bearer(provider.token(exp=None)))


async def test_wrong_audience_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    error = await rejected(authenticator, "GET", bearer(provider.token(aud="api://another-service")))
    assert "audience" in error.message


async def test_wrong_issuer_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    error = await rejected(authenticator, "GET", bearer(provider.token(iss="https://login.example.com/evil/v2.0")))
    assert "issuer" in error.message


async def test_signature_by_another_key_with_a_known_key_id_is_401(
    authenticator: EntraAuthenticator, provider: IdentityProvider
) -> None:
    forger = SigningKey(provider.keys[0].kid)
    error = await rejected(authenticator, "GET", bearer(provider.token(key=forger)))
    assert "signature" in error.message


async def test_tampered_payload_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    header, _, signature = provider.token(roles=[READER]).split(".")
    _, payload, _ = provider.token(roles=[READER, WRITER]).split(".")
    await rejected(authenticator, "POST", bearer(f"{header}.{payload}.{signature}"))


async def test_alg_none_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 600, "roles": [READER, WRITER]}
    error = await rejected(authenticator, "GET", bearer(unsigned_token(claims)))
    assert "RS256" in error.message


async def test_hs256_signed_with_the_public_key_is_401(
    authenticator: EntraAuthenticator, provider: IdentityProvider
) -> None:
    claims = {"iss": provider.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 600, "roles": [READER, WRITER]}
    await rejected(authenticator, "GET", bearer(hs256_token(claims, provider.keys[0].public_pem())))


async def test_unknown_key_id_is_401(authenticator: EntraAuthenticator, provider: IdentityProvider) -> None:
    error = await rejected(authenticator, "GET", bearer(provider.token(key=SigningKey("never-published"))))
    assert "key" in error.message


# --- signing keys from the authority ---------------------------------------------------------------------------

async def test_a_rotated_key_is_fetched_when_a_token_names_it(provider: IdentityProvider) -> None:
    keys = JwksCache(provider.authority, min_refresh_seconds=0)
    authenticator = EntraAuthenticator(keys, RULES)
    await authenticator.authorize("GET", bearer(provider.token()))
    rotated = SigningKey("key-2")
    provider.keys.append(rotated)
    try:
        await authenticator.authorize("GET", bearer(provider.token(key=rotated)))
    finally:
        provider.keys.remove(rotated)


async def test_unknown_key_ids_refresh_at_most_once_per_interval(provider: IdentityProvider) -> None:
    authenticator = EntraAuthenticator(JwksCache(provider.authority, min_refresh_seconds=3600), RULES)
    await authenticator.authorize("GET", bearer(provider.token()))
    downloads = provider.jwks_downloads
    for number in range(5):
        await rejected(authenticator, "GET", bearer(provider.token(key=SigningKey(f"made-up-{number}"))))
    assert provider.jwks_downloads == downloads


async def test_keys_are_cached_between_requests(provider: IdentityProvider) -> None:
    authenticator = EntraAuthenticator(JwksCache(provider.authority), RULES)
    await authenticator.authorize("GET", bearer(provider.token()))
    downloads = provider.jwks_downloads
    for _ in range(3):
        await authenticator.authorize("GET", bearer(provider.token()))
    assert provider.jwks_downloads == downloads


async def test_unreachable_authority_is_503() -> None:
    authenticator = EntraAuthenticator(JwksCache("http://127.0.0.1:9/nowhere/v2.0"), RULES)
    with pytest.raises(ServiceUnavailableError):
        await authenticator.authorize("GET", bearer(IdentityProvider().token()))


def test_authority_must_be_https_except_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        JwksCache("http://login.example.com/tenant/v2.0")
    JwksCache("https://login.microsoftonline.com/tenant/v2.0")


# --- modes and settings -----------------------------------------------------------------------------------------

def test_mode_none_is_open_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dicom_core.edge.auth"):
        authenticator = auth.authenticator_for(Settings.from_environment({}))
    assert isinstance(authenticator, OpenAccess)
    assert any(record.levelno == logging.WARNING and "OPEN" in record.getMessage() for record in caplog.records)


async def test_open_access_lets_any_request_through() -> None:
    assert (await OpenAccess().authorize("DELETE", None)).roles == frozenset()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="DICOMWEB_AUTH_MODE"):
        auth.authenticator_for(Settings.from_environment({"DICOMWEB_AUTH_MODE": "off"}))


def test_entra_mode_needs_an_audience_and_an_authority() -> None:
    with pytest.raises(ValueError, match="DICOMWEB_AUTH_AUDIENCE"):
        auth.authenticator_for(Settings.from_environment({"DICOMWEB_AUTH_MODE": "entra",
                                                          "DICOMWEB_AUTH_TENANT_ID": "t"}))
    with pytest.raises(ValueError, match="DICOMWEB_AUTH_TENANT_ID"):
        auth.authenticator_for(Settings.from_environment({"DICOMWEB_AUTH_MODE": "entra",
                                                          "DICOMWEB_AUTH_AUDIENCE": AUDIENCE}))


def test_tenant_id_gives_the_entra_v2_authority() -> None:
    settings = Settings.from_environment({"DICOMWEB_AUTH_TENANT_ID": "contoso-tenant"})
    assert auth.entra_authority(settings) == "https://login.microsoftonline.com/contoso-tenant/v2.0"


def test_role_names_and_clock_skew_are_settings() -> None:
    settings = Settings.from_environment({"DICOMWEB_AUTH_READER_ROLE": "Dicom.Read", "DICOMWEB_AUTH_WRITER_ROLE":
                                          "Dicom.Write", "DICOMWEB_AUTH_CLOCK_SKEW_SECONDS": "30",
                                          "DICOMWEB_AUTH_AUDIENCE": "a, b"})
    assert (settings.auth_reader_role, settings.auth_writer_role) == ("Dicom.Read", "Dicom.Write")
    assert settings.auth_clock_skew_seconds == 30
    assert settings.auth_audiences == ("a", "b")

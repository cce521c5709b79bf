"""What Django's middleware checks and adds, for the API answers made before Django.

The short paths (``shop.api.fast``: heartbeats on the event loop, parked claims
without a thread each) skip Django's middleware; these keep what it would have
done: the Host header checked against ALLOWED_HOSTS, plain HTTP left to Django
where HTTPS is required (it redirects), and the security headers on every answer.
"""

from __future__ import annotations

from functools import cache

from csp.utils import build_policy
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from shop.body_limit import Scope


def short_path_allowed(scope: Scope) -> tuple[bool, bool]:
    """(whether an answer may be made before Django, whether the request is HTTPS)."""
    headers = dict(scope.get("headers", []))
    secure = is_secure(scope, headers)
    if settings.SECURE_SSL_REDIRECT and not secure:
        return False, secure  # Django redirects it to HTTPS
    return host_allowed(headers), secure


def security_headers(secure: bool) -> list[tuple[bytes, bytes]]:
    """What Django's SecurityMiddleware and XFrameOptionsMiddleware add to a JSON answer."""
    headers = [
        (b"Content-Type", b"application/json"),
        (b"X-Frame-Options", settings.X_FRAME_OPTIONS.encode()),
        (b"Content-Security-Policy", _policy()),
    ]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"X-Content-Type-Options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        headers.append((b"Referrer-Policy", settings.SECURE_REFERRER_POLICY.encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        coop = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode()
        headers.append((b"Cross-Origin-Opener-Policy", coop))
    if secure and settings.SECURE_HSTS_SECONDS:
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"
        headers.append((b"Strict-Transport-Security", hsts.encode()))
    return headers


@cache
def _policy() -> bytes:
    """The Content-Security-Policy header django-csp sends: the same for every API answer."""
    return build_policy().encode()


def host_allowed(headers: dict[bytes, bytes]) -> bool:
    """The Host header passes ALLOWED_HOSTS, as request.get_host() checks it (no header: the view decides)."""
    host = headers.get(b"host", b"").decode("latin1")
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def is_secure(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """HTTPS, as Django's request.is_secure() reads it (the proxy's header when one is set)."""
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
        if name in headers:
            return headers[name].decode("latin1").split(",")[0].strip() == proxy[1]
    return scope.get("scheme") == "https"

"""The production profile: MOSAIC_ENV=production refuses the embedded defaults and turns on HTTPS-only settings.

mosaic.settings calls apply_profile(globals(), env) after every other setting is read. In the demo profile
(MOSAIC_ENV unset or "demo") it changes nothing. In production it raises ImproperlyConfigured, naming every
insecure value at once, when SECRET_KEY is the embedded one (or weak), DEBUG is on, ALLOWED_HOSTS is empty or
the database is SQLite; and it sets secure cookies, HSTS and the SSL redirect, so that
`manage.py check --deploy` is clean. Behind a TLS-terminating proxy, SECURE_PROXY_SSL_HEADER names the header
the proxy sets (e.g. "HTTP_X_FORWARDED_PROTO,https"); only set it when the proxy overwrites that header.
"""
from django.core.exceptions import ImproperlyConfigured

EMBEDDED_SECRET_KEY = "mosaic-embedded-default-not-for-production"
PROFILES = ("demo", "production")
MIN_SECRET_KEY_LENGTH = 50  # Django's own deploy check (security.W009)
# Load balancers and Prometheus probe these over plain HTTP inside the network.
PROBE_PATHS = [r"^healthz$", r"^readyz$", r"^metrics$"]


def profile_name(env) -> str:
    name = env.str("MOSAIC_ENV", default="demo").strip().lower() or "demo"
    if name not in PROFILES:
        raise ImproperlyConfigured(f"MOSAIC_ENV={name!r} is not a profile: use one of {', '.join(PROFILES)}.")
    return name


def insecure_settings(settings: dict, env) -> list[str]:
    """One sentence per setting that production refuses, naming it."""
    problems = []
    secret = settings["SECRET_KEY"]
    if secret == EMBEDDED_SECRET_KEY:
        problems.append("SECRET_KEY is the embedded default: set SECRET_KEY to a long random value")
    elif len(secret) < MIN_SECRET_KEY_LENGTH or len(set(secret)) < 5 or secret.startswith("django-insecure-"):
        problems.append(f"SECRET_KEY is weak: it needs at least {MIN_SECRET_KEY_LENGTH} random characters")
    if settings["DEBUG"]:
        problems.append("DEBUG is on: set DEBUG=false")
    if not env.list("ALLOWED_HOSTS", default=[]):
        problems.append("ALLOWED_HOSTS is empty: set ALLOWED_HOSTS to the host names the site is served under")
    if settings["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3":
        problems.append("DATABASE_URL is SQLite (the embedded default): set DATABASE_URL to PostgreSQL")
    return problems


def production_settings(env) -> dict:
    proxy_header = env.list("SECURE_PROXY_SSL_HEADER", default=[])
    if proxy_header and len(proxy_header) != 2:
        raise ImproperlyConfigured(
            "SECURE_PROXY_SSL_HEADER must be a header and its value, e.g. HTTP_X_FORWARDED_PROTO,https")
    return {
        "ALLOWED_HOSTS": env.list("ALLOWED_HOSTS", default=[]),
        "SECRET_KEY_FALLBACKS": env.list("SECRET_KEY_FALLBACKS", default=[]),  # old keys, while rotating
        "CSRF_TRUSTED_ORIGINS": env.list("CSRF_TRUSTED_ORIGINS", default=[]),
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_SSL_REDIRECT": env.bool("SECURE_SSL_REDIRECT", default=True),
        "SECURE_REDIRECT_EXEMPT": PROBE_PATHS,
        "SECURE_HSTS_SECONDS": env.int("SECURE_HSTS_SECONDS", default=31_536_000),
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True),
        "SECURE_HSTS_PRELOAD": env.bool("SECURE_HSTS_PRELOAD", default=True),
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "X_FRAME_OPTIONS": "DENY",
        "SECURE_PROXY_SSL_HEADER": tuple(proxy_header) if proxy_header else None,
        "USE_X_FORWARDED_HOST": env.bool("USE_X_FORWARDED_HOST", default=False),
    }


def apply_profile(settings: dict, env) -> str:
    """Check and change the settings module's namespace for MOSAIC_ENV; returns the profile's name."""
    name = profile_name(env)
    settings["MOSAIC_ENV"] = name
    if name != "production":
        return name
    problems = insecure_settings(settings, env)
    if problems:
        raise ImproperlyConfigured("MOSAIC_ENV=production refuses to start: " + "; ".join(problems) + ".")
    settings.update(production_settings(env))
    return name

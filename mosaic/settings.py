"""Settings read from the environment (django-environ), with an embedded default:
SQLite, Celery eager, files under ./var. Every value can be overridden by an
environment variable of the same name."""
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False) if (BASE_DIR / ".env").exists() else None

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="mosaic-embedded-default-not-for-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

VAR_DIR = Path(env.str("MOSAIC_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)  # the embedded SQLite file and local files live here
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
EXPERT_STORAGE_DIR = Path(env.str("EXPERT_STORAGE_DIR", default=str(VAR_DIR / "experts")))
BASE_MODEL_DIR = Path(env.str("BASE_MODEL_DIR", default=str(VAR_DIR / "base_models")))
# Trained demo experts, one directory per recipe hash (composition.training.ensure_adapter).
TRAINED_EXPERTS_DIR = Path(env.str("MOSAIC_TRAINED_EXPERTS_DIR", default=str(VAR_DIR / "cache" / "experts")))
EXPERT_MAX_UPLOAD_BYTES = env.int("EXPERT_MAX_UPLOAD_BYTES", default=64 * 1024 * 1024)
EXPERT_ALLOWED_DTYPES = env.list("EXPERT_ALLOWED_DTYPES", default=["F32", "F16", "BF16"])
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "pgtrigger",
    "marketplace",
    "ledger",
    "gpu_workers",
    "ledger.accounting",
]

MIDDLEWARE = [
    "mosaic.middleware.RequestContextMiddleware",  # request id, request log line, request metrics
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mosaic.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "mosaic.wsgi.application"
ASGI_APPLICATION = "mosaic.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'mosaic.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's own cursors bind parameters in the client and never prepare; this lets the few hot statements
    # that ask for it (ledger.services' queued event) keep one server-side plan per connection. Set it to None
    # behind a pooler in transaction mode that cannot carry prepared statements.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Static files in every mode (DEBUG or not), served by whitenoise: the admin's, Swagger UI's and ReDoc's (from
# drf-spectacular-sidecar) and plotly.js (from the plotly wheel, mosaic.staticfiles). Straight from the finders,
# so no collectstatic step is needed; whatever collectstatic wrote under STATIC_ROOT is served too.
INSTALLED_APPS += ["drf_spectacular_sidecar"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "whitenoise.middleware.WhiteNoiseMiddleware")
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "mosaic.staticfiles.PackageFileFinder",
]
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise serves it too (empty unless collectstatic ran)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "mosaic.parsers.LimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "mosaic.schema.MosaicAutoSchema",
    "EXCEPTION_HANDLER": "mosaic.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Mosaic API",
    "DESCRIPTION": "Participatory model marketplace: contributors, experts, composed systems, ledger.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,  # request components of their own: minLength 1 where blank is refused
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
    "ENUM_NAME_OVERRIDES": {
        "OnRevocationEnum": "marketplace.models.ComposedSystem.OnRevocation",
        "MembershipRoleEnum": "marketplace.models.Membership.Role",
        "ChatRoleEnum": "gpu_workers.contract.CHAT_ROLES",
        "SubscriptionStatusEnum": "marketplace.models.Subscription.Status",
    },
    # Swagger UI and ReDoc from our own static files (drf-spectacular-sidecar): /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
API_KEY_CUSTOM_HEADER = "HTTP_AUTHORIZATION"

# Celery: eager (in-process) unless a broker is configured.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://")
CELERY_RESULT_BACKEND = env.str(
    "CELERY_RESULT_BACKEND",
    default="cache+memory://" if CELERY_BROKER_URL == "memory://" else CELERY_BROKER_URL,
)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL == "memory://")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a task whose worker process died goes back to the queue
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BEAT_SCHEDULE: dict = {}
CELERY_IMPORTS = ["marketplace.credit.tasks"]
CELERY_BEAT_SCHEDULE["credit-allocate"] = {"task": "credit.allocate", "schedule": 300}
# Daily; closes last calendar month once (later runs are no-ops) and sends its payouts.
CELERY_BEAT_SCHEDULE["credit-close-previous-month"] = {"task": "credit.close_previous_month", "schedule": 86400}
CELERY_BEAT_SCHEDULE["stripe-report-usage"] = {
    "task": "marketplace.report_usage_to_stripe",
    "schedule": env.int("STRIPE_USAGE_REPORT_INTERVAL_SECONDS", default=60),
}
CELERY_BEAT_SCHEDULE["idempotency-purge"] = {"task": "marketplace.purge_idempotency_keys", "schedule": 3600}
CELERY_BEAT_SCHEDULE["ledger-checkpoint"] = {
    "task": "ledger.make_checkpoint",
    "schedule": env.int("LEDGER_CHECKPOINT_INTERVAL_SECONDS", default=60),
}
# A safety net for the after-commit sequencing (which leaves the queue when its time budget runs out): integrate
# whatever is still queued; returns at once when `ledger sequence --follow` or another process leads.
CELERY_BEAT_SCHEDULE["ledger-sequence"] = {
    "task": "ledger.sequence_pending",
    "schedule": env.int("LEDGER_SEQUENCE_SWEEP_SECONDS", default=10),
}
# Beat signs a checkpoint this often; without a broker (no beat) `runserver` does it in a thread (ledger.scheduler).
LEDGER_CHECKPOINT_INTERVAL_SECONDS = CELERY_BEAT_SCHEDULE["ledger-checkpoint"]["schedule"]

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# Ledger signing key (Ed25519, 32-byte seed, base64) or a file holding it.
LEDGER_ORIGIN = env.str("LEDGER_ORIGIN", default="mosaic.local/ledger")
LEDGER_SIGNING_KEY = env.str("LEDGER_SIGNING_KEY", default="")
LEDGER_SIGNING_KEY_FILE = env.str("LEDGER_SIGNING_KEY_FILE", default=str(VAR_DIR / "ledger_signing_key"))
LEDGER_WITNESS_DIR = Path(env.str("LEDGER_WITNESS_DIR", default=str(VAR_DIR / "witness")))  # the demo's witness
# PostgreSQL: False commits transactions that append to the ledger asynchronously (a crash may lose the
# last fraction of a second of them, each with its change; never a gap; checkpoints stay durable).
LEDGER_SYNCHRONOUS_COMMIT = env.bool("LEDGER_SYNCHRONOUS_COMMIT", default=True)
# How recorded events reach the ledger's sequence (ledger.services.sequencing_mode): "inline", "after_commit" or
# "background" (with `ledger sequence --follow` running); empty: inline on SQLite, after_commit on PostgreSQL.
LEDGER_SEQUENCING = env.str("LEDGER_SEQUENCING", default="")
LEDGER_SEQUENCER_BATCH = env.int("LEDGER_SEQUENCER_BATCH", default=2000)  # events per sequencer transaction
LEDGER_CHECKPOINT_MIN_SECONDS = env.float("LEDGER_CHECKPOINT_MIN_SECONDS", default=1.0)  # the sequencer's signing
LEDGER_AFTER_COMMIT_SECONDS = env.float("LEDGER_AFTER_COMMIT_SECONDS", default=1.0)  # after_commit's time budget
# `ledger verify` names any event committed longer ago than this and still not integrated.
LEDGER_INTEGRATION_BOUND_SECONDS = env.int("LEDGER_INTEGRATION_BOUND_SECONDS", default=60)

# Stripe
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="sk_test_mosaic_local")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="whsec_mosaic_local")
STRIPE_CONNECT_WEBHOOK_SECRET = env.str("STRIPE_CONNECT_WEBHOOK_SECRET", default=STRIPE_WEBHOOK_SECRET)

# Money: integer minor units (cents) everywhere.
PLATFORM_FEE_BASIS_POINTS = env.int("PLATFORM_FEE_BASIS_POINTS", default=2000)
PAYOUT_MINIMUM_MINOR = env.int("PAYOUT_MINIMUM_MINOR", default=1000)
CURRENCY = env.str("CURRENCY", default="usd")

# Inference. The deadline: how long the web side waits for a worker's answer before a 503
# `engine_unavailable` (Retry-After: INFERENCE_RETRY_AFTER_SECONDS); the task message carries it and a worker
# drops a message taken after it. (INFERENCE_TIMEOUT_SECONDS is the deadline's former name.)
INFERENCE_DEADLINE_SECONDS = env.int("INFERENCE_DEADLINE_SECONDS", default=env.int("INFERENCE_TIMEOUT_SECONDS", default=60))
INFERENCE_RETRY_AFTER_SECONDS = env.int("INFERENCE_RETRY_AFTER_SECONDS", default=2)
# Redis hands a message held by a dead worker to another one after the visibility timeout. Past the deadline
# (by a margin for clock skew), so a task still running is never given to a second worker, and a message that
# comes back is already past its deadline: dropped, not run. Tasks of every kind share it: a non-inference task
# that may run longer must be idempotent, or this must be raised for its workers.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=INFERENCE_DEADLINE_SECONDS + 30),
}
MAX_TOKENS_LIMIT = env.int("MAX_TOKENS_LIMIT", default=512)
# How long a composed system's strategy may take to learn on its development set (one request to a worker,
# marketplace.services.optimisation); the worker's task time limit (MOSAIC_TASK_SOFT_TIME_LIMIT) must allow it.
OPTIMISATION_DEADLINE_SECONDS = env.int("OPTIMISATION_DEADLINE_SECONDS", default=3600)

# System evaluation: the held-out suite (a module with SKILLS, GENERAL, is_correct, heldout_sha256, as
# composition.skills), items per skill by default, and how many requests an evaluation keeps in flight.
EVALUATION_SUITE = env.str("EVALUATION_SUITE", default="composition.skills")
EVALUATION_ITEMS_PER_SKILL = env.int("EVALUATION_ITEMS_PER_SKILL", default=20)
EVALUATION_CONCURRENCY = env.int("EVALUATION_CONCURRENCY", default=8)

# ---------------------------------------------------------------- Account security (issue 22)
# Throttled logins (django-axes), two-factor (django-otp, TOTP + recovery codes), a strict CSP (django-csp),
# email for password reset and verification. One block, so the production profile can override its values.
from csp.constants import NONE, SELF  # noqa: E402

INSTALLED_APPS += ["axes", "django_otp", "django_otp.plugins.otp_totp", "django_otp.plugins.otp_static", "csp"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1,
                  "django_otp.middleware.OTPMiddleware")
MIDDLEWARE.insert(MIDDLEWARE.index("django_otp.middleware.OTPMiddleware") + 1,
                  "mosaic.security.SecondFactorRequiredMiddleware")
MIDDLEWARE += ["csp.middleware.CSPMiddleware", "axes.middleware.AxesMiddleware"]
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

# Failed logins, counted per user name and per IP address (either one locks): the 6th failure within the
# back-off window gets a 429. The window starts at AXES_BASE_COOLOFF_SECONDS and doubles with every further
# failure (an attempt while locked counts), up to AXES_MAX_COOLOFF_SECONDS.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=6)  # axes locks at the failure that reaches it
AXES_BASE_COOLOFF_SECONDS = env.int("AXES_BASE_COOLOFF_SECONDS", default=60)
AXES_MAX_COOLOFF_SECONDS = env.int("AXES_MAX_COOLOFF_SECONDS", default=3600)
AXES_COOLOFF_TIME = "mosaic.security.login_cool_off"
AXES_LOCKOUT_CALLABLE = "mosaic.security.lockout_response"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_CALLABLE = "mosaic.security.login_username"
AXES_USE_ATTEMPT_EXPIRATION = True  # each record keeps its own back-off end
AXES_RESET_ON_SUCCESS = True
# The client's address: REMOTE_ADDR, or behind N trusted reverse proxies the Nth address from the right of
# X-Forwarded-For (the one the outermost proxy saw), so a client cannot choose its own by sending the header.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "mosaic.security.client_ip_address"

# API tokens record when they were last used (shown on the account page with their creation time).
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "marketplace.api.authentication.RecordingTokenAuthentication"
    if name == "rest_framework.authentication.TokenAuthentication" else name
    for name in REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]
]

# Two-factor: required for staff, auditors, and contributors before their first payout; offered to everyone.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Mosaic")
SECOND_FACTOR_FRESH_SECONDS = env.int("SECOND_FACTOR_FRESH_SECONDS", default=600)  # payout-details changes
RECOVERY_CODE_COUNT = 10

# Strict CSP: scripts, styles, images, fonts and connections from our own origin only; no inline code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# Email: the console in the demo; SMTP in production (EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend
# with EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS).
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=True)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Mosaic <no-reply@mosaic.local>")
PASSWORD_RESET_TIMEOUT = env.int("PASSWORD_RESET_TIMEOUT", default=3 * 86400)
# ---------------------------------------------------------------- end Account security

# --- Operations and the production profile (mosaic/profiles.py, mosaic/logs.py, mosaic/readiness.py) -----
# /readyz asks the database, the broker and the workers, each within this many seconds.
READINESS_TIMEOUT_SECONDS = env.float("READINESS_TIMEOUT_SECONDS", default=1.0)
# When set, /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

from mosaic.profiles import apply_profile  # noqa: E402

# MOSAIC_ENV=production refuses the embedded SECRET_KEY, DEBUG, an empty ALLOWED_HOSTS and SQLite, and turns on
# secure cookies, HSTS and the SSL redirect (SECURE_PROXY_SSL_HEADER behind a TLS-terminating proxy).
MOSAIC_ENV = apply_profile(globals(), env)

from mosaic.logs import logging_config  # noqa: E402

# JSON lines in production (LOG_FORMAT=json|text overrides), each with its request id.
LOGGING = logging_config(
    level=env.str("LOG_LEVEL", default="WARNING"),
    json_lines=env.str("LOG_FORMAT", default="json" if MOSAIC_ENV == "production" else "text") == "json",
    mosaic_level=env.str("MOSAIC_LOG_LEVEL", default="INFO" if MOSAIC_ENV == "production" else "WARNING"),
)
LOGGING["loggers"] = {**LOGGING.get("loggers", {}), "mosaic.security": {"level": "INFO"}, "axes": {"level": "WARNING"}}
# --- end of operations and the production profile ------------------------------------------------------------

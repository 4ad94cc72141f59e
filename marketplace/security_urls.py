from django.contrib.auth import views as auth_views
from django.urls import path

from marketplace import security_pages

urlpatterns = [
    path("account/", security_pages.overview, name="account-security"),
    path("account/two-factor/setup/", security_pages.two_factor_setup, name="two-factor-setup"),
    path("account/two-factor/verify/", security_pages.two_factor_verify, name="two-factor-verify"),
    path("account/two-factor/recovery-codes/", security_pages.recovery_codes_new, name="recovery-codes-new"),
    path("account/sessions/end/", security_pages.sessions_end, name="sessions-end"),
    path("account/token/revoke/", security_pages.token_revoke, name="api-token-revoke"),
    path("account/email/verify/", security_pages.email_verification_request, name="email-verify-request"),
    path("account/email/verify/<str:uidb64>/<str:token>/", security_pages.email_verification, name="email-verify"),
    # Django's own password reset; the names are the ones its email template uses.
    path("password-reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(), name="password_reset_confirm"),
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
]

"""DRF token authentication that records when each token was last used (at most once a minute)."""
from rest_framework.authentication import TokenAuthentication


class RecordingTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key):
        from marketplace.services.security import api_token_used  # DRF loads this class while its views import

        user, token = super().authenticate_credentials(key)
        api_token_used(token=token)
        return user, token

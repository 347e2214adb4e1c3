"""Site-wide response headers that Django's own middleware does not set."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.utils.cache import patch_cache_control


class PrivateNoStoreMiddleware:
    """``Cache-Control: private, no-store`` on every page and fragment (static
    files are answered before this by WhiteNoise): conversations are private,
    and no shared or disk cache should keep them.  A view that set its own
    Cache-Control keeps it."""

    async_capable = True
    sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self._acall(request)
        return self._patched(self.get_response(request))

    async def _acall(self, request):
        return self._patched(await self.get_response(request))

    @staticmethod
    def _patched(response):
        if not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        return response

from django.conf import settings
from django.http import FileResponse, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import ensure_csrf_cookie

_NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>Leukolab</title>
<h1>Leukolab</h1><p>The web interface has not been built. Run <code>make run</code> (or
<code>make frontend</code>), then reload. The API is at <a href="/api/docs/">/api/docs/</a>.</p>"""


@ensure_csrf_cookie
def frontend_index(request, *args, **kwargs):
    """The single-page app's shell for every path that is not the API, the admin or a static file."""
    index = settings.FRONTEND_DIST / "index.html"
    if index.is_file():
        response = FileResponse(open(index, "rb"), content_type="text/html; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        return response
    return HttpResponse(_NOT_BUILT)


def _api(request) -> bool:
    return request.path.startswith("/api/")


def not_found(request, exception=None):
    """An address under /api/ that no operation answers (``/api/slides/abc/``) gets the API's error shape;
    the rest gets Django's page."""
    if _api(request):
        return JsonResponse({"message": f"No such address in the API: {request.path}", "extra": {}}, status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request, exception=None):
    if _api(request):
        return JsonResponse({"message": "The request was refused as malformed.", "extra": {}}, status=400)
    return defaults.bad_request(request, exception)


def server_error(request):
    """A fault of ours under /api/ still answers in the API's shape (the traceback goes to the log)."""
    if _api(request):
        return JsonResponse({"message": "Something went wrong on the server; it has been logged. Try again, and tell "
                             "the lab's admin if it happens again.", "extra": {}}, status=500)
    return defaults.server_error(request)

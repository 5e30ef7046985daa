from django.conf import settings
from django.http import FileResponse, HttpResponse
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

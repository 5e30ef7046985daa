"""Every API address answers OPTIONS without a server error (generated requests found two that did not)."""
import re

from django.urls import get_resolver


def _routes(resolver, prefix=""):
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if hasattr(pattern, "url_patterns"):
            yield from _routes(pattern, route)
        else:
            yield route


def test_every_api_address_answers_options(api_as, analyzed_slide):
    client = api_as("admin", username="boss")
    paths = ["/" + re.sub(r"<[^>]+>", "1", route).replace("^", "").replace("$", "")
             for route in _routes(get_resolver()) if route.startswith("api/")]
    assert "/api/slides/1/boxes/" in paths and "/api/docs/" in paths
    answers = {path: client.options(path).status_code for path in paths}
    assert {path: code for path, code in answers.items() if code >= 500} == {}
    assert answers["/api/slides/1/boxes/"] == 200 and answers["/api/docs/"] == 405

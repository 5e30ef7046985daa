"""Talking to a running Leukolab over HTTP, as the browser does: session login with the CSRF cookie."""
from __future__ import annotations

import time

import requests


class ApiSession:
    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.http = requests.Session()

    def _headers(self) -> dict:
        token = self.http.cookies.get("csrftoken")
        return {"X-CSRFToken": token, "Referer": self.base + "/"} if token else {}

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.base + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.http.post(self.base + path, headers=self._headers(), timeout=120, **kw)

    def login(self, username: str, password: str) -> dict:
        assert self.get("/api/auth/csrf/").status_code == 204
        r = self.post("/api/auth/login/", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return r.json()

    def wait_for_slide(self, slide_id: int, timeout: float = 180.0) -> dict:
        """Poll the slide until its analysis ends; return it with the progress values seen on the way."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            slide = self.get(f"/api/slides/{slide_id}/").json()
            if slide["job"]:
                seen.append((slide["status"], slide["job"]["progress"]))
            if slide["status"] in ("analyzed", "failed"):
                slide["_seen"] = seen
                return slide
            time.sleep(0.3)
        raise AssertionError(f"slide {slide_id} not analysed within {timeout} s; last states {seen[-5:]}")

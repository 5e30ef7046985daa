import pytest
from django.contrib.auth.models import User


@pytest.fixture
def lab(db):
    from webapp.accounts.services import lab_get_or_create

    return lab_get_or_create(name="Test lab")


@pytest.fixture
def other_lab(db):
    from webapp.accounts.services import lab_get_or_create

    return lab_get_or_create(name="Other lab")


@pytest.fixture
def make_user(db, lab):
    from webapp.accounts.services import user_create

    def make(role: str, username: str | None = None, user_lab=None) -> User:
        return user_create(username=username or role, password="pw-for-tests-123", role=role, lab=user_lab or lab)

    return make


@pytest.fixture
def api_as(make_user):
    """An API client logged in with the given role."""
    from rest_framework.test import APIClient

    def client(role: str | None, **kwargs) -> APIClient:
        c = APIClient()
        if role is not None:
            c.force_authenticate(make_user(role, **kwargs))
        return c

    return client

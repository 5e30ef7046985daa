from __future__ import annotations

from django.contrib.auth.models import User

from webapp.accounts.models import Lab
from webapp.accounts.roles import ROLES


def user_role(user: User) -> str | None:
    names = set(user.groups.values_list("name", flat=True))
    for role in reversed(ROLES):  # the strongest role wins
        if role in names:
            return role
    return None


def user_lab(user: User) -> Lab | None:
    profile = getattr(user, "profile", None)
    return profile.lab if profile is not None else None

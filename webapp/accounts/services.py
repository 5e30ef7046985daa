from __future__ import annotations

from django.contrib.auth.models import Group, Permission, User
from django.db import transaction

from webapp.accounts.models import Lab, Profile
from webapp.accounts.roles import ROLE_PERMISSIONS, ROLES


def roles_sync() -> None:
    """Create the role groups and give each exactly its permissions."""
    for role, perms in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            found = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found is not None:
                wanted.append(found)
        group.permissions.set(wanted)


@transaction.atomic
def user_create(*, username: str, password: str, role: str, lab: Lab, email: str = "") -> User:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    user = User(username=username, email=email, is_staff=(role == "admin"))
    user.set_password(password)
    user.full_clean()
    user.save()
    user.groups.add(Group.objects.get(name=role))
    Profile.objects.create(user=user, lab=lab)
    return user


def lab_get_or_create(*, name: str) -> Lab:
    lab, _ = Lab.objects.get_or_create(name=name)
    return lab

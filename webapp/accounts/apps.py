from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender, **kwargs):
    from webapp.accounts.services import roles_sync

    roles_sync()


class AccountsConfig(AppConfig):
    name = "webapp.accounts"
    label = "accounts"

    def ready(self) -> None:
        # after every app's migration, since the permissions of the later apps appear last
        post_migrate.connect(_sync_roles, dispatch_uid="leukolab_roles_sync")

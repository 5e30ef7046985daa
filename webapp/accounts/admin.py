from django.contrib import admin

from webapp.accounts.models import Lab, Profile

admin.site.register(Lab)
admin.site.register(Profile)

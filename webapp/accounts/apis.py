from django.contrib.auth import authenticate, login, logout
from django.middleware.csrf import get_token
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.accounts.selectors import user_lab, user_role
from webapp.common.exceptions import ApplicationError


class UserOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField(allow_null=True)
    lab = serializers.CharField(allow_null=True)
    permissions = serializers.ListField(child=serializers.CharField())


def _user_payload(user) -> dict:
    lab = user_lab(user)
    return {
        "id": user.id,
        "username": user.username,
        "role": user_role(user),
        "lab": lab.name if lab else None,
        "permissions": sorted(user.get_all_permissions()),
    }


class CsrfApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(summary="Set the CSRF cookie", responses={204: None})
    @method_decorator(ensure_csrf_cookie)
    def get(self, request):
        get_token(request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LoginApi(APIView):
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"})

    @extend_schema(summary="Log in", request=InputSerializer, responses=UserOutputSerializer)
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, **data.validated_data)
        if user is None:
            raise ApplicationError("Wrong username or password.")
        login(request, user)
        return Response(_user_payload(user))


class LogoutApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(summary="Log out", request=None, responses={204: None})
    def post(self, request):
        logout(request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    @extend_schema(summary="The logged-in user, with role and permissions", responses=UserOutputSerializer)
    def get(self, request):
        return Response(_user_payload(request.user))

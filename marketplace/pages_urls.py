from django.contrib.auth import views as auth_views
from django.urls import path

from marketplace import pages

urlpatterns = [
    path("", pages.home, name="home"),
    path("signup/", pages.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("dashboard/", pages.dashboard, name="dashboard"),
    path("experts/new/", pages.upload, name="expert-upload"),
    path("experts/<id:expert_id>/", pages.expert_detail, name="expert-detail"),
    path("systems/<slug:slug>/", pages.system_detail, name="system-detail"),
]

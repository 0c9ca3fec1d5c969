"""The app's routers: auth (login, logout, who am I), the JSON API, the pages people use, and the admin pages."""

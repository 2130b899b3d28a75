"""django-conversations: chat conversations in Redis, served through Django REST framework."""

__version__ = "0.1.0.dev0"
